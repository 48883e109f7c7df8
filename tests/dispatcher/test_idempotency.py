"""Task ids make retries safe: a known id is answered, not run again; cancel; held restores."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from dispatcher.errors import TaskCancelled, TaskIdConflict
from dispatcher.persistence import Persistence
from dispatcher.recovery import HOLD_GRACE_S, REJOIN_SETTLE_S, plan_recovery
from dispatcher.store import TaskStore
from dispatcher.tasks import TaskRecord, TaskState
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.dispatcher.test_core import Harness, harness

pytestmark = pytest.mark.timeout(60)

BODY = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}


@pytest.fixture
async def client(dispatcher: RunningDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as c:
        yield c


# --- idempotent ids over HTTP ----------------------------------------------------------------


async def test_a_completed_id_returns_the_stored_answer_without_running_again(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """/run-task and /tasks with a completed id answer the kept result; the worker ran once."""
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a"]).start()
    try:
        first = await client.post("/run-task", json={**BODY, "task_id": "same"})
        # The same parameters written differently are still the same request.
        raw = {**BODY, "task_id": "same", "parameters": None, "parameters_json": '{"run_ms":1}'}
        del raw["parameters"]
        again = await client.post("/run-task", json=raw)
        queued = await client.post("/tasks", json={**BODY, "task_id": "same"})
    finally:
        await worker.close()
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert queued.status_code == 202 and queued.json()["status"] == "completed"
    assert len(worker.received) == 1


async def test_the_same_id_with_another_body_is_409(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """Live or completed, an id used with a different body is refused 409 task_id_conflict."""
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a", "b"]).start()
    try:
        assert (await client.post("/run-task", json={**BODY, "task_id": "t1"})).status_code == 200
        for other in ({**BODY, "label": "b"}, {**BODY, "parameters": {"run_ms": 2}}):
            refused = await client.post("/run-task", json={**other, "task_id": "t1"})
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"] == TaskIdConflict.code
        worker.hold()
        await client.post("/tasks", json={**BODY, "task_id": "live"})
        await worker.wait_for_tasks(2)
        refused = await client.post("/tasks", json={**BODY, "label": "b", "task_id": "live"})
        assert (refused.status_code, refused.json()["error"]) == (409, "task_id_conflict")
        worker.release()
    finally:
        await worker.close()
    assert len(worker.received) == 2


async def test_a_retry_while_running_waits_for_the_same_run(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """Two /run-task calls with one id (a retry racing the first) share one execution."""
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a"]).start()
    worker.hold()
    try:
        first = asyncio.create_task(client.post("/run-task", json={**BODY, "task_id": "r"}))
        await worker.wait_for_tasks(1)
        second = asyncio.create_task(client.post("/run-task", json={**BODY, "task_id": "r"}))
        status = await client.get("/tasks/r")
        assert status.json()["status"] == "running"
        worker.release()
        answers = await asyncio.gather(first, second)
    finally:
        await worker.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert len(worker.received) == 1


async def test_a_failed_id_runs_again(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """A failed task's id is free: the retry after a failure runs the task anew."""
    d = dispatcher_factory(task_timeout_s=20.0)
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30.0) as client:
        timed_out = await client.post("/run-task", json={**BODY, "task_id": "f", "timeout_s": 0.2})
        assert timed_out.status_code == 504
        worker = await FakeWorker(d.ws_url, "w1", labels=["a"]).start()
        try:
            again = await client.post("/run-task", json={**BODY, "task_id": "f"})
        finally:
            await worker.close()
    assert again.status_code == 200 and len(worker.received) == 1


