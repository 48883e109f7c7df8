"""A worker's probes, metrics and logs: a real `python -m worker` (simulated engine) with
`--http-port` and `--log-format json`, and a real dispatcher it connects to."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.config import Config as DispatcherConfig
from dispatcher.server import DispatcherServer
from smartrouting.processes import ChildProcess
from tests.support import ProcessFactory, free_port, scaled, wait_until
from tests.worker.conftest import LABELS
from worker.engines.simulated import SimulatedEngine
from worker.engines.triton import TritonEngine
from worker.engines.triton_process import TritonProcess, find_binary
from worker.errors import ModelLoadError
from worker.models import ModelManager
from worker.probes import Readiness, not_ready_because
from worker.repository import ModelRepository

pytestmark = pytest.mark.timeout(90)

#: Simulated costs: fixed, so load times in the metrics and logs are known.
SIMULATED = [
    "--engine=simulated",
    "--sim-load-ms=40",
    "--sim-load-stddev-ms=0",
    "--sim-run-ms=2",
    "--sim-run-stddev-ms=0",
]


# --- the readiness rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (Readiness("running", True, 1), None),
        (Readiness("running", True, 3), None),
        (Readiness("starting", False, 0), "worker is starting"),
        (Readiness("draining", True, 1), "worker is draining"),
        (Readiness("running", False, 1), "engine is not up"),
        (Readiness("running", True, 0), "no dispatcher link is open"),
    ],
)
def test_ready_only_running_with_engine_up_and_a_link(now: Readiness, reason: str | None) -> None:
    assert not_ready_because(now) == reason


# --- what the model manager reports ------------------------------------------------------------


class Recorder:
    """A `ModelEvents` listener that keeps every event."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def model_loaded(self, label: str, version: str, load_ms: float, reason: str) -> None:
        self.seen.append(("loaded", label, reason))

    def model_load_failed(self, label: str, load_ms: float, error: Exception) -> None:
        self.seen.append(("load_failed", label, type(error).__name__))

    def model_evicted(self, label: str, for_label: str, hinted: bool) -> None:
        self.seen.append(("evicted", label, for_label, hinted))

    def model_unloaded(self, label: str, reason: str, unload_ms: float) -> None:
        self.seen.append(("unloaded", label, reason))


class BrokenLoads(SimulatedEngine):
    """Labels starting with `broken` fail to load (after the check, as a real engine's do)."""

    async def load(self, label: str) -> None:
        if label.startswith("broken"):
            raise ModelLoadError(f"{label} is broken")
        await super().load(label)


async def test_model_events_carry_their_reasons() -> None:
    """Task and preload loads, hinted and LRU evictions, a failed load, an unload asked for,
    the engine losing its labels, and the shutdown unload: each told once, with its reason."""
    engine = BrokenLoads(load_ms=0, load_stddev_ms=0)
    recorder = Recorder()
    models = ModelManager(engine, capacity=2, events=recorder)
    async with models.use("a"):
        pass
    await models.preload("b")
    async with models.use("c", evict_hint=["b"]):  # the hint names b
        pass
    async with models.use("d"):  # no hint: the least recently used, a
        pass
    with pytest.raises(ModelLoadError):
        async with models.use("broken"):
            pass
    assert await models.unload("d")
    async with models.use("e"):
        pass
    engine._lost(["e"], "tritonserver died")
    async with models.use("f"):
        pass
    await models.unload_all()
    assert recorder.seen == [
        ("loaded", "a", "task"),
        ("loaded", "b", "preload"),
        ("evicted", "b", "c", True),
        ("unloaded", "b", "eviction"),
        ("loaded", "c", "task"),
        ("evicted", "a", "d", False),
        ("unloaded", "a", "eviction"),
        ("loaded", "d", "task"),
        ("evicted", "c", "broken", False),
        ("unloaded", "c", "eviction"),
        ("load_failed", "broken", "ModelLoadError"),
        ("unloaded", "d", "dispatcher"),
        ("loaded", "e", "task"),
        ("unloaded", "e", "engine_lost"),
        ("loaded", "f", "task"),
        ("unloaded", "f", "shutdown"),
    ]


# --- Triton's own metrics and log --------------------------------------------------------------


def test_triton_metrics_only_where_asked(tmp_path: Path) -> None:
    """On a GPU (`metrics`) tritonserver serves its metrics, GPU ones too, on the chosen port;
    on the CPU they are off."""
    cpu = TritonProcess(Path("/bin/tritonserver"), tmp_path / "models", tmp_path / "state")
    assert "--allow-metrics=false" in cpu.command(tmp_path)
    assert not any("gpu-metrics" in arg or "metrics-port" in arg for arg in cpu.command(tmp_path))
    gpu = replace(cpu, metrics=True, metrics_port=8123)
    args = gpu.command(tmp_path)
    assert "--allow-metrics=false" not in args
    assert {"--allow-metrics=true", "--allow-gpu-metrics=true", "--metrics-port=8123"} <= set(args)


