"""End to end: a real dispatcher process, two real worker processes, the real MiniLM.

Workers run `python -m worker` with the triton engine (each with its own real
tritonserver) or the onnxruntime engine; callers use the dispatcher's HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ChildProcess, ProcessFactory, free_port, wait_until
from tests.worker.conftest import LABELS, TEXTS

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    """A dispatcher and its workers, all child processes of the test."""

    processes: ProcessFactory
    repo: Path
    state: Path
    engine: str
    capacity: int
    port: int = 0
    dispatcher: ChildProcess | None = None
    workers: dict[str, ChildProcess] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_dispatcher(self) -> None:
        self.port = self.port or free_port()
        self.dispatcher = self.processes.dispatcher(self.port, "--log-level", "info")

    def start_worker(self, worker_id: str) -> ChildProcess:
        child = self.processes.worker(
            f"ws://127.0.0.1:{self.port}/worker-listen",
            worker_id,
            "--engine",
            self.engine,
            "--capacity",
            str(self.capacity),
            "--model-repository",
            str(self.repo),
            "--state-dir",
            str(self.state / worker_id),
            "--shutdown-timeout-s",
            "20",
            env={"HF_HUB_OFFLINE": "1", "WORKER_PING_INTERVAL_S": "5"},
        )
        self.workers = {**(self.workers or {}), worker_id: child}
        return child

    def connected(self) -> list[str]:
        try:
            return list(httpx.get(f"{self.url}/workers", timeout=2).json()["workers"])
        except (httpx.HTTPError, ValueError, KeyError):
            return []

    def wait_workers(self, *ids: str, timeout: float = 60) -> None:
        wait_until(lambda: set(ids) <= set(self.connected()), timeout, f"workers {ids}")

    def run_task(self, label: str, texts: list[str], timeout: float = 120) -> httpx.Response:
        body = {
            "task_type": "embed_texts",
            "label": label,
            "parameters_json": json.dumps({"texts": texts}),
        }
        return httpx.post(f"{self.url}/run-task", json=body, timeout=timeout)

    def triton_index(self, worker_id: str) -> dict[str, str]:
        """The worker's tritonserver repository index: label → state."""
        info = json.loads((self.state / worker_id / "tritonserver.json").read_text())
        url = f"http://127.0.0.1:{info['http_port']}/v2/repository/index"
        return {m["name"]: m.get("state", "") for m in httpx.post(url, timeout=5).json()}


