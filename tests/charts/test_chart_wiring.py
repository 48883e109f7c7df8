"""The rendered manifests fit together: Services select their pods, URLs name real Services
and ports, Secret and claim references resolve, and the settings the components read (docs/
interfaces.md section 2) are set as the values say."""

from __future__ import annotations

import base64
from typing import Any

from dispatcher.config import Config
from tests.charts.conftest import FULL_VALUES
from tests.charts.rendering import NAMESPACE, Rendered, containers, env_of, render, workloads

PREFIX = "demo-smart-routing"
DISPATCHER = f"{PREFIX}-dispatcher"
WORKER = f"{PREFIX}-worker"
UPLOADER = f"{PREFIX}-uploader"
PEERS = f"{PREFIX}-dispatchers"
#: Services named otherwise than the workload they select.
SERVICE_OWNER = {PEERS: DISPATCHER}


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _value(env: dict[str, dict[str, Any]], name: str) -> str:
    assert name in env, f"{name} not set; set: {sorted(env)}"
    return str(env[name]["value"])


def test_every_service_selects_exactly_its_own_workload(default_render: Rendered) -> None:
    """Each Service's selector matches one workload's pod labels, and its own selector too
    (the headless Service workers resolve, `-dispatchers`, selects the dispatchers)."""
    pods = {w["metadata"]["name"]: w for w in workloads(default_render)}
    for service in default_render.all("Service"):
        name = SERVICE_OWNER.get(service["metadata"]["name"], service["metadata"]["name"])
        selector = service["spec"]["selector"]
        matched = [n for n, w in pods.items() if _selects(selector, _pod_labels(w))]
        assert matched == [name], f"Service {service['metadata']['name']} selects {matched}"
        assert _selects(pods[name]["spec"]["selector"]["matchLabels"], _pod_labels(pods[name]))


def test_service_target_ports_are_named_container_ports(default_render: Rendered) -> None:
    """Every Service targetPort is a port name the selected container declares."""
    for service in default_render.all("Service"):
        name = SERVICE_OWNER.get(service["metadata"]["name"], service["metadata"]["name"])
        workload = next(w for w in workloads(default_render) if w["metadata"]["name"] == name)
        declared = {p["name"] for c in containers(workload) for p in c.get("ports", [])}
        for port in service["spec"].get("ports", []):
            assert port["targetPort"] in declared, f"{name}: {port} not in {declared}"


def test_uploader_is_probed_on_health(default_render: Rendered) -> None:
    """The uploader's readiness and liveness probes GET /health on its named port."""
    (container,) = containers(default_render.one("Deployment", UPLOADER))
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_dispatchers_are_replicated_with_health_probes(default_render: Rendered) -> None:
    """Two active dispatchers by default, rolled one new pod at a time without taking one away
    first, probed on /readyz (ready once a worker is connected) and /livez."""
    deployment = default_render.one("Deployment", DISPATCHER)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (container,) = containers(deployment)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    service = default_render.one("Service", DISPATCHER)
    assert service["spec"]["ports"][0]["port"] == 8080
    assert container["ports"][0]["containerPort"] == 8080
    env = env_of(container)
    assert _value(env, "DISPATCHER_PORT") == "8080"
    assert _value(env, "DISPATCHER_POLICY") == "routed"
    assert _value(env, "RANDOM_DISPATCH") == "false"
    assert _value(env, "DISPATCHER_COLD_WAIT_MS") == "500"
    assert _value(env, "DISPATCHER_COLD_WAIT_ADAPTIVE") == "true"


def test_random_dispatch_value_reaches_the_dispatcher(full_render: Rendered) -> None:
    """dispatcher.randomDispatch=true sets RANDOM_DISPATCH=true (the baseline policy)."""
    (container,) = containers(full_render.one("Deployment", DISPATCHER))
    assert _value(env_of(container), "RANDOM_DISPATCH") == "true"
    assert "policy random" in full_render.notes


