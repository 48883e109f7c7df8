"""Asynchronous tasks survive a dispatcher restart through the SQLite state database."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dispatcher.store import TaskStore
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.faults.cluster import Figures, SimCluster
from tests.support import ProcessFactory, wait_until

pytestmark = pytest.mark.timeout(120)

BODY = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}


def test_store_round_trip(tmp_path: Path) -> None:
    """Rows written, finished and expired read back as written; the file is in WAL mode."""
    store = TaskStore(tmp_path / "sub" / "state.db")
    store.add("t1", "sample_task", "a", "{}", 123)
    store.add("t2", "sample_task", "b", '{"x": 1}', 456)
    store.finish("t1", "completed", {"completed": {"result": {"ok": True}}})
    rows = {row.task_id: row for row in store.load()}
    assert rows["t1"].finished and rows["t1"].answer == {"completed": {"result": {"ok": True}}}
    assert not rows["t2"].finished and rows["t2"].parameters_json == '{"x": 1}'
    assert store.expire(ttl_s=60) == 0
    assert store.expire(ttl_s=0, now_unix=time.time() + 1) == 1
    assert [row.task_id for row in store.load()] == ["t2"]
    store.close()
    mode = sqlite3.connect(tmp_path / "sub" / "state.db").execute("PRAGMA journal_mode")
    assert mode.fetchone()[0] == "wal"


async def test_graceful_restart_keeps_queued_and_finished_tasks(
    dispatcher_factory: Callable[..., RunningDispatcher], tmp_path: Path
) -> None:
    """Queued async tasks run after a restart; finished ones are still answered; /run-task
    tasks are not stored."""
    db = str(tmp_path / "state.db")
    first = dispatcher_factory(state_db=db, task_timeout_s=60.0)
    worker = await FakeWorker(first.ws_url, "w1", labels=["a"]).start()
    async with httpx.AsyncClient(base_url=first.base_url, timeout=15) as client:
        done = (await client.post("/run-task", json={**BODY, "task_id": "sync-1"})).json()
        assert done["status"] == "completed"
        early = (await client.post("/tasks", json={**BODY, "task_id": "early"})).json()
        await worker.wait_for_tasks(2)
        await worker.close()
        wait_until(lambda: not first.core.registry.workers, 10, "the worker to leave")
        queued = [(await client.post("/tasks", json=BODY)).json()["task_id"] for _ in range(5)]
    first.stop()
    second = dispatcher_factory(state_db=db, task_timeout_s=60.0)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=15) as client:
        kept = (await client.get(f"/tasks/{early['task_id']}")).json()
        assert kept["status"] == "completed" and kept["result"]["label"] == "a"
        assert (await client.get("/tasks/sync-1")).status_code == 404
        for task_id in queued:
            assert (await client.get(f"/tasks/{task_id}")).json()["status"] == "queued"
        worker = await FakeWorker(second.ws_url, "w2", labels=["a"]).start()
        try:
            await worker.wait_for_tasks(5)
            for task_id in queued:
                url = f"/tasks/{task_id}"
                for _ in range(500):  # each GET yields to the server
                    if (await client.get(url)).json()["status"] == "completed":
                        break
                else:
                    pytest.fail(f"{task_id} did not complete after the restart")
        finally:
            await worker.close()


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_async_task(processes: ProcessFactory, tmp_path: Path) -> None:
    """kill -9 of the dispatcher during 200 async tasks, restart on the same port: every task
    id ends completed (lost = 0) and results from before the kill are still there."""
    cluster = SimCluster(processes, tmp_path, ("--state-db", str(tmp_path / "state.db")))
    cluster.start_dispatcher()
    sim = ("--sim-load-ms", "50", "--sim-load-stddev-ms", "0", "--capacity", "2")
    for worker_id in ("w1", "w2"):
        cluster.start_worker(worker_id, *sim)
    cluster.wait_workers(["w1", "w2"])
    figures = Figures("dispatcher SIGKILL mid-run, restart (async tasks, state DB)")
    started = time.monotonic()
    with httpx.Client(base_url=cluster.url, timeout=10) as client:
        ids = cluster.submit(client, 200, ["a", "b", "c"], run_ms=20)
        wait_until(lambda: cluster.stats()["tasks_completed"] >= 40, 60, "40 tasks done")
        before = {
            t: b for t, b in cluster.statuses(client, ids).items() if b["status"] == "completed"
        }
        cluster.kill_dispatcher()
        killed_at = time.monotonic()
        cluster.start_dispatcher()
        figures.recovery_s.append(cluster.wait_workers(["w1", "w2"]) + time.monotonic() - killed_at)
        figures.faults_injected = 1
        answers = cluster.settle(client, ids, 120, figures)
        figures.redispatched = cluster.stats()["tasks_submitted"]  # queued again on start
        figures.duplicates_executed = cluster.late_results()
    figures.wall_s = time.monotonic() - started
    figures.report()
    assert figures.lost == 0, f"lost tasks; dispatcher log:\n{cluster.dispatcher.log()[-3000:]}"
    assert figures.completed == 200, figures
    assert 40 <= len(before) < 200
    for task_id, body in before.items():
        assert answers[task_id]["result"] == body["result"]


async def test_unwritable_state_db_refuses_with_503_and_accepts_nothing(
    dispatcher_factory: Callable[..., RunningDispatcher], tmp_path: Path
) -> None:
    """When the state database cannot be written, POST /tasks answers 503 store_failed and
    the task does not exist (not accepted, so not silently lost)."""
    d = dispatcher_factory(state_db=str(tmp_path / "state.db"))
    d.dispatcher.store._db.close()  # every later write fails as on a broken disk
    async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
        answer = await client.post("/tasks", json={**BODY, "task_id": "doomed"})
        assert (answer.status_code, answer.json()["error"]) == (503, "store_failed")
        assert (await client.get("/tasks/doomed")).status_code == 404
        assert (await client.get("/health")).status_code == 200
