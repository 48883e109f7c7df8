"""Several dispatchers in the chart (docs/kubernetes.md, "Several dispatchers"): the
disruption budget, anti-affinity, the task store (in-chart PostgreSQL, an external one, or
SQLite for one dispatcher), the workers' probes and metrics, and `helm test` run for real
against a live dispatcher."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from dispatcher.config import Config
from tests.charts.conftest import FULL_VALUES
from tests.charts.rendering import (
    CHART_DIR,
    NAMESPACE,
    Rendered,
    containers,
    env_of,
    render,
    workloads,
)
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.support import run_async

PREFIX = "demo-smart-routing"
DISPATCHER = f"{PREFIX}-dispatcher"
PEERS = f"{PREFIX}-dispatchers"
WORKER = f"{PREFIX}-worker"
POSTGRESQL = f"{PREFIX}-postgresql"
STORE_SECRET = f"{PREFIX}-store"
SQLITE_VALUES: dict[str, Any] = {"dispatcher": {"replicas": 1}, "postgresql": {"enabled": False}}


def _dispatcher(rendered: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = rendered.one("Deployment", DISPATCHER)
    (container,) = containers(deployment)
    return deployment, container


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _secret_data(rendered: Rendered, name: str) -> dict[str, str]:
    data = rendered.one("Secret", name)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


@pytest.fixture(scope="module")
def sqlite_render() -> Rendered:
    """One dispatcher keeping its asynchronous tasks in SQLite."""
    return render(SQLITE_VALUES)


# --- Replicas, disruption budget, spreading ----------------------------------------------


def test_dispatcher_disruption_budget_keeps_one_serving(default_render: Rendered) -> None:
    """With two dispatchers, a PodDisruptionBudget keeps one up and covers exactly them."""
    assert _dispatcher(default_render)[0]["spec"]["replicas"] >= 2
    budget = default_render.one("PodDisruptionBudget", DISPATCHER)
    assert budget["spec"]["minAvailable"] == 1
    selector = budget["spec"]["selector"]["matchLabels"]
    selected = [
        w["metadata"]["name"]
        for w in workloads(default_render)
        if _selects(selector, w["spec"]["template"]["metadata"]["labels"])
    ]
    assert selected == [DISPATCHER]


def test_one_dispatcher_gets_no_budget_that_would_block_drains(sqlite_render: Rendered) -> None:
    """minAvailable 1 of 1 would forbid every eviction: none is rendered for one replica."""
    assert [b["metadata"]["name"] for b in sqlite_render.all("PodDisruptionBudget")] == [WORKER]


def test_dispatchers_prefer_different_nodes(default_render: Rendered) -> None:
    """A preferred pod anti-affinity on the node name, against the dispatcher pods only."""
    deployment, _ = _dispatcher(default_render)
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti


def test_required_anti_affinity_and_an_own_affinity(full_render: Rendered) -> None:
    """podAntiAffinity=required forbids two on a node; `affinity` given replaces the default."""
    deployment, _ = _dispatcher(full_render)
    assert deployment["spec"]["replicas"] == 3
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    own: dict[str, Any] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    deployment, _ = _dispatcher(render({"dispatcher": {"affinity": own}}))
    assert deployment["spec"]["template"]["spec"]["affinity"] == own
    deployment, _ = _dispatcher(render({"dispatcher": {"podAntiAffinity": "none"}}))
    assert "affinity" not in deployment["spec"]["template"]["spec"]


def test_callers_service_is_unchanged_and_workers_get_a_headless_one(
    default_render: Rendered,
) -> None:
    """Callers keep one ClusterIP Service (ready pods only); workers resolve a headless one."""
    callers = default_render.one("Service", DISPATCHER)
    assert callers["spec"]["type"] == "ClusterIP"
    assert "publishNotReadyAddresses" not in callers["spec"]
    peers = default_render.one("Service", PEERS)
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["selector"] == callers["spec"]["selector"]


# --- The task store -------------------------------------------------------------------


def test_default_store_is_the_in_chart_postgresql(default_render: Rendered) -> None:
    """The dispatchers read DISPATCHER_STORE_URL from the store Secret; its URL names the
    in-chart server's Service with the password that server is initialised with."""
    _, container = _dispatcher(default_render)
    env = env_of(container)
    assert env["DISPATCHER_STORE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": STORE_SECRET, "key": "url"}
    }
    assert "DISPATCHER_STATE_DB" not in env
    assert env["DISPATCHER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["DISPATCHER_LEASE_S"]["value"] == "15"
    data = _secret_data(default_render, STORE_SECRET)
    url = urllib.parse.urlsplit(data["url"])
    assert (url.scheme, url.username, url.path) == ("postgresql", "smartrouting", "/smartrouting")
    assert len(data["password"]) == 32 and url.password == data["password"]
    service = default_render.one("Service", POSTGRESQL)
    assert url.hostname == f"{POSTGRESQL}.{NAMESPACE}.svc"
    assert url.port == service["spec"]["ports"][0]["port"] == 5432
    server = default_render.one("StatefulSet", POSTGRESQL)
    (postgres,) = containers(server)
    assert postgres["image"] == "docker.io/library/postgres:17"
    assert env_of(postgres)["POSTGRES_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": STORE_SECRET, "key": "password"}
    }
    (claim,) = server["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The dispatchers wait for the server rather than crash-looping until it is up.
    (wait,) = _dispatcher(default_render)[0]["spec"]["template"]["spec"]["initContainers"]
    assert env_of(wait)["DISPATCHER_STORE_URL"] == env["DISPATCHER_STORE_URL"]
    compile(wait["command"][-1], "wait-for-store", "exec")


@pytest.mark.timeout(30)
def test_wait_for_store_returns_once_the_server_listens(default_render: Rendered) -> None:
    """The init container's script exits 0 as soon as the URL's host:port accepts a
    connection, and does not wait on URLs naming several hosts (libpq's failover form)."""
    (wait,) = _dispatcher(default_render)[0]["spec"]["template"]["spec"]["initContainers"]
    script = wait["command"][-1]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for url in (f"postgresql://u:p@127.0.0.1:{port}/db", "postgresql://u@h1:1,h2:2/db"):
            done = subprocess.run(
                [sys.executable, "-c", script],
                env={"DISPATCHER_STORE_URL": url},
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert done.returncode == 0, (url, done.stdout, done.stderr)
            assert "waiting for" not in done.stdout


def test_given_password_is_escaped_in_the_url() -> None:
    """A password with URL-special characters reaches the server as given and the URL
    decodes back to it."""
    password = "p@ss w/rd:+%"
    rendered = render({"postgresql": {"auth": {"password": password}}})
    data = _secret_data(rendered, STORE_SECRET)
    assert data["password"] == password
    assert urllib.parse.unquote(urllib.parse.urlsplit(data["url"]).password or "") == password


def test_external_url_is_kept_in_a_secret_and_no_server_is_deployed() -> None:
    """store.postgresql.external.url: the URL lands in the store Secret as given; no
    in-chart server, no password."""
    url = "postgresql://sr:secret@db.example.com:5432/sr?sslmode=require"
    rendered = render(
        {"postgresql": {"enabled": False}, "store": {"postgresql": {"external": {"url": url}}}}
    )
    assert _secret_data(rendered, STORE_SECRET) == {"url": url}
    assert rendered.all("StatefulSet") == [rendered.one("StatefulSet", WORKER)]
    assert all(m["metadata"]["name"] != POSTGRESQL for m in rendered.manifests)


def test_existing_store_secret_is_referenced(full_render: Rendered) -> None:
    """store.postgresql.external.existingSecret: the dispatchers read its key; nothing made."""
    _, container = _dispatcher(full_render)
    assert env_of(container)["DISPATCHER_STORE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "smart-routing-store-url", "key": "dsn"}
    }
    assert full_render.all("Secret") == []


def test_one_dispatcher_on_sqlite_keeps_its_file_on_a_claim(sqlite_render: Rendered) -> None:
    """One replica without PostgreSQL: the SQLite file on a ReadWriteOnce claim of its own,
    replaced (not rolled) so one pod writes it; no server, no store Secret, no URL."""
    deployment, container = _dispatcher(sqlite_render)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = env_of(container)
    assert env["DISPATCHER_STATE_DB"]["value"] == "/var/lib/smartrouting/tasks.db"
    assert "DISPATCHER_STORE_URL" not in env
    claim = sqlite_render.one("PersistentVolumeClaim", f"{PREFIX}-state")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": f"{PREFIX}-state"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == "/var/lib/smartrouting"
    assert "initContainers" not in deployment["spec"]["template"]["spec"]
    assert not [m for m in sqlite_render.manifests if "postgresql" in m["metadata"]["name"]]
    assert [s["metadata"]["name"] for s in sqlite_render.all("Secret")] == [f"{PREFIX}-auth"]
    for manifest in sqlite_render.manifests:
        kubernetes_validate.validate(manifest, "1.25.0", strict=True)


def test_sqlite_without_persistence_uses_an_empty_dir() -> None:
    """store.sqlite.persistence.enabled=false: the file lives on an emptyDir, no claim."""
    values = {**SQLITE_VALUES, "store": {"sqlite": {"persistence": {"enabled": False}}}}
    rendered = render(values)
    assert [c["metadata"]["name"] for c in rendered.all("PersistentVolumeClaim")] == [
        f"{PREFIX}-models"
    ]
    deployment, _ = _dispatcher(rendered)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}


NO_STORE = {"dispatcher": {"replicas": 2}, "postgresql": {"enabled": False}}
BAD_STORES = [
    (NO_STORE, "dispatcher.replicas=2 needs the shared PostgreSQL task store"),
    (
        {"store": {"postgresql": {"external": {"url": "postgresql://db/sr"}}}},
        "choose one store (set postgresql.enabled=false",
    ),
    (
        {
            "postgresql": {"enabled": False},
            "store": {
                "postgresql": {"external": {"url": "postgresql://db/sr", "existingSecret": "s"}}
            },
        },
        "set url or existingSecret, not both",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_STORES)
def test_a_store_that_cannot_work_fails_the_render(values: dict, message: str) -> None:
    """Several dispatchers without PostgreSQL, or two stores at once, stop the install with a
    message naming the values to set."""
    with pytest.raises(helm_python.HelmRenderError, match=message.replace("(", r"\(")):
        render(values)


@pytest.mark.parametrize(("values", "message"), BAD_STORES[:1])
def test_store_guard_holds_without_the_schema(tmp_path: Path, values: dict, message: str) -> None:
    """With `--skip-schema-validation`, the template still refuses several SQLite dispatchers."""
    copy = tmp_path / "smart-routing"
    shutil.copytree(CHART_DIR, copy)
    (copy / "values.schema.json").unlink()
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values, chart_dir=copy)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dispatcher": {"replicas": 0}}, "/dispatcher/replicas"),
        ({"dispatcher": {"podAntiAffinity": "sometimes"}}, "/dispatcher/podAntiAffinity"),
        ({"store": {"postgresql": {"external": {"url": "mysql://db"}}}}, "/store/postgresql"),
        ({"store": {"sqlite": {"path": "tasks.db"}}}, "/store/sqlite/path"),
        ({"postgresql": {"auth": {"username": "Robert'); DROP"}}}, "/postgresql/auth/username"),
        ({"workers": {"tritonLog": "syslog"}}, "/workers/tritonLog"),
        ({"uploader": {"logFormat": "xml"}}, "/uploader/logFormat"),
    ],
)
def test_schema_rejects_bad_store_and_log_values(values: dict, message: str) -> None:
    """values.schema.json stops the new values' wrong types and choices."""
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(values)


