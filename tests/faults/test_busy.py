"""A full worker answers BUSY and the task still completes elsewhere (docs/architecture.md §6.6).

Two real in-process dispatchers, simulated workers linked to both. A dispatcher's view of a
shared worker can be a moment old (the worker's Occupancy report is on its way), so a task can
reach a worker whose slots another dispatcher's tasks just took: the worker refuses it at once,
and the dispatcher places it elsewhere without counting an attempt or blaming the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator

import httpx
import pytest

from dispatcher.config import Config as DispatcherConfig
from dispatcher.registry import WorkerState
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.support import scaled, until
from tests.worker.test_multi_dispatcher import registered, running_worker, task

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def two_dispatchers() -> Iterator[tuple[RunningDispatcher, RunningDispatcher]]:
    """Dispatchers A and B (breaker at one failure: a BUSY counted as one would show)."""
    config = DispatcherConfig(task_timeout_s=30.0, breaker_failures=1)
    started = [start_dispatcher(config) for _ in range(2)]
    yield started[0], started[1]
    for running in started:
        running.stop()


def on_loop(running: RunningDispatcher, fn: Callable[[], None]) -> None:
    """Run `fn` on the dispatcher's own event loop (its core is not thread-safe) and wait."""
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def call() -> None:
        try:
            fn()
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)

    running.server._loop.call_soon_threadsafe(call)
    done.result(scaled(10))


async def test_a_full_worker_answers_busy_and_the_task_completes_elsewhere(
    two_dispatchers: tuple[RunningDispatcher, RunningDispatcher],
) -> None:
    """w1 (one slot, holding the label) runs A's long task; B's view of w1 is made a moment
    old (the report of that task not yet applied), so B sends its task to w1, the idle holder.
    w1 answers BUSY, B runs the task on w2 at attempt 1, and w1 is neither suspended nor
    struck; when A's task ends w1's report frees it in B's view."""
    a, b = two_dispatchers
    async with (
        running_worker([a.ws_url, b.ws_url], "w1") as w1,
        httpx.AsyncClient(timeout=30) as http,
    ):
        await until(lambda: registered(a, "w1") and registered(b, "w1"), "w1 on both")
        warm = await http.post(f"{b.base_url}/run-task", json=task("m"))
        assert warm.json()["worker_id"] == "w1"  # w1 now holds "m"
        async with running_worker([b.ws_url], "w2") as w2:
            await until(lambda: registered(b, "w2"), "w2 on B")
            long = await http.post(f"{a.base_url}/tasks", json=task("m", run_ms=800))
            assert long.status_code == 202, long.text
            await until(lambda: registered(b, "w1").busy_elsewhere == 1, "B to hear of it")
            on_loop(b, lambda: b.core.registry.set_busy_elsewhere("w1", 0))  # a stale view

            answer = await http.post(f"{b.base_url}/run-task", json=task("m"))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["worker_id"] == "w2"
            assert w1.busy_answers == 1 and w2.tasks_run == 1
            assert b.core.results.get(body["task_id"]).attempt == 1  # BUSY was no attempt
            record = registered(b, "w1")
            assert (record.state, record.failures) == (WorkerState.READY, 0)
            # A's task ends: the worker's report tells B the slot is free again.
            await until(lambda: registered(b, "w1").free_slots == 1, "w1 free in B's view")
            status = await http.get(f"{a.base_url}{long.json()['status_url']}")
            assert status.json()["status"] == "completed"


@pytest.mark.parametrize("hold_ms", [0.0, 5.0])
async def test_two_dispatchers_racing_for_shared_workers_lose_no_task(
    two_dispatchers: tuple[RunningDispatcher, RunningDispatcher], hold_ms: float
) -> None:
    """60 concurrent tasks, half to each dispatcher, on three one-slot workers linked to both:
    every task completes on its first attempt, whatever BUSY answers the races caused, and no
    worker is suspended. With `--occupancy-hold-ms` the dispatcher whose task ended refills
    the slot before the other hears of it, so far fewer races (the count is printed)."""
    a, b = two_dispatchers
    urls = [a.ws_url, b.ws_url]
    async with (
        running_worker(urls, "w1", occupancy_hold_ms=hold_ms) as w1,
        running_worker(urls, "w2", occupancy_hold_ms=hold_ms) as w2,
        running_worker(urls, "w3", occupancy_hold_ms=hold_ms) as w3,
        httpx.AsyncClient(timeout=60) as http,
    ):
        ids = ("w1", "w2", "w3")
        await until(lambda: all(registered(d, w) for d in (a, b) for w in ids), "workers")
        targets = [a, b] * 30
        answers = await asyncio.gather(
            *(
                http.post(f"{d.base_url}/run-task", json=task(f"m{i % 4}", run_ms=20))
                for i, d in enumerate(targets)
            )
        )
        assert [r.status_code for r in answers] == [200] * 60, [r.text for r in answers]
        assert sum(w.tasks_run for w in (w1, w2, w3)) == 60
        for d, r in zip(targets, answers, strict=True):
            assert d.core.results.get(r.json()["task_id"]).attempt == 1
        for d in (a, b):
            assert all(registered(d, w).state is WorkerState.READY for w in ids)
        busy = sum(w.busy_answers for w in (w1, w2, w3))
        print(f"BUSY answers in the race (occupancy hold {hold_ms:g} ms): {busy}")
