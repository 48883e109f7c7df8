"""A worker linked to several dispatchers (docs/architecture.md §6.6), all of them real.

Two in-process dispatchers on ephemeral ports (uvicorn in threads) and simulated-engine workers
running in the test's loop, each linked to both: tasks to either dispatcher complete, every
dispatcher sees the slots the other one's tasks take, losing one dispatcher leaves the worker
serving the other, and DNS discovery (with an injected resolver) opens and closes links.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import httpx
import pytest

from dispatcher.config import Config as DispatcherConfig
from dispatcher.server import DispatcherServer
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.support import scaled, until, wait_until
from worker.config import Config
from worker.connection import ConnectionState
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def two_dispatchers() -> Iterator[tuple[RunningDispatcher, RunningDispatcher]]:
    """Dispatchers A and B, stopped at teardown."""
    started = [start_dispatcher(DispatcherConfig(task_timeout_s=20.0)) for _ in range(2)]
    yield started[0], started[1]
    for running in started:
        running.stop()


def linked_config(urls: Sequence[str], worker_id: str, slots: int, **fields: Any) -> Config:
    """A fast simulated worker's config (5 ms loads, 2 ms runs) linked to every URL."""
    return Config(
        dispatcher_url=tuple(urls),
        worker_id=worker_id,
        capacity=2,
        slots=slots,
        engine="simulated",
        sim_load_ms=5,
        sim_load_stddev_ms=0,
        sim_run_ms=2,
        sim_run_stddev_ms=0,
        seed=1,
        reconnect_max_backoff_s=0.3,
        shutdown_timeout_s=5,
        **fields,
    )


@contextlib.asynccontextmanager
async def running_worker(
    urls: Sequence[str], worker_id: str, slots: int = 1, **fields: Any
) -> AsyncIterator[Worker]:
    """A simulated worker linked to every URL, run in this loop, stopped cleanly at the end."""
    worker = Worker(linked_config(urls, worker_id, slots, **fields))
    job = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        assert await asyncio.wait_for(job, scaled(30)) == 0


def registered(running: RunningDispatcher, worker_id: str) -> Any:
    """The dispatcher's record of a worker, or None (read from the test thread: counters only)."""
    return running.core.registry.workers.get(worker_id)


def task(label: str, run_ms: int = 0) -> dict[str, Any]:
    params = f'{{"run_ms": {run_ms}}}' if run_ms else "{}"
    return {"task_type": "sample_task", "label": label, "parameters_json": params}


async def test_tasks_to_either_dispatcher_complete_and_both_see_the_others_load(
    two_dispatchers: tuple[RunningDispatcher, RunningDispatcher],
) -> None:
    """One worker, two dispatchers: both register it and run tasks on it. While A's long task
    holds its only slot, B's registry shows that slot taken (Occupancy), so B queues its own
    task instead of sending it (no BUSY), and sends it once A's task ends."""
    a, b = two_dispatchers
    async with (
        running_worker([a.ws_url, b.ws_url], "w1") as worker,
        httpx.AsyncClient(timeout=30) as http,
    ):
        await until(lambda: registered(a, "w1") and registered(b, "w1"), "both registries")
        for running in (a, b, a, b):
            answer = await http.post(f"{running.base_url}/run-task", json=task("m"))
            assert answer.status_code == 200, answer.text
            assert answer.json()["worker_id"] == "w1"
        assert worker.tasks_run == 4
        # A's long task takes the slot; B hears of it, not from A but from the worker.
        accepted = await http.post(f"{a.base_url}/tasks", json=task("m", run_ms=600))
        assert accepted.status_code == 202, accepted.text
        await until(lambda: registered(b, "w1").busy_elsewhere == 1, "B to see A's task")
        assert registered(b, "w1").free_slots == 0
        answer = await http.post(f"{b.base_url}/run-task", json=task("m"))
        assert answer.status_code == 200, answer.text
        status = (await http.get(f"{a.base_url}{accepted.json()['status_url']}")).json()
        assert status["status"] == "completed"
        assert worker.busy_answers == 0  # B waited for the slot instead of being refused
        await until(lambda: registered(b, "w1").busy_elsewhere == 0, "B to see the slot free")
        assert registered(a, "w1").busy_elsewhere == 0