def test_cold_wait_values_reach_the_dispatcher(full_render: Rendered) -> None:
    """dispatcher.coldWaitMs and coldWaitAdaptive set DISPATCHER_COLD_WAIT_MS and
    DISPATCHER_COLD_WAIT_ADAPTIVE, which the dispatcher reads."""
    (container,) = containers(full_render.one("Deployment", DISPATCHER))
    env = {
        name: str(entry["value"]) for name, entry in env_of(container).items() if "value" in entry
    }
    assert env["DISPATCHER_COLD_WAIT_MS"] == "1000"
    assert env["DISPATCHER_COLD_WAIT_ADAPTIVE"] == "false"
    config = Config.from_env(env)
    assert (config.cold_wait_ms, config.cold_wait_adaptive) == (1000.0, False)


def test_dispatcher_uploader_url_names_the_uploader_service(default_render: Rendered) -> None:
    """DISPATCHER_UPLOADER_URL is http://<uploader Service>.<ns>.svc:<its port>."""
    (container,) = containers(default_render.one("Deployment", DISPATCHER))
    service = default_render.one("Service", UPLOADER)
    port = service["spec"]["ports"][0]["port"]
    expected = f"http://{UPLOADER}.{NAMESPACE}.svc:{port}"
    assert _value(env_of(container), "DISPATCHER_UPLOADER_URL") == expected


def test_without_uploader_the_dispatcher_gets_no_uploader_url() -> None:
    """uploader.enabled=false renders no uploader and no URL (the dispatcher then answers 503)."""
    rendered = render({"uploader": {"enabled": False}})
    assert all(m["metadata"]["name"] != UPLOADER for m in rendered.manifests)
    (container,) = containers(rendered.one("Deployment", DISPATCHER))
    assert "DISPATCHER_UPLOADER_URL" not in env_of(container)