@pytest.mark.triton
async def test_triton_serves_its_metrics_when_asked(model_repository: Path, tmp_path: Path) -> None:
    """The flags a GPU worker passes are ones this tritonserver accepts: it serves Prometheus
    metrics on the port it reports (GPU series appear only where a GPU is)."""
    proc = TritonProcess(find_binary(None), model_repository, tmp_path / "state", metrics=True)
    await asyncio.wait_for(proc.start(), scaled(60))
    try:
        assert proc.metrics_port > 0
        recorded = json.loads((tmp_path / "state" / "tritonserver.json").read_text())
        assert recorded["metrics_port"] == proc.metrics_port
        async with httpx.AsyncClient(timeout=5) as client:
            page = await client.get(f"http://127.0.0.1:{proc.metrics_port}/metrics")
        assert page.status_code == 200 and "nv_" in page.text
    finally:
        await proc.stop()


def test_a_child_without_a_log_file_writes_to_the_parents_output() -> None:
    """`--triton-log stdout`: no log file is made; the child's output is the parent's own."""
    import subprocess
    import sys

    script = (
        "import sys; from pathlib import Path; from smartrouting.processes import ChildProcess;"
        "c = ChildProcess.spawn([sys.executable, '-c', 'print(\"from-the-child\")'], None);"
        "print(c.wait(10), repr(c.tail()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    # The child's line reached the parent's stdout; there is no log to read back.
    assert out.stdout.split() == ["from-the-child", "0", "''"]


@pytest.mark.triton
async def test_triton_on_stdout_and_model_memory(
    model_repository: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """`--triton-log stdout`: Triton's output is the worker's own, no log file is written; a
    loaded label's memory is its Python-backend stub's, and no other label has a figure."""
    engine = TritonEngine(
        ModelRepository(model_repository), state_dir=tmp_path / "state", log_to_stdout=True
    )
    await asyncio.wait_for(engine.start(), scaled(60))
    try:
        assert engine.model_memory_bytes() == {}
        await engine.load(LABELS[0])
        memory = engine.model_memory_bytes()
        assert list(memory) == [LABELS[0]]
        assert 20 * 2**20 < memory[LABELS[0]] < 4 * 2**30  # a MiniLM stub: tens to hundreds MiB
        assert engine.restarts() == 0 and engine.healthy()
    finally:
        await engine.stop()
    assert not engine.process.log_path.exists()
    assert "Started HTTPService" in capfd.readouterr().err


# --- a real worker and a real dispatcher -------------------------------------------------------


def start_dispatcher(port: int) -> tuple[DispatcherServer, threading.Thread]:
    """A dispatcher on 127.0.0.1:`port` (the worker already dials it) in a thread."""
    config = DispatcherConfig(host="127.0.0.1", port=port, log_level="warning", task_timeout_s=20)
    server = DispatcherServer(config)
    thread = threading.Thread(target=server.run, daemon=True, name="dispatcher-obs")
    thread.start()
    wait_until(lambda: bool(server.started) or not thread.is_alive(), 15, "dispatcher to start")
    assert server.started, "dispatcher failed to start"
    return server, thread


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def json_lines(child: ChildProcess) -> list[dict[str, Any]]:
    """The worker's log, every line parsed (a line that is not JSON fails the test)."""
    text = child.read_log()
    return [json.loads(line) for line in text.splitlines() if line and not line.startswith("=== ")]


def events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == event]


@pytest.fixture
def dispatcher_port() -> Iterator[int]:
    yield free_port()


def test_probes_metrics_and_json_logs_of_a_real_worker(
    processes: ProcessFactory, dispatcher_port: int
) -> None:
    """/readyz 503 until a dispatcher link is open, then 200; after a miss, a hit, a failure
    and a miss that evicts, /metrics counts each exactly and the log has one parsed JSON line
    per load, eviction, unload and failure, with its fields."""
    http_port = free_port()
    worker = processes.worker(
        f"ws://127.0.0.1:{dispatcher_port}/worker-listen",
        "obs-w1",
        *SIMULATED,
        "--capacity=1",
        f"--http-port={http_port}",
        "--http-host=127.0.0.1",
        "--log-format=json",
        "--reconnect-max-backoff-s=0.2",
    )
    probes = f"http://127.0.0.1:{http_port}"

    def get(path: str) -> httpx.Response | None:
        try:
            return httpx.get(probes + path, timeout=2.0)
        except httpx.HTTPError:
            return None

    wait_until(lambda: get("/livez") is not None, 30, "the worker's /livez")
    assert get("/livez").status_code == 200  # type: ignore[union-attr]
    not_ready = get("/readyz")
    assert not_ready is not None and not_ready.status_code == 503
    assert not_ready.headers["Retry-After"] == "1"
    assert not_ready.json()["detail"] in ("no dispatcher link is open", "worker is starting")
    assert get("/nowhere").status_code == 404  # type: ignore[union-attr]

    server, thread = start_dispatcher(dispatcher_port)
    try:
        wait_until(
            lambda: (r := get("/readyz")) is not None and r.status_code == 200,
            20,
            "the worker to be ready",
        )
        assert get("/readyz").json() == {  # type: ignore[union-attr]
            "status": "ready",
            "state": "running",
            "engine_up": True,
            "links_open": 1,
            "detail": None,
        }
        base = f"http://127.0.0.1:{dispatcher_port}"
        statuses = []
        with httpx.Client(base_url=base, timeout=scaled(30)) as client:
            for label in ("obs-a", "obs-a", "missing-x", "obs-b"):
                body = {"task_type": "sample_task", "label": label, "parameters_json": "{}"}
                statuses.append(client.post("/run-task", json=body).status_code)
        assert statuses == [200, 200, 404, 200]
        scrape_text = get("/metrics").text  # type: ignore[union-attr]
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(scaled(20)) == 0
        server.stop()
        thread.join(scaled(20))

    assert "_created" not in scrape_text
    scrape = samples(scrape_text)
    for outcome, count in (("miss", 2), ("hit", 1), ("model_not_found", 1)):
        assert value(scrape, "smartrouting_worker_tasks_total", outcome=outcome) == count, outcome
    assert value(scrape, "smartrouting_worker_task_run_seconds_count") == 3
    assert value(scrape, "smartrouting_worker_model_loads_total", reason="task") == 2
    assert value(scrape, "smartrouting_worker_model_load_seconds_count") == 2
    assert value(scrape, "smartrouting_worker_model_load_seconds_sum") == pytest.approx(
        0.08, abs=0.04
    )
    assert value(scrape, "smartrouting_worker_model_evictions_total", reason="hint") == 1
    assert value(scrape, "smartrouting_worker_model_unloads_total", reason="eviction") == 1
    assert (
        value(scrape, "smartrouting_worker_model_load_failures_total", code="model_not_found")
        is None
    )
    assert value(scrape, "smartrouting_worker_labels_held", state="ready") == 1
    assert value(scrape, "smartrouting_worker_label_state", label="obs-b", state="ready") == 1
    assert value(scrape, "smartrouting_worker_label_state", label="obs-a", state="ready") is None
    assert value(scrape, "smartrouting_worker_label_capacity") == 1
    assert value(scrape, "smartrouting_worker_task_slots") == 1
    assert value(scrape, "smartrouting_worker_task_slots_in_use") == 0
    assert value(scrape, "smartrouting_worker_dispatcher_links_open") == 1
    assert value(scrape, "smartrouting_worker_engine_up") == 1
    assert value(scrape, "smartrouting_worker_engine_restarts_total") == 0
    info = {"worker": "obs-w1", "engine": "simulated", "device": "simulated"}
    assert value(scrape, "smartrouting_worker_info", **info) == 1
    assert value(scrape, "process_resident_memory_bytes") is not None

    lines = json_lines(worker)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    loaded = events(lines, "model_loaded")
    assert [(e["label"], e["reason"], e["version"]) for e in loaded] == [
        ("obs-a", "task", ""),
        ("obs-b", "task", ""),
    ]
    assert all(e["level"] == "info" and e["duration_ms"] >= 39 for e in loaded)
    (evicted,) = events(lines, "model_evicted")
    assert (evicted["label"], evicted["for_label"], evicted["reason"]) == ("obs-a", "obs-b", "hint")
    unloaded = events(lines, "model_unloaded")
    assert [(e["label"], e["reason"]) for e in unloaded] == [
        ("obs-a", "eviction"),
        ("obs-b", "shutdown"),
    ]
    assert all(e["duration_ms"] >= 0 for e in unloaded)
    (failed,) = events(lines, "task_failed")
    assert (failed["label"], failed["code"], failed["level"]) == (
        "missing-x",
        "MODEL_NOT_FOUND",
        "warning",
    )
    assert failed["task_id"] and failed["attempt"] == 1
    (link,) = events(lines, "link_up")
    assert link["url"].endswith(f":{dispatcher_port}/worker-listen")
    (started,) = events(lines, "probes_started")
    assert started["port"] == http_port


def test_a_taken_http_port_is_a_clean_error(processes: ProcessFactory) -> None:
    """The worker says which address it could not have and exits 2, without a traceback."""
    with __import__("socket").create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        worker = processes.worker(
            "ws://127.0.0.1:9/worker-listen",
            "obs-w2",
            *SIMULATED,
            f"--http-port={port}",
            "--http-host=127.0.0.1",
            "--log-format=json",
        )
        assert worker.wait(scaled(30)) == 2
    (error,) = [line for line in json_lines(worker) if line["level"] == "error"]
    assert f"127.0.0.1:{port}" in error["message"] and "Traceback" not in worker.read_log()
