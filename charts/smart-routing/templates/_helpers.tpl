{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "smart-routing.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The resource-name prefix: "<release>-<chart>", or the release name when it already contains
the chart name. Truncated to leave room for the longest suffix ("-dispatcher", 11 chars) in
a 63-character DNS label.
*/}}
{{- define "smart-routing.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "smart-routing.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "smart-routing.labels" -}}
helm.sh/chart: {{ include "smart-routing.chart" . }}
app.kubernetes.io/name: {{ include "smart-routing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smart-routing
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "dispatcher").
*/}}
{{- define "smart-routing.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smart-routing.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component: common labels plus its selector labels. */}}
{{- define "smart-routing.componentLabels" -}}
{{ include "smart-routing.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Component names. */}}
{{- define "smart-routing.dispatcher.fullname" -}}
{{- printf "%s-dispatcher" (include "smart-routing.fullname" .) -}}
{{- end -}}
{{- define "smart-routing.worker.fullname" -}}
{{- printf "%s-worker" (include "smart-routing.fullname" .) -}}
{{- end -}}
{{- define "smart-routing.uploader.fullname" -}}
{{- printf "%s-uploader" (include "smart-routing.fullname" .) -}}
{{- end -}}

{{- define "smart-routing.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "smart-routing.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "smart-routing.authSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-auth" (include "smart-routing.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "smart-routing.modelClaimName" -}}
{{- if .Values.modelRepository.existingClaim -}}
{{- .Values.modelRepository.existingClaim -}}
{{- else -}}
{{- printf "%s-models" (include "smart-routing.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
An image reference. Call with (dict "root" $ "image" .Values.dispatcher.image).
*/}}
{{- define "smart-routing.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .root.Values.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.imageRegistry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* In-cluster URLs. */}}
{{- define "smart-routing.dispatcher.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "smart-routing.dispatcher.fullname" .) .Release.Namespace .Values.dispatcher.service.port -}}
{{- end -}}
{{/*
The Service workers dial: it publishes the dispatcher while it is not ready, since the
dispatcher is ready only once workers are connected (/readyz).
*/}}
{{- define "smart-routing.dispatcher.listenName" -}}
{{- printf "%s-listen" (include "smart-routing.fullname" .) -}}
{{- end -}}
{{- define "smart-routing.dispatcher.workerUrl" -}}
{{- printf "ws://%s.%s.svc:%v/worker-listen" (include "smart-routing.dispatcher.listenName" .) .Release.Namespace .Values.dispatcher.service.port -}}
{{- end -}}
{{- define "smart-routing.uploader.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "smart-routing.uploader.fullname" .) .Release.Namespace .Values.uploader.port -}}
{{- end -}}

{{/*
Environment variables of the auth Secret. Call with (dict "root" $ "keys" (list "workerToken")).
*/}}
{{- define "smart-routing.authEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.auth.enabled }}
{{- $env := dict "workerToken" "SMARTROUTING_WORKER_TOKEN" "apiKeys" "SMARTROUTING_API_KEYS" "adminKey" "SMARTROUTING_ADMIN_KEY" }}
{{- range .keys }}
- name: {{ get $env . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "smart-routing.authSecretName" $root }}
      key: {{ get $root.Values.auth.secretKeys . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Container securityContext: the shared one plus readOnlyRootFilesystem. */}}
{{- define "smart-routing.containerSecurityContext" -}}
{{- $ctx := deepCopy .root.Values.containerSecurityContext -}}
{{- $_ := set $ctx "readOnlyRootFilesystem" .readOnlyRootFilesystem -}}
{{- toYaml $ctx -}}
{{- end -}}

{{/* Fail the render on values that cannot work. */}}
{{- define "smart-routing.validate" -}}
{{- if not (has .Values.dispatcher.policy (list "routed" "random")) -}}
{{- fail (printf "dispatcher.policy must be routed or random, not %q" .Values.dispatcher.policy) -}}
{{- end -}}
{{- if not (has .Values.workers.engine (list "triton" "onnxruntime" "simulated")) -}}
{{- fail (printf "workers.engine must be triton, onnxruntime or simulated, not %q" .Values.workers.engine) -}}
{{- end -}}
{{- if not (has .Values.workers.tritonModelConfig (list "python" "onnxruntime")) -}}
{{- fail (printf "workers.tritonModelConfig must be python or onnxruntime, not %q" .Values.workers.tritonModelConfig) -}}
{{- end -}}
{{- if lt (int .Values.workers.capacity) 1 -}}
{{- fail "workers.capacity must be >= 1" -}}
{{- end -}}
{{- if lt (int .Values.workers.terminationGracePeriodSeconds) 30 -}}
{{- fail "workers.terminationGracePeriodSeconds must be >= 30: a worker needs time to drain" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
