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
The headless Service workers resolve to every dispatcher pod's address. It publishes pods
that are not ready, since a dispatcher is ready only once workers are connected (/readyz):
hiding it until then would keep every worker away for good. One character shorter prefix
than the other names, for the longer suffix.
*/}}
{{- define "smart-routing.dispatcher.peersName" -}}
{{- printf "%s-dispatchers" (include "smart-routing.fullname" . | trunc 51 | trimSuffix "-") -}}
{{- end -}}
{{/*
The URL workers dial: the headless Service's name resolves to the pods themselves, so the
port is the dispatcher's container port (no Service port mapping in between).
*/}}
{{- define "smart-routing.dispatcher.workerUrl" -}}
{{- printf "ws://%s.%s.svc:%v/worker-listen" (include "smart-routing.dispatcher.peersName" .) .Release.Namespace .Values.dispatcher.containerPort -}}
{{- end -}}
{{- define "smart-routing.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "smart-routing.fullname" .) -}}
{{- end -}}

{{/*
The dispatchers' task store: "postgresql" (in-chart or external, shared by every replica) or
"sqlite" (one dispatcher's own file).
*/}}
{{- define "smart-routing.store.kind" -}}
{{- $external := .Values.store.postgresql.external -}}
{{- if or .Values.postgresql.enabled $external.url $external.existingSecret -}}
postgresql
{{- else -}}
sqlite
{{- end -}}
{{- end -}}

{{/* The Secret holding the store URL (DISPATCHER_STORE_URL) and its key. */}}
{{- define "smart-routing.store.secretName" -}}
{{- default (printf "%s-store" (include "smart-routing.fullname" .)) .Values.store.postgresql.external.existingSecret -}}
{{- end -}}
{{- define "smart-routing.store.secretKey" -}}
{{- if .Values.store.postgresql.external.existingSecret -}}
{{- .Values.store.postgresql.external.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* DISPATCHER_STORE_URL from the store's Secret, as an env list entry. */}}
{{- define "smart-routing.store.env" -}}
- name: DISPATCHER_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "smart-routing.store.secretName" . }}
      key: {{ include "smart-routing.store.secretKey" . }}
{{- end -}}

{{/* The SQLite claim of the one dispatcher: rendered only when the store is SQLite. */}}
{{- define "smart-routing.store.sqliteClaimName" -}}
{{- default (printf "%s-state" (include "smart-routing.fullname" .)) .Values.store.sqlite.persistence.existingClaim -}}
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
{{- $external := .Values.store.postgresql.external -}}
{{- if and .Values.postgresql.enabled (or $external.url $external.existingSecret) -}}
{{- fail "store.postgresql.external is set and postgresql.enabled is true: choose one store (set postgresql.enabled=false to use the external server)" -}}
{{- end -}}
{{- if and $external.url $external.existingSecret -}}
{{- fail "store.postgresql.external: set url or existingSecret, not both" -}}
{{- end -}}
{{- if and (gt (int .Values.dispatcher.replicas) 1) (eq (include "smart-routing.store.kind" .) "sqlite") -}}
{{- fail (printf "dispatcher.replicas=%d needs the shared PostgreSQL task store: set postgresql.enabled=true (in-chart server), store.postgresql.external.url or store.postgresql.external.existingSecret; SQLite (store.sqlite) serves one dispatcher only" (int .Values.dispatcher.replicas)) -}}
{{- end -}}
{{- if lt (int .Values.dispatcher.replicas) 1 -}}
{{- fail "dispatcher.replicas must be >= 1" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