async def test_losing_one_dispatcher_leaves_the_worker_serving_the_other(
    two_dispatchers: tuple[RunningDispatcher, RunningDispatcher],
) -> None:
    """A stops: the worker's link to A goes back to reconnecting, its link to B stays open and
    B's tasks still complete on it."""
    a, b = two_dispatchers
    async with (
        running_worker([a.ws_url, b.ws_url], "w1", slots=2) as worker,
        httpx.AsyncClient(timeout=30) as http,
    ):
        await until(lambda: registered(a, "w1") and registered(b, "w1"), "both registries")
        a.stop()
        await until(
            lambda: worker.links[a.ws_url].state is ConnectionState.CONNECTING, "A's link down"
        )
        for _ in range(3):
            answer = await http.post(f"{b.base_url}/run-task", json=task("m"))
            assert answer.status_code == 200, answer.text
        assert worker.links[b.ws_url].state is ConnectionState.OPEN
        assert worker.links[b.ws_url].connections == 1  # never dropped
        assert worker.links_open() == 1


def start_on(host: str, port: int) -> RunningDispatcher:
    """A dispatcher on a given address and port (start_dispatcher's, with the address chosen)."""
    cfg = replace(DispatcherConfig(task_timeout_s=20.0), host=host, port=port, log_level="warning")
    server = DispatcherServer(cfg)
    thread = threading.Thread(target=server.run, daemon=True, name=f"dispatcher-{host}")
    thread.start()
    wait_until(lambda: bool(server.started) or not thread.is_alive(), 15, "dispatcher to start")
    assert server.started, f"dispatcher failed to start on {host}:{port}"
    return RunningDispatcher(cfg, server, thread, port)


@pytest.fixture
def dispatchers_behind_one_name() -> Iterator[tuple[RunningDispatcher, RunningDispatcher]]:
    """Two dispatchers on one port at 127.0.0.1 and 127.0.0.2, as two pods behind a headless
    Service."""
    first = start_dispatcher(DispatcherConfig(task_timeout_s=20.0))
    try:
        second = start_on("127.0.0.2", first.port)
    except AssertionError:
        first.stop()
        pytest.skip("cannot bind 127.0.0.2 here")
    yield first, second
    for running in (first, second):
        running.stop()


async def test_dns_discovery_opens_and_closes_links_as_addresses_come_and_go(
    dispatchers_behind_one_name: tuple[RunningDispatcher, RunningDispatcher],
) -> None:
    """The name resolves to A: one link; to A and B: a second link, B registers the worker; to
    B only: A's link is closed (A forgets the worker) and B's tasks still run."""
    a, b = dispatchers_behind_one_name
    table = {"dispatchers.test": ["127.0.0.1"]}

    async def resolver(host: str) -> list[str]:
        return table[host]

    url = f"ws://dispatchers.test:{a.port}/worker-listen"
    url_a = f"ws://127.0.0.1:{a.port}/worker-listen"
    url_b = f"ws://127.0.0.2:{a.port}/worker-listen"
    async with running_worker(
        [url], "w1", dispatcher_discovery="dns", discovery_interval_s=0.05
    ) as worker:
        assert worker.discovery is not None
        worker.discovery.resolver = resolver
        await until(lambda: registered(a, "w1"), "A to register the worker")
        assert list(worker.links) == [url_a] and not registered(b, "w1")
        table["dispatchers.test"] = ["127.0.0.1", "127.0.0.2"]
        await until(lambda: registered(b, "w1"), "B to register the worker")
        assert sorted(worker.links) == [url_a, url_b]
        table["dispatchers.test"] = ["127.0.0.2"]
        await until(lambda: not registered(a, "w1"), "A to lose the worker")
        assert list(worker.links) == [url_b]
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(f"http://127.0.0.2:{b.port}/run-task", json=task("m"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["worker_id"] == "w1"