# --- Workers: probes, port, logs, metrics ------------------------------------------------


def test_workers_serve_probes_and_metrics_on_their_http_port(default_render: Rendered) -> None:
    """WORKER_HTTP_PORT is the declared `http` port, probed on /livez and /readyz; the
    headless Service exposes it; logs are JSON and Triton's go to stdout."""
    statefulset = default_render.one("StatefulSet", WORKER)
    (container,) = containers(statefulset)
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8090, "protocol": "TCP"}
    env = env_of(container)
    assert env["WORKER_HTTP_PORT"]["value"] == "8090"
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env["WORKER_LOG_FORMAT"]["value"] == "json"
    assert env["WORKER_TRITON_LOG"]["value"] == "stdout"
    service = default_render.one("Service", WORKER)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    (uploader,) = containers(default_render.one("Deployment", f"{PREFIX}-uploader"))
    assert env_of(uploader)["UPLOADER_LOG_FORMAT"]["value"] == "json"


def test_service_monitors_scrape_dispatchers_and_workers(full_render: Rendered) -> None:
    """Beside the dispatchers' ServiceMonitor, one selects only the workers' Service and
    scrapes /metrics on a port it has."""
    monitor = full_render.one("ServiceMonitor", WORKER)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in full_render.all("Service")
        if _selects(selector, s["metadata"]["labels"])
    ]
    assert selected == [WORKER]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    ports = {p["name"] for p in full_render.one("Service", WORKER)["spec"]["ports"]}
    assert endpoint["port"] in ports
    assert {m["metadata"]["name"] for m in full_render.all("ServiceMonitor")} == {
        DISPATCHER,
        WORKER,
    }