async def test_long_poll_answers_when_the_task_finishes(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """GET /tasks/{id}?wait_s= returns as soon as the task completes; bad values are 422."""
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a"]).start()
    worker.hold()
    try:
        await client.post("/tasks", json={**BODY, "task_id": "lp"})
        await worker.wait_for_tasks(1)
        poll = asyncio.create_task(client.get("/tasks/lp", params={"wait_s": 30}))
        short = await client.get("/tasks/lp", params={"wait_s": 0.05})
        assert short.json()["status"] == "running"
        worker.release()
        answer = await asyncio.wait_for(poll, 10)
        bad = await client.get("/tasks/lp", params={"wait_s": "nan"})
    finally:
        await worker.close()
    assert answer.json()["status"] == "completed"
    assert (bad.status_code, bad.json()["detail"]["field"]) == (422, "wait_s")


# --- cancel ----------------------------------------------------------------------------------


async def test_cancel_a_queued_task(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """DELETE of a queued task answers it 409 task_cancelled; its waiting caller gets the same
    answer, and no worker ever receives it."""
    waiting = asyncio.create_task(client.post("/run-task", json={**BODY, "task_id": "q"}))
    for _ in range(500):  # each GET yields to the server until the task is queued
        if (await client.get("/tasks/q")).status_code == 200:
            break
    cancelled = await client.delete("/tasks/q")
    answer = await asyncio.wait_for(waiting, 10)
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a"]).start()
    try:
        await client.post("/run-task", json={**BODY, "task_id": "other"})
    finally:
        await worker.close()
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "failed"
    assert cancelled.json()["error"]["error"] == TaskCancelled.code
    assert (answer.status_code, answer.json()["error"]) == (409, "task_cancelled")
    assert [t.task_id for t in worker.received] == ["other"]
    assert (await client.delete("/tasks/nope")).status_code == 404


async def test_cancel_a_running_task(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """DELETE of a running task sends its worker Cancel and answers the waiting caller 409;
    cancelling a completed task leaves it completed."""
    worker = await FakeWorker(dispatcher.ws_url, "w1", labels=["a"]).start()
    worker.hold()
    try:
        waiting = asyncio.create_task(client.post("/run-task", json={**BODY, "task_id": "run"}))
        await worker.wait_for_tasks(1)
        cancelled = await client.delete("/tasks/run")
        answer = await asyncio.wait_for(waiting, 10)
        for _ in range(500):
            if worker.cancels:
                break
            await client.get("/health")
        worker.release()
        done = await client.post("/run-task", json={**BODY, "task_id": "done"})
        kept = await client.delete("/tasks/done")
    finally:
        await worker.close()
    assert cancelled.json()["status"] == "failed"
    assert (answer.status_code, answer.json()["error"]) == (409, "task_cancelled")
    assert [c.task_id for c in worker.cancels] == ["run"]
    assert done.status_code == 200 and kept.json()["status"] == "completed"


# --- held restored tasks (sans-I/O) ----------------------------------------------------------


def _held(worker_id: str = "w1") -> tuple[Harness, TaskRecord]:
    h = harness()
    task = h.admission.admit("t", "a", "{}", "kept")
    task.restored, task.persisted, task.worker_id = True, True, worker_id
    h.core.hold(task)
    return h, task


def test_a_held_task_goes_to_nobody_and_takes_its_workers_buffered_result() -> None:
    """After a restart a task its worker was running is dispatched to no worker that joins;
    the result that worker reports completes it once; another worker's is a late result."""
    h, task = _held()
    other = h.join("w2", ("a",))
    assert other.tasks() == [] and task.state is TaskState.RUNNING
    h.answer("w2", "kept", result_json="1")
    assert task.state is TaskState.RUNNING
    own = h.join("w1", ("a",))
    h.answer("w1", "kept", result_json="7", labels_loaded=["a"])
    assert task.state is TaskState.COMPLETED and task.result == 7
    assert own.tasks() == [] and h.stats.counters.late_results == 1
    assert not h.core.held


def test_a_held_task_is_queued_again_after_the_grace() -> None:
    """When its worker never reports it, a held task is dispatched after HOLD_GRACE_S."""
    h, task = _held("gone")
    link = h.join("w2", ("a",))
    h.advance(HOLD_GRACE_S - 1)
    assert link.tasks() == []
    h.advance(2)
    assert [t.task_id for t in link.tasks()] == ["kept"]
    assert task.worker_id == "w2"


def test_a_held_task_goes_back_to_its_worker_when_it_rejoins_without_a_result() -> None:
    """Its worker reconnected but sent no result within REJOIN_SETTLE_S (it is still running
    the task, or never got it): the task is sent to that worker again, not to another holder."""
    h, task = _held()
    other = h.join("w2", ("a",))
    own = h.join("w1", ("a",))
    h.advance(REJOIN_SETTLE_S + 0.1)
    assert [t.task_id for t in own.tasks()] == ["kept"] and other.tasks() == []
    h.answer("w1", "kept", result_json="3", labels_loaded=["a"])
    assert task.state is TaskState.COMPLETED and task.result == 3


def test_a_held_task_can_be_cancelled_and_fails_at_shutdown() -> None:
    """Cancel and shutdown reach held tasks too."""
    h, task = _held()
    h.core.cancel("kept", TaskCancelled("x"))
    assert task.state is TaskState.FAILED and not h.core.held
    h2, task2 = _held()
    h2.core.stop_accepting()
    assert task2.state is TaskState.FAILED and not h2.core.held


# --- the worker id in the state database -----------------------------------------------------


async def test_the_dispatched_worker_is_stored_and_restores_as_held(tmp_path: Path) -> None:
    """Persistence records the worker a task went to; the plan holds it for that worker."""
    store = TaskStore(tmp_path / "state.db")
    h = harness()
    persistence = Persistence(store, 600.0)
    h.core.observers.append(persistence)
    h.join("w1", ("a",))
    task = h.admission.admit("t", "a", "{}", "sent")
    await persistence.add(task)
    h.core.accept(task)
    queued = h.admission.admit("t", "a", "{}", "waiting")
    await persistence.add(queued)
    h.core.accept(queued)
    await persistence.close()
    plan = plan_recovery(TaskStore(tmp_path / "state.db"), 600.0, 0.0, h.core.clock.unix())
    assert [(t.task_id, t.worker_id) for t in plan.held] == [("sent", "w1")]
    assert [t.task_id for t in plan.requeue] == ["waiting"]


def test_an_old_state_db_gains_the_worker_column(tmp_path: Path) -> None:
    """A file written before the worker id was kept opens, and its rows read back."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, task_type TEXT NOT NULL, label TEXT NOT"
        " NULL, parameters_json TEXT NOT NULL, deadline_unix_ms INTEGER NOT NULL, state TEXT NOT"
        " NULL, submitted_unix REAL NOT NULL, finished_unix REAL, answer_json TEXT)"
    )
    db.execute("INSERT INTO tasks VALUES ('o', 't', 'a', '{}', 1, 'queued', 1.0, NULL, NULL)")
    db.commit()
    db.close()
    store = TaskStore(path)
    store.dispatched("o", "w9")
    assert [(r.task_id, r.worker_id) for r in store.load()] == [("o", "w9")]
