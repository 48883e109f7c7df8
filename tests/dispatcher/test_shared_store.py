"""Two dispatchers on one real PostgreSQL task store (docs/architecture.md, "Shared task
store"): a task accepted by one is read and retried through the other, and the tasks of a
dispatcher killed with SIGKILL are claimed by the survivor after the lease and run once."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from dispatcher.leases import lost_leases, renew_every
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.postgres import PostgresServer
from tests.support import ProcessFactory, free_port

pytestmark = pytest.mark.timeout(120)

BODY = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}
LEASE_S = 1.0


@pytest.fixture
def store_url(postgres: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres.create_database(f"shared_{uuid.uuid4().hex[:8]}")


async def poll_status(
    client: httpx.AsyncClient, task_id: str, status: str, timeout_s: float = 20.0
) -> dict[str, object]:
    """GET /tasks/{id} (long polls) until it reports `status`; its last body."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = (await client.get(f"/tasks/{task_id}", params={"wait_s": 1})).json()
        if body.get("status") == status:
            return body
    pytest.fail(f"task {task_id} is {body.get('status')!r}, not {status!r}: {body}")


async def test_a_task_accepted_by_one_dispatcher_is_read_and_retried_on_another(
    dispatcher_factory: Callable[..., RunningDispatcher], store_url: str
) -> None:
    """B reads A's unfinished task from the store, long-polls it to completion, and answers
    retries of A's async and sync tasks with the stored answers, running nothing."""
    common = {"store_url": store_url, "lease_s": 5.0, "task_timeout_s": 30.0}
    a = dispatcher_factory(dispatcher_id="A", **common)
    b = dispatcher_factory(dispatcher_id="B", **common)
    worker_a = await FakeWorker(a.ws_url, "wa", labels=["a"]).start()
    worker_b = await FakeWorker(b.ws_url, "wb", labels=["a"]).start()
    try:
        async with (
            httpx.AsyncClient(base_url=a.base_url, timeout=15) as ca,
            httpx.AsyncClient(base_url=b.base_url, timeout=15) as cb,
        ):
            worker_a.hold()
            accepted = await ca.post("/tasks", json={**BODY, "task_id": "async-1"})
            assert accepted.status_code == 202
            await worker_a.wait_for_tasks(1)
            # A writes the dispatch to the store just after sending it: queued, then running.
            await poll_status(cb, "async-1", "running", timeout_s=5)
            retry = await cb.post("/tasks", json={**BODY, "task_id": "async-1"})
            assert (retry.status_code, retry.json()["status"]) == (202, "running")
            conflict = await cb.post(
                "/tasks", json={**BODY, "task_id": "async-1", "parameters": {"run_ms": 2}}
            )
            assert conflict.status_code == 409
            worker_a.release()
            done = await poll_status(cb, "async-1", "completed")
            assert done["result"] == (await ca.get("/tasks/async-1")).json()["result"]

            sync = await ca.post("/run-task", json={**BODY, "task_id": "sync-1"})
            assert sync.json()["status"] == "completed"
            # A writes the kept answer just after answering: B reads it from the store.
            await poll_status(cb, "sync-1", "completed", timeout_s=5)
            again = await cb.post("/run-task", json={**BODY, "task_id": "sync-1"})
            assert again.json() == sync.json()
            assert worker_b.received == []  # B ran nothing: both answers came from A's run
            assert (await cb.get("/tasks/unknown")).status_code == 404
    finally:
        await worker_a.close()
        await worker_b.close()


async def test_a_killed_dispatchers_tasks_are_claimed_and_run_exactly_once(
    dispatcher_factory: Callable[..., RunningDispatcher],
    processes: ProcessFactory,
    store_url: str,
) -> None:
    """A (a real process, no workers) accepts 30 async tasks and is killed with SIGKILL; B
    claims them once A's lease ends, and its workers run each exactly once."""
    b = dispatcher_factory(
        store_url=store_url, dispatcher_id="B", lease_s=LEASE_S, task_timeout_s=60.0
    )
    workers = [await FakeWorker(b.ws_url, f"w{n}", labels=["a"]).start() for n in range(2)]
    port = free_port()
    a = processes.dispatcher(
        port,
        "--dispatcher-id",
        "A",
        "--lease-s",
        str(LEASE_S),
        "--no-worker-grace-s",
        "0",
        "--task-timeout-s",
        "60",
        env={"DISPATCHER_STORE_URL": store_url},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as ca:
            ids = [f"k{n}" for n in range(30)]
            for task_id in ids:
                accepted = await ca.post("/tasks", json={**BODY, "task_id": task_id})
                assert accepted.status_code == 202, accepted.text
        a.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        async with httpx.AsyncClient(base_url=b.base_url, timeout=15) as cb:
            for task_id in ids:
                await poll_status(cb, task_id, "completed", timeout_s=30)
        taken_over_s = time.monotonic() - killed_at
        runs = Counter(task.task_id for w in workers for task in w.received)
        assert runs == Counter({task_id: 1 for task_id in ids}), runs
        assert b.dispatcher.leases.claimed == 30
        # The lease (1 s) plus at most one claim period (lease / 3) and the runs.
        assert taken_over_s < 10, taken_over_s
        print(f"\nSIGKILL of A -> all 30 tasks done on B in {taken_over_s:.2f} s")
    finally:
        for worker in workers:
            await worker.close()


async def test_a_graceful_stop_hands_its_leases_over_at_once(
    dispatcher_factory: Callable[..., RunningDispatcher], store_url: str
) -> None:
    """A stopped with SIGTERM's sequence ends its leases: B claims its queued tasks long
    before the (30 s) lease would have ended."""
    common = {"store_url": store_url, "lease_s": 30.0, "task_timeout_s": 60.0}
    a = dispatcher_factory(dispatcher_id="A", no_worker_grace_s=0.0, **common)
    b = dispatcher_factory(dispatcher_id="B", **common)
    worker = await FakeWorker(b.ws_url, "wb", labels=["a"]).start()
    try:
        async with httpx.AsyncClient(base_url=a.base_url, timeout=15) as ca:
            for n in range(5):
                assert (await ca.post("/tasks", json={**BODY, "task_id": f"g{n}"})).is_success
        a.stop()
        stopped_at = time.monotonic()
        async with httpx.AsyncClient(base_url=b.base_url, timeout=15) as cb:
            for n in range(5):
                # A retry on B finds the task released and claims it (a join, not a new run).
                retry = await cb.post("/tasks", json={**BODY, "task_id": f"g{n}"})
                assert retry.status_code == 202
            for n in range(5):
                await poll_status(cb, f"g{n}", "completed", timeout_s=10)
        assert time.monotonic() - stopped_at < 10
        assert sorted(t.task_id for t in worker.received) == [f"g{n}" for n in range(5)]
    finally:
        await worker.close()


def test_lost_leases_are_those_still_run_here_but_renewed_by_nobody() -> None:
    """Tasks held before a renewal and still running here, that the renewal no longer
    covers, were claimed by another dispatcher; finished ones are not lost."""
    assert lost_leases({"a", "b", "c"}, renewed={"a"}, still_local={"a", "b"}) == {"b"}
    assert lost_leases(set(), renewed=set(), still_local={"new"}) == set()
    assert renew_every(15.0) == 5.0