@pytest.fixture(params=[pytest.param("triton", marks=pytest.mark.triton), "onnxruntime"])
def cluster(
    request: pytest.FixtureRequest,
    processes: ProcessFactory,
    model_repository: Path,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """A dispatcher and workers w1, w2 of capacity 1 on the engine of the parameter."""
    c = Cluster(processes, model_repository, tmp_path / "state", request.param, capacity=1)
    c.start_dispatcher()
    c.start_worker("w1")
    c.start_worker("w2")
    c.wait_workers("w1", "w2")
    yield c
    for worker_id, child in (c.workers or {}).items():
        assert child.stop() == 0, f"{worker_id} exit code; log:\n{child.log()[-3000:]}"


def _assert_embeddings(answer: httpx.Response, want: Any) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    got = np.array(body["result"]["embeddings"])
    assert body["result"]["dimension"] == 384 and got.shape == want.shape
    assert np.abs(np.linalg.norm(got, axis=1) - 1.0).max() < 1e-5
    assert np.abs(got - want).max() < 1e-4
    return body


def test_embed_texts_routed_to_the_holder_and_capacity_respected(
    cluster: Cluster, reference_embeddings: Any
) -> None:
    """/run-task embed_texts matches SentenceTransformer, repeats hit the holder, and a third
    label on capacity-1 workers evicts one (Triton's index shows it unloaded)."""
    first = _assert_embeddings(cluster.run_task(LABELS[0], TEXTS), reference_embeddings)
    assert first["label_miss"] is True
    holder = first["worker_id"]
    again = _assert_embeddings(cluster.run_task(LABELS[0], TEXTS[:2]), reference_embeddings[:2])
    assert (again["worker_id"], again["label_miss"]) == (holder, False)
    other = _assert_embeddings(cluster.run_task(LABELS[1], TEXTS[:1]), reference_embeddings[:1])
    assert other["label_miss"] is True and other["worker_id"] != holder
    third = _assert_embeddings(cluster.run_task(LABELS[2], TEXTS[:3]), reference_embeddings[:3])
    assert third["label_miss"] is True
    labels = httpx.get(f"{cluster.url}/labels", timeout=5).json()
    assert labels.get(LABELS[2]) == [third["worker_id"]]
    held = [label for label in LABELS if labels.get(label)]
    assert len(held) == 2, labels  # two workers × capacity 1
    if cluster.engine == "triton":
        index = cluster.triton_index(third["worker_id"])
        assert index[LABELS[2]] == "READY"
        evicted = LABELS[0] if third["worker_id"] == holder else LABELS[1]
        assert index[evicted] == "UNAVAILABLE"


@pytest.mark.triton
@pytest.mark.faults
@pytest.mark.parametrize("cluster", ["triton"], indirect=True)
def test_tritonserver_sigkill_then_next_task_succeeds(
    cluster: Cluster, reference_embeddings: Any
) -> None:
    """SIGKILL a worker's tritonserver: it is restarted and the next task succeeds."""
    body = _assert_embeddings(cluster.run_task(LABELS[0], TEXTS[:2]), reference_embeddings[:2])
    victim = body["worker_id"]
    info_path = cluster.state / victim / "tritonserver.json"
    old = json.loads(info_path.read_text())
    os.kill(old["pid"], signal.SIGKILL)
    wait_until(
        lambda: json.loads(info_path.read_text())["pid"] != old["pid"], 60, "tritonserver restart"
    )
    # Two labels on two capacity-1 workers: one of them lands on the restarted tritonserver.
    served = {
        _assert_embeddings(cluster.run_task(label, TEXTS[:2]), reference_embeddings[:2])[
            "worker_id"
        ]
        for label in LABELS[:2]
    }
    assert victim in served
    assert "READY" in cluster.triton_index(victim).values()
    assert "restarting" in (cluster.workers or {})[victim].log()


@pytest.mark.triton
@pytest.mark.faults
@pytest.mark.parametrize("cluster", ["triton"], indirect=True)
def test_worker_sigterm_during_a_task_still_answers(
    cluster: Cluster, reference_embeddings: Any
) -> None:
    """SIGTERM the worker running a task: the caller still gets the right answer and the
    worker exits 0."""
    many = TEXTS * 28  # 252 texts: the run takes long enough to signal during it
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(cluster.run_task(LABELS[0], many)))
    caller.start()

    def busy_worker() -> str | None:
        detail = httpx.get(f"{cluster.url}/workers?detail=true", timeout=2).json()["workers"]
        return next((w["worker_id"] for w in detail if w["in_flight"]), None)

    wait_until(lambda: busy_worker() is not None, 30, "a worker to take the task")
    busy = busy_worker()
    assert busy is not None
    # The task has started on the worker once its tritonserver is loading the label.
    wait_until(
        lambda: cluster.triton_index(busy).get(LABELS[0]) in ("LOADING", "READY"),
        30,
        "the worker to start the task",
    )
    child = (cluster.workers or {})[busy]
    child.signal(signal.SIGTERM)
    caller.join(120)
    want = np.tile(reference_embeddings, (28, 1))
    body = _assert_embeddings(answers[0], want)
    assert body["worker_id"] == busy  # it was running there: finished, not re-run elsewhere
    assert "waiting for 1 running task" in child.log()
    wait_until(lambda: not child.alive(), 30, "the worker to exit")
    assert child.popen.returncode == 0, child.log()[-3000:]


@pytest.mark.triton
@pytest.mark.faults
@pytest.mark.parametrize("cluster", ["triton"], indirect=True)
def test_dispatcher_restart_workers_reconnect_and_serve(
    cluster: Cluster, reference_embeddings: Any
) -> None:
    """Dispatcher stopped and started again on its port: both workers reconnect and serve."""
    _assert_embeddings(cluster.run_task(LABELS[0], TEXTS[:1]), reference_embeddings[:1])
    assert cluster.dispatcher is not None
    # uvicorn re-raises the SIGTERM it handled after its graceful shutdown: -15 is clean.
    assert cluster.dispatcher.stop() in (0, -signal.SIGTERM)
    cluster.start_dispatcher()
    cluster.wait_workers("w1", "w2", timeout=60)
    body = _assert_embeddings(cluster.run_task(LABELS[0], TEXTS[:2]), reference_embeddings[:2])
    # The holder re-announced its label on reconnect, so this is a hit.
    assert body["label_miss"] is False