def test_workers_get_a_gpu_their_id_and_every_dispatcher(default_render: Rendered) -> None:
    """Each worker pod: one nvidia.com/gpu, WORKER_ID = pod name, and every dispatcher found by
    DNS through the headless Service (which lists pods before they are ready)."""
    statefulset = default_render.one("StatefulSet", WORKER)
    assert statefulset["spec"]["replicas"] == 2
    assert statefulset["spec"]["serviceName"] == WORKER
    default_render.one("Service", WORKER)  # the governing headless Service exists
    (container,) = containers(statefulset)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = env_of(container)
    assert env["WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The headless Service resolves to the pods themselves: the URL's port is the container's.
    peers = default_render.one("Service", PEERS)
    assert peers["spec"]["clusterIP"] == "None"
    # A dispatcher is ready only once workers are connected: hiding it until then from the
    # Service workers resolve would keep both waiting forever.
    assert peers["spec"]["publishNotReadyAddresses"] is True
    (dispatcher,) = containers(default_render.one("Deployment", DISPATCHER))
    port = dispatcher["ports"][0]["containerPort"]
    assert peers["spec"]["ports"][0]["port"] == port
    expected = f"ws://{PEERS}.{NAMESPACE}.svc:{port}/worker-listen"
    assert _value(env, "WORKER_DISPATCHER_URL") == expected
    assert _value(env, "WORKER_DISPATCHER_DISCOVERY") == "dns"
    assert float(_value(env, "WORKER_DISCOVERY_INTERVAL_S")) > 0
    assert _value(env, "WORKER_CAPACITY") == "2"
    assert container["args"] == ["--engine", "triton", "--triton-model-config", "onnxruntime"]


def test_disruption_budget_evicts_one_worker_at_a_time(default_render: Rendered) -> None:
    """The PodDisruptionBudget covers exactly the worker pods, one eviction at a time."""
    budget = default_render.one("PodDisruptionBudget", WORKER)
    assert budget["spec"]["maxUnavailable"] == 1
    selector = budget["spec"]["selector"]["matchLabels"]
    selected = [
        w["metadata"]["name"]
        for w in workloads(default_render)
        if _selects(selector, _pod_labels(w))
    ]
    assert selected == [WORKER]


def test_worker_grace_period_outlasts_its_own_shutdown_deadline(full_render: Rendered) -> None:
    """Kubernetes waits longer than the worker's drain deadline, so a drain is never cut off."""
    statefulset = full_render.one("StatefulSet", WORKER)
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == FULL_VALUES["workers"]["terminationGracePeriodSeconds"]
    (container,) = containers(statefulset)
    deadline = float(_value(env_of(container), "WORKER_SHUTDOWN_TIMEOUT_S"))
    assert 0 < deadline < grace
    assert _value(env_of(container), "WORKER_CAPACITY") == "3"
    assert _value(env_of(container), "WORKER_SLOTS") == "2"


def test_model_repository_claim_is_shared_read_write_many(default_render: Rendered) -> None:
    """One RWX claim; the uploader mounts it read-write, the workers read-only, same path."""
    (claim,) = default_render.all("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    claim_name = claim["metadata"]["name"]
    _assert_model_mounts(default_render, claim_name)


def test_existing_claim_replaces_the_created_one(full_render: Rendered) -> None:
    """modelRepository.existingClaim: no claim rendered, every pod mounts the named one."""
    assert full_render.all("PersistentVolumeClaim") == []
    _assert_model_mounts(full_render, "shared-models")


def _assert_model_mounts(rendered: Rendered, claim_name: str) -> None:
    for name, read_only in ((WORKER, True), (UPLOADER, False)):
        kind = "StatefulSet" if name == WORKER else "Deployment"
        workload = rendered.one(kind, name)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim_name
        (container,) = containers(workload)
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
        assert mount["mountPath"] == "/models"
        assert mount.get("readOnly", False) is read_only
    (worker,) = containers(rendered.one("StatefulSet", WORKER))
    assert _value(env_of(worker), "MODEL_REPOSITORY") == "/models"
    (uploader,) = containers(rendered.one("Deployment", UPLOADER))
    assert uploader["args"][uploader["args"].index("--repository") + 1] == "/models"


def test_auth_env_comes_from_the_rendered_secret(default_render: Rendered) -> None:
    """Auth is on by default: the env vars reference keys the created Secret really has."""
    secret = default_render.one("Secret", f"{PREFIX}-auth")
    for key, value in secret["data"].items():
        assert len(base64.b64decode(value)) == 32, f"{key} is not a generated 32-char token"
    expected = {
        DISPATCHER: {
            "SMARTROUTING_WORKER_TOKEN",
            "SMARTROUTING_API_KEYS",
            "SMARTROUTING_ADMIN_KEY",
        },
        WORKER: {"SMARTROUTING_WORKER_TOKEN"},
        UPLOADER: {"SMARTROUTING_ADMIN_KEY"},
    }
    for workload in workloads(default_render):
        (container,) = containers(workload)
        refs = {
            name: e["valueFrom"]["secretKeyRef"]
            for name, e in env_of(container).items()
            if name.startswith("SMARTROUTING_")
        }
        assert set(refs) == expected.get(workload["metadata"]["name"], set())
        for ref in refs.values():
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["data"]


def test_given_credentials_are_stored_as_given() -> None:
    """auth.workerToken/apiKeys/adminKey set by the user land in the Secret unchanged."""
    rendered = render({"auth": {"workerToken": "wt", "apiKeys": "k1,k2", "adminKey": "adm"}})
    data = rendered.one("Secret", f"{PREFIX}-auth")["data"]
    decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
    assert decoded == {"worker-token": "wt", "api-keys": "k1,k2", "admin-key": "adm"}


def test_existing_secret_is_referenced_and_none_created(full_render: Rendered) -> None:
    """auth.existingSecret: no Secret rendered; the pods read the named one."""
    assert full_render.all("Secret") == []
    (container,) = containers(full_render.one("StatefulSet", WORKER))
    ref = env_of(container)["SMARTROUTING_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "smart-routing-credentials", "key": "worker-token"}


def test_auth_can_be_switched_off() -> None:
    """auth.enabled=false: no auth Secret and no SMARTROUTING_* variables anywhere."""
    rendered = render({"auth": {"enabled": False}})
    assert [s["metadata"]["name"] for s in rendered.all("Secret")] == [f"{PREFIX}-store"]
    for workload in workloads(rendered):
        (container,) = containers(workload)
        assert not [n for n in env_of(container) if n.startswith("SMARTROUTING_")]


def test_every_pod_runs_as_non_root_without_privilege(full_render: Rendered) -> None:
    """runAsNonRoot with a numeric uid, no privilege escalation, all capabilities dropped."""
    for workload in workloads(full_render):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
    (dispatcher,) = containers(full_render.one("Deployment", DISPATCHER))
    assert dispatcher["securityContext"]["readOnlyRootFilesystem"] is True


def test_images_use_the_registry_and_app_version(full_render: Rendered) -> None:
    """imageRegistry prefixes every image; the tag defaults to the chart's appVersion."""
    images = sorted(c["image"] for w in workloads(full_render) for c in containers(w))
    assert images == [
        f"registry.example.com/ml/smart-routing/{part}:0.1.0"
        for part in ("dispatcher", "uploader", "worker")
    ]


def test_service_monitor_scrapes_the_dispatcher_metrics(full_render: Rendered) -> None:
    """The ServiceMonitor selects the dispatcher Service and scrapes a port it has at /metrics."""
    monitor = full_render.one("ServiceMonitor", DISPATCHER)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    service = full_render.one("Service", DISPATCHER)
    selected = [
        s["metadata"]["name"]
        for s in full_render.all("Service")
        if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert selected == [DISPATCHER]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert int(endpoint["scrapeTimeout"].rstrip("s")) < int(endpoint["interval"].rstrip("s"))


def test_hpa_scales_the_workers_on_queue_depth(full_render: Rendered) -> None:
    """The HPA targets the worker StatefulSet on smartrouting_queue_depth; replicas left to it."""
    hpa = full_render.one("HorizontalPodAutoscaler", WORKER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": WORKER,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "smartrouting_queue_depth"
    assert metric["external"]["metric"]["selector"] == {"matchLabels": {"service": DISPATCHER}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    # A fixed replica count would fight the autoscaler on every upgrade.
    assert "replicas" not in full_render.one("StatefulSet", WORKER)["spec"]


def test_helm_test_pod_checks_every_dispatcher_is_ready(default_render: Rendered) -> None:
    """`helm test` runs a hook pod, non-root, that resolves the headless Service and GETs
    /readyz on each of the dispatcher pods it lists, expecting as many as the replicas."""
    (pod,) = default_render.all("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    script = container["command"][-1]
    (dispatcher,) = containers(default_render.one("Deployment", DISPATCHER))
    port = dispatcher["ports"][0]["containerPort"]
    assert f'getaddrinfo("{PEERS}.{NAMESPACE}.svc", {port}' in script
    assert f"http://{{host}}:{port}/readyz" in script
    assert "/health" not in script
    assert "len(addresses) == 2" in script
    compile(script, "helm-test", "exec")  # the script is valid Python


def test_optional_parts_are_off_by_default(default_render: Rendered) -> None:
    """No ServiceMonitor or HPA unless asked: they need CRDs and adapters not every cluster has."""
    assert default_render.all("ServiceMonitor") == []
    assert default_render.all("HorizontalPodAutoscaler") == []


def test_notes_tell_how_to_reach_upload_and_scale(default_render: Rendered) -> None:
    """NOTES.txt gives the port-forward, upload and scale commands with the real names."""
    notes = default_render.notes
    assert f"port-forward svc/{DISPATCHER} 8080:8080" in notes
    assert "/upload-model" in notes
    assert f"scale statefulset/{WORKER}" in notes
