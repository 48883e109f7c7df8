"""A task id that reaches a worker twice runs once (docs/architecture.md §6.6, issue 17).

With several dispatchers one task id can arrive on two links: a survivor re-sends a dead
dispatcher's async task, a synchronous caller retries through another dispatcher. The worker
runs in-process, linked to two protocol peers (real websockets servers, tests/worker/peer.py)
with a simulated engine whose load is held open by the test (an event), so "while it runs" is
a state the test holds, not a race; one test goes through two real in-process dispatchers.
The bounds of the recent-results memory (worker/results.py) are checked with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from dispatcher.config import Config as DispatcherConfig
from proto import smartrouting_pb2 as pb
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.support import scaled, until
from tests.worker.peer import ProtocolPeer, protocol_peer
from tests.worker.test_multi_dispatcher import linked_config
from tests.worker.test_slots import GatedEngine
from worker.connection import ConnectionState
from worker.results import RecentResults
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def linked_worker(
    urls: list[str], engine: GatedEngine | None = None, slots: int = 2
) -> AsyncIterator[Worker]:
    """A simulated worker linked to every URL, run in this loop, stopped at the end."""
    worker = Worker(linked_config(urls, "w-dup", slots), engine=engine)
    job = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        if engine is not None:
            engine.release.set()
        worker.request_stop()
        await asyncio.wait_for(job, scaled(30))


@contextlib.asynccontextmanager
async def two_peers(
    slots: int = 2,
) -> AsyncIterator[tuple[ProtocolPeer, ProtocolPeer, Worker, GatedEngine]]:
    """Peers A and B, a worker linked to both (label "slow" loads only when released)."""
    engine = GatedEngine(slow={"slow"})
    async with protocol_peer() as a, protocol_peer() as b:
        async with linked_worker([a.url, b.url], engine, slots) as worker:
            await a.session(0)
            await b.session(0)
            yield a, b, worker, engine


async def resend(peer: ProtocolPeer, task_id: str, label: str, attempt: int) -> None:
    """The task sent again, as a survivor or a retry does (its own attempt number)."""
    task = pb.Task(task_id=task_id, task_type="sample_task", label=label, attempt=attempt)
    await peer.send(pb.DispatcherMessage(task=task))


async def lose(peer: ProtocolPeer, worker: Worker) -> None:
    """Stop a peer (its dispatcher dies): the worker's link to it goes down."""
    await peer.stop()
    link = worker.links[peer.url]
    await until(lambda: link.state is not ConnectionState.OPEN, "the link to go down")


async def test_a_task_running_for_a_that_b_sends_again_runs_once_and_both_get_it() -> None:
    """A's task holds the only slot (its load held open); B sends the same id: no BUSY, no
    second run; on release both get the one result, each with its own attempt. A new id from B
    meanwhile is still answered BUSY (the duplicate took no slot)."""
    async with two_peers(slots=1) as (a, b, worker, engine):
        await a.task("t1", "slow")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await resend(b, "t1", "slow", attempt=2)
        await b.task("other", "slow")
        busy = await b.result()
        assert (busy.task_id, busy.error_code) == ("other", pb.BUSY)
        await until(lambda: worker.results_shared == 1, "B to join the run")
        engine.release.set()
        first, second = await a.result(), await b.result()
        assert (first.task_id, first.ok, first.attempt) == ("t1", True, 1)
        assert (second.task_id, second.ok, second.attempt) == ("t1", True, 2)
        assert second.result_json == first.result_json
        assert (worker.tasks_run, worker.busy_answers, engine.loads) == (1, 1, ["slow"])


async def test_a_run_for_a_dead_link_answers_the_re_send_and_waits_in_its_outbox() -> None:
    """A dies while its task runs; B (the survivor) sends the id again: it joins the run and
    gets the result, and the result also waits in A's outbox for A's return."""
    async with two_peers() as (a, b, worker, engine):
        await a.task("t2", "slow")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await lose(a, worker)
        await b.task("t2", "slow")
        await until(lambda: worker.results_shared == 1, "B to join the run")
        engine.release.set()
        answer = await b.result()
        assert (answer.task_id, answer.ok) == ("t2", True)
        waiting = worker.links[a.url].queued_result("t2")
        assert waiting is not None and waiting.result_json == answer.result_json
        assert worker.tasks_run == 1


@pytest.mark.parametrize("memory", ["recent results", "outbox only"])
async def test_a_result_waiting_in_a_dead_links_outbox_answers_the_re_send(memory: str) -> None:
    """The task finished while A was down: its result waits in A's outbox. B's re-send is
    answered at once with it, not run; with the recent-results memory emptied (its bounds
    passed), the outbox still answers."""
    async with two_peers() as (a, b, worker, engine):
        if memory == "outbox only":
            worker.recent = RecentResults(max_results=0)
        await a.task("t3", "slow")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await lose(a, worker)
        engine.release.set()
        await until(lambda: worker.links[a.url].queued_result("t3"), "the result in A's outbox")
        assert len(worker.recent) == (0 if memory == "outbox only" else 1)
        await resend(b, "t3", "slow", attempt=2)
        answer = await b.result()
        assert (answer.task_id, answer.ok, answer.attempt) == ("t3", True, 2)
        assert (worker.tasks_run, worker.results_shared) == (1, 1)


