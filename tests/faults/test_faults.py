"""Fault injection: kill and stall real processes during runs; every task gets an answer.

Default sizes keep the suite near a minute; `SMARTROUTING_SOAK=1` (`task soak`) runs the long
versions (1,000+ tasks, more faults). Each test prints a `FAULT FIGURES` JSON line (appended to
`$SMARTROUTING_FAULTS_FIGURES` when set): submitted, completed, failed with an error answer,
lost (must be 0), re-dispatched (an upper bound on tasks executed twice), recovery times.
Workers use the SIMULATED engine except in the tritonserver test.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.faults.cluster import SOAK, Figures, SimCluster
from tests.support import scaled, wait_until
from tests.worker.conftest import TEXTS

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900 if SOAK else 240)]

SIM = ("--sim-load-ms", "50", "--sim-load-stddev-ms", "0", "--capacity", "2")


def done_count(cluster: SimCluster) -> int:
    stats = cluster.stats()
    return int(stats["tasks_completed"] + stats["tasks_failed"])


@pytest.mark.slow
def test_worker_sigkill_churn_loses_nothing(cluster: SimCluster) -> None:
    """SIGKILL a random worker every few seconds (restarting it) during an async run: every
    task ends completed or with an error answer; none is lost."""
    tasks, every_s = (1000, 3.0) if SOAK else (300, 1.5)
    cluster.dispatcher_args = ("--max-attempts", "5")
    cluster.start_dispatcher()
    ids_w = [f"w{i}" for i in range(1, 5)]
    for worker_id in ids_w:
        cluster.start_worker(worker_id, *SIM)
    cluster.wait_workers(ids_w)
    figures = Figures(f"worker SIGKILL every {every_s}s, {len(ids_w)} workers")
    rng = random.Random(7)
    started = time.monotonic()
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        ids = cluster.submit(client, tasks, ["a", "b", "c", "d", "e"], run_ms=50)
        while done_count(cluster) < tasks and time.monotonic() - started < scaled(600):
            time.sleep(every_s)  # the pace of the faults, not a synchronisation
            victim = rng.choice(ids_w)
            killed_at = time.monotonic()
            cluster.kill_worker(victim)
            cluster.start_worker(victim, *SIM)
            cluster.wait_workers([victim])
            figures.recovery_s.append(time.monotonic() - killed_at)
            figures.faults_injected += 1
        cluster.settle(client, ids, 120, figures)
        figures.redispatched = cluster.stats()["tasks_redispatched"]
        figures.duplicates_executed = cluster.late_results()
    figures.wall_s = time.monotonic() - started
    figures.report()
    assert figures.lost == 0
    assert figures.faults_injected >= 2
    assert figures.completed + figures.failed_with_error == tasks
    assert figures.completed >= tasks * 0.95, figures


@pytest.mark.slow
def test_dispatcher_sigkill_during_async_run(cluster: SimCluster, tmp_path: Path) -> None:
    """SIGKILL the dispatcher (state DB on) during an async run, restart it: lost = 0."""
    tasks, restarts = (1000, 4) if SOAK else (300, 2)
    cluster.dispatcher_args = ("--state-db", str(tmp_path / "state.db"))
    cluster.start_dispatcher()
    for worker_id in ("w1", "w2", "w3"):
        cluster.start_worker(worker_id, *SIM)
    cluster.wait_workers(["w1", "w2", "w3"])
    figures = Figures(f"dispatcher SIGKILL x{restarts} during async run, state DB")
    started = time.monotonic()
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        ids = cluster.submit(client, tasks, ["a", "b", "c"], run_ms=30)
        for n in range(1, restarts + 1):
            wait_until(lambda: done_count(cluster) >= 20, 60, "progress before the kill")
            figures.duplicates_executed += cluster.late_results()
            cluster.kill_dispatcher()
            killed_at = time.monotonic()
            cluster.start_dispatcher()
            cluster.wait_workers(["w1", "w2", "w3"])
            figures.recovery_s.append(time.monotonic() - killed_at)
            figures.faults_injected = n
            # Every unfinished task is queued again on start (some were running).
            figures.redispatched += cluster.stats()["tasks_submitted"]
        cluster.settle(client, ids, 180, figures)
        figures.duplicates_executed += cluster.late_results()
    figures.wall_s = time.monotonic() - started
    figures.report()
    assert figures.lost == 0
    assert figures.completed == tasks, figures


@pytest.mark.slow
def test_stopped_worker_is_noticed_and_its_task_redispatched(cluster: SimCluster) -> None:
    """A SIGSTOPped worker (TCP open, no close frame, no pongs) is dropped within the ping
    timeout; its running task completes on another worker."""
    cluster.start_dispatcher()
    cluster.start_worker("w1", *SIM)
    cluster.wait_workers(["w1"])
    figures = Figures("worker SIGSTOP (connection silent, no close frame)")
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        body = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 4000}}
        task_id = client.post("/tasks", json=body).json()["task_id"]
        wait_until(
            lambda: client.get(f"/tasks/{task_id}").json()["status"] == "running", 20, "running"
        )
        cluster.start_worker("w2", *SIM)
        cluster.wait_workers(["w2"])
        cluster.workers["w1"].signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            wait_until(lambda: "w1" not in cluster.connected(), 15, "w1 to be dropped")
            figures.recovery_s.append(time.monotonic() - stopped_at)
            ids = [task_id]
            answers = cluster.settle(client, ids, 30, figures)
        finally:
            cluster.workers["w1"].signal(signal.SIGCONT)
        figures.faults_injected = 1
        figures.redispatched = cluster.stats()["tasks_redispatched"]
    figures.report()
    assert figures.lost == 0 and figures.completed == 1 and figures.redispatched == 1
    assert answers[task_id]["worker_id"] == "w2"
    # Ping every 1 s, timeout 2 s: noticed within about 3 s (plus a loaded machine's slack).
    assert figures.recovery_s[0] < scaled(8)
    cluster.wait_workers(["w1"])  # it reconnects once resumed


def test_slow_worker_past_deadline_gets_504_and_nothing_is_lost(cluster: SimCluster) -> None:
    """Tasks that outlive their deadline on a slow worker answer 504; the worker is sent
    Cancel, its slot comes back and the next task completes."""
    cluster.dispatcher_args = ("--cancel-grace-s", "1")
    cluster.start_dispatcher()
    cluster.start_worker("slow", *SIM)
    cluster.wait_workers(["slow"])
    figures = Figures("slow worker past the deadline (sync /run-task)")

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            slow = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 5000}}
            calls = [client.post("/run-task", json={**slow, "timeout_s": 0.5}) for _ in range(3)]
            return list(await asyncio.gather(*calls))

    started = time.monotonic()
    answers = asyncio.run(run())
    figures.wall_s = time.monotonic() - started
    figures.submitted = len(answers)
    figures.failed_with_error = sum(a.status_code == 504 for a in answers)
    figures.lost = sum(a.status_code not in (200, 504) for a in answers)
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        fast = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}
        after = client.post("/run-task", json=fast)
    figures.completed = int(after.status_code == 200)
    figures.report()
    assert [a.json()["error"] for a in answers] == ["deadline_exceeded"] * 3
    assert figures.wall_s < scaled(5)
    assert after.status_code == 200, after.text


def test_garbage_frames_close_only_that_connection(cluster: SimCluster) -> None:
    """A client sending garbage on /worker-listen gets 1008; a real worker keeps serving."""
    cluster.start_dispatcher()
    cluster.start_worker("w1", *SIM)
    cluster.wait_workers(["w1"])

    async def garbage() -> tuple[int | None, str | None]:
        headers = {"Worker-Id": "garbage"}
        async with websockets.connect(cluster.ws_url, additional_headers=headers) as ws:
            await ws.send(b"\xff\x00garbage" * 10)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code, ws.close_reason

    code, _ = asyncio.run(garbage())
    assert code == 1008
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        body = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}
        answer = client.post("/run-task", json=body)
    assert answer.status_code == 200 and answer.json()["worker_id"] == "w1"
    assert cluster.connected() == ["w1"]


@pytest.mark.triton
@pytest.mark.slow
def test_tritonserver_sigkill_during_tasks(
    cluster: SimCluster, model_repository: Path, tmp_path: Path
) -> None:
    """SIGKILL a worker's tritonserver during embed tasks: each task is answered (completed,
    or an error answer), the worker restarts Triton, and tasks complete again."""
    cluster.start_dispatcher()
    worker = cluster.start_worker(
        "tw", "--model-repository", str(model_repository), "--capacity", "1", engine="triton"
    )
    cluster.wait_workers(["tw"], timeout=120)
    body = {"task_type": "embed_texts", "label": "minilm-a", "parameters": {"texts": TEXTS}}
    figures = Figures("tritonserver SIGKILL during embed tasks (real model)")
    with httpx.Client(base_url=cluster.url, timeout=120) as client:
        warm = client.post("/run-task", json=body)
        assert warm.status_code == 200, warm.text
        info = json.loads((tmp_path / "state" / "tw" / "tritonserver.json").read_text())
        ids = [client.post("/tasks", json=body).json()["task_id"] for _ in range(40)]

        def some_done() -> bool:
            found = cluster.statuses(client, ids[:10]).values()
            return sum(b["status"] == "completed" for b in found) >= 2

        wait_until(some_done, 60, "the first tasks to complete", interval=0.02)
        killed_at = time.monotonic()
        os.kill(int(info["pid"]), signal.SIGKILL)
        left = sum(b["status"] != "completed" for b in cluster.statuses(client, ids).values())
        figures.faults_injected = 1
        cluster.settle(client, ids, 120, figures)
        wait_until(
            lambda: client.post("/run-task", json=body).status_code == 200,
            120,
            "a task to complete after the Triton restart",
            interval=1.0,
        )
        figures.recovery_s.append(time.monotonic() - killed_at)
        figures.redispatched = cluster.stats()["tasks_redispatched"]
    figures.report()
    assert figures.lost == 0, worker.log()[-3000:]
    assert figures.completed + figures.failed_with_error == 40
    assert left > 0, "every task had finished before the kill"
    assert worker.alive()