# --- helm test, run for real ------------------------------------------------------------


@pytest.fixture(scope="module")
def live_dispatcher() -> Iterator[RunningDispatcher]:
    """A real dispatcher that is ready only with one worker connected."""
    running = start_dispatcher(Config(ready_min_workers=1))
    try:
        yield running
    finally:
        running.stop()


def _run_helm_test(rendered: Rendered, resolves_to: str) -> subprocess.CompletedProcess[str]:
    """Run the `helm test` pod's script with the headless Service's name resolving to
    `resolves_to`, as the pod would in the cluster (addresses pass through as they are)."""
    (pod,) = rendered.all("Pod")
    (container,) = pod["spec"]["containers"]
    script = container["command"][-1]
    wrapper = (
        "import socket\n"
        "_real = socket.getaddrinfo\n"
        "def _resolve(host, port, *args, **kwargs):\n"
        f"    if host == {PEERS + '.' + NAMESPACE + '.svc'!r}:\n"
        f"        host = {resolves_to!r}\n"
        "    return _real(host, port, *args, **kwargs)\n"
        "socket.getaddrinfo = _resolve\n"
    )
    return subprocess.run(
        [sys.executable, "-c", wrapper + script], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(60)
def test_helm_test_passes_only_when_every_dispatcher_is_ready(
    live_dispatcher: RunningDispatcher,
) -> None:
    """The `helm test` script against a live dispatcher: it fails while no worker is
    connected (/readyz 503), passes once one is, and fails when the headless Service lists
    fewer dispatchers than the replicas."""
    port = live_dispatcher.port
    one = render({**SQLITE_VALUES, "dispatcher": {"replicas": 1, "containerPort": port}})
    not_ready = _run_helm_test(one, "127.0.0.1")
    assert not_ready.returncode != 0 and "503" in not_ready.stderr, not_ready.stderr

    worker = FakeWorker(live_dispatcher.ws_url, "w1", labels=["a"])

    async def with_worker() -> tuple[subprocess.CompletedProcess[str], ...]:
        await worker.start()
        try:
            # Off the event loop, which keeps the worker's link alive meanwhile.
            ready = await asyncio.to_thread(_run_helm_test, one, "127.0.0.1")
            two = render({"dispatcher": {"replicas": 2, "containerPort": port}})
            missing = await asyncio.to_thread(_run_helm_test, two, "127.0.0.1")
            return ready, missing
        finally:
            await worker.close()

    ready, missing = run_async(with_worker())
    assert ready.returncode == 0, ready.stderr
    assert "dispatcher 127.0.0.1 ready with 1 workers" in ready.stdout
    assert missing.returncode != 0 and "expected 2 dispatchers" in missing.stderr


def test_full_values_still_validate(full_render: Rendered) -> None:
    """FULL_VALUES takes the bring-your-own store (guards the fixtures the tests above use)."""
    assert FULL_VALUES["postgresql"] == {"enabled": False}
    assert full_render.all("StatefulSet") == [full_render.one("StatefulSet", WORKER)]