async def test_a_result_already_delivered_answers_a_re_send_from_another_link() -> None:
    """A got its answer (and may have died before storing it): B's re-send of the id is
    answered from the recent results; an error is not remembered, so its id runs again."""
    async with two_peers() as (a, b, worker, _):
        await a.task("t4", "fast")
        first = await a.result()
        await b.task("t4", "fast")
        again = await b.result()
        assert first.ok and again.result_json == first.result_json
        assert (worker.tasks_run, worker.results_shared) == (1, 1)
        await a.task("bad", "fast", task_type="no_such_type")
        assert not (await a.result()).ok
        await b.task("bad", "fast", task_type="no_such_type")
        assert not (await b.result()).ok
        assert (worker.tasks_run, worker.results_shared) == (3, 1)


async def test_a_cancel_from_the_joining_link_leaves_the_run_to_the_first() -> None:
    """B joined A's run then cancels (its deadline passed): B is answered DEADLINE_EXCEEDED
    at once, A still gets the result of the one run."""
    async with two_peers() as (a, b, worker, engine):
        await a.task("t5", "slow")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await b.task("t5", "slow")
        await until(lambda: worker.results_shared == 1, "B to join the run")
        await b.send(pb.DispatcherMessage(cancel=pb.Cancel(task_id="t5", reason="deadline")))
        cancelled = await b.result()
        assert (cancelled.task_id, cancelled.error_code) == ("t5", pb.DEADLINE_EXCEEDED)
        engine.release.set()
        answer = await a.result()
        assert (answer.task_id, answer.ok, worker.tasks_run) == ("t5", True, 1)


@pytest.fixture
def two_dispatchers() -> Iterator[tuple[RunningDispatcher, RunningDispatcher]]:
    """Two real dispatchers (in-process, no shared store: each accepts the same id)."""
    started = [start_dispatcher(DispatcherConfig(task_timeout_s=20.0)) for _ in range(2)]
    yield started[0], started[1]
    for running in started:
        running.stop()


async def test_one_id_through_two_real_dispatchers_runs_once(
    two_dispatchers: tuple[RunningDispatcher, RunningDispatcher],
) -> None:
    """An async task on A, then the same id as a sync call on B (a caller retrying elsewhere)
    while it runs: both complete with the one run's result."""
    a, b = two_dispatchers
    body = {"task_type": "sample_task", "label": "m", "parameters_json": '{"run_ms": 400}'}
    async with linked_worker([a.ws_url, b.ws_url]) as worker, httpx.AsyncClient(timeout=30) as http:
        await until(lambda: worker.links_open() == 2, "both links")
        accepted = await http.post(f"{a.base_url}/tasks", json={**body, "task_id": "job-1"})
        assert accepted.status_code == 202, accepted.text
        await until(lambda: "job-1" in worker._pending, "A's task to run")
        answer = await http.post(f"{b.base_url}/run-task", json={**body, "task_id": "job-1"})
        assert answer.status_code == 200, answer.text
        status = (await http.get(f"{a.base_url}/tasks/job-1")).json()
        assert status["status"] == "completed", status
        assert answer.json()["result"] == status["result"]
        assert (worker.tasks_run, worker.results_shared) == (1, 1)


def result(task_id: str, size: int = 0) -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, ok=True, result_json="x" * size)


def test_the_recent_results_hold_to_their_count_bytes_and_age() -> None:
    """Oldest out first past the count or the bytes; nothing older than the age; a result
    larger than the byte bound alone is not kept; errors are not kept."""
    now = [0.0]
    recent = RecentResults(max_results=3, max_bytes=1000, max_age_s=10.0, clock=lambda: now[0])
    for n in range(5):
        recent.remember(result(f"c{n}"))
    assert len(recent) == 3 and recent.get("c0") is None and recent.get("c4") is not None
    recent.remember(result("big", 600))
    recent.remember(result("big2", 600))
    assert recent.get("big") is None and recent.get("big2") is not None
    assert recent.bytes <= 1000
    recent.remember(result("huge", 2000))
    assert recent.get("huge") is None
    recent.remember(pb.TaskResult(task_id="failed", ok=False, error_code=pb.INFERENCE_FAILED))
    assert recent.get("failed") is None
    now[0] = 9.0
    recent.remember(result("late"))
    now[0] = 10.5
    assert recent.get("big2") is None and recent.get("late") is not None
    assert len(recent) == 1 and recent.bytes == result("late").ByteSize()
