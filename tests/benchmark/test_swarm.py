"""The swarm hosts real `worker.runtime.Worker`s (simulated engine) against a real dispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from benchmark.swarm import FALLBACK_COSTS, Swarm, SwarmConfig, default_costs, run_swarm
from tests.support import ProcessFactory, scaled
from worker.engines.simulated import SimulatedEngine
from worker.runtime import Worker, WorkerState


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    # The dispatcher is another process: poll it, there is no event to await.
    deadline = asyncio.get_running_loop().time() + scaled(timeout)
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_worker_configs_match_a_cluster_of_processes() -> None:
    """Worker `i` gets LocalCluster's id and seed, the simulated engine and the given costs."""
    costs = {**default_costs(), "sim_run_ms": 3.0}
    url = "ws://127.0.0.1:1/worker-listen"
    config = SwarmConfig(url, workers=3, capacity=4, seed=2, costs=costs)
    worker = config.worker_config(2)
    assert (worker.worker_id, worker.seed, worker.capacity) == ("w-2", 2002, 4)
    assert worker.engine == "simulated"
    assert worker.sim_run_ms == 3.0
    assert worker.sim_load_ms == FALLBACK_COSTS["sim_load_ms"]


def test_unknown_cost_is_refused() -> None:
    """A cost that is no simulated-engine setting is an error, not silently ignored."""
    with pytest.raises(ValueError, match="sim_warp_ms"):
        SwarmConfig("ws://127.0.0.1:1/worker-listen", workers=1, costs={"sim_warp_ms": 1.0})


@dataclass
class _Seen:
    """What the scenario saw at the dispatcher, and the swarm's exit code."""

    detail: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    code: int | None = None


async def _serve_tasks(swarm: Swarm, base: str, tasks: int) -> _Seen:
    seen = _Seen()
    ids = {w.config.worker_id for w in swarm.workers}
    stop = asyncio.Event()
    served = asyncio.create_task(swarm.run(stop))
    async with httpx.AsyncClient(base_url=base, timeout=scaled(30)) as client:

        async def listed() -> set[str]:
            return set((await client.get("/workers")).json()["workers"])

        async def all_registered() -> bool:
            return await listed() == ids

        async def all_counted() -> bool:
            seen.stats = (await client.get("/stats")).json()
            return bool(seen.stats["tasks_completed"] == tasks)

        async def all_gone() -> bool:
            return not await listed()

        await _until(all_registered, 30, "the swarm's workers at /workers")
        seen.detail = (await client.get("/workers", params={"detail": "true"})).json()["workers"]
        bodies = [
            {"task_type": "sample_task", "label": f"label-{i % 7}", "parameters_json": "{}"}
            for i in range(tasks)
        ]
        answers = await asyncio.gather(*(client.post("/run-task", json=b) for b in bodies))
        seen.answers = [a.json() | {"http": a.status_code} for a in answers]
        await _until(all_counted, 10, f"{tasks} completed tasks at /stats")
        stop.set()
        seen.code = await asyncio.wait_for(served, scaled(30))
        await _until(all_gone, 15, "the workers to leave /workers")
    return seen


@pytest.mark.timeout(120)
def test_swarm_workers_are_real_workers(
    processes: ProcessFactory, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Five swarm Workers register, run tasks from a real dispatcher and shut down cleanly."""
    processes.dispatcher(port)
    url = f"ws://127.0.0.1:{port}/worker-listen"
    swarm = Swarm(SwarmConfig(url, workers=5, capacity=2, time_scale=0.01))
    assert all(isinstance(w, Worker) for w in swarm.workers)
    assert all(isinstance(w.engine, SimulatedEngine) for w in swarm.workers)
    ids = {f"w-{i}" for i in range(5)}

    with caplog.at_level(logging.INFO, logger="worker"):
        seen = asyncio.run(_serve_tasks(swarm, f"http://127.0.0.1:{port}", 40))

    # Each Worker's own Hello reached the dispatcher.
    assert {w["worker_id"] for w in seen.detail} == ids
    assert {(w["engine"], w["capacity"], w["slots"]) for w in seen.detail} == {("simulated", 2, 1)}
    assert all(a["http"] == 200 and a["status"] == "completed" for a in seen.answers), seen.answers
    assert {a["worker_id"] for a in seen.answers} <= ids
    assert all(a["result"]["simulated"] for a in seen.answers)
    # Every answer was produced by one of the swarm's own Worker objects.
    assert swarm.tasks_run == seen.stats["tasks_completed"] == 40
    # The stop ran each worker's real shutdown sequence; their log lines carry their ids.
    assert seen.code == 0
    assert all(w.state is WorkerState.STOPPED for w in swarm.workers)
    assert "[w-3] worker w-3 stopped after" in caplog.text


@pytest.mark.timeout(60)
def test_swarm_with_an_invalid_url_exits_1() -> None:
    """A worker that cannot run at all (bad URL) stops the swarm with exit code 1."""
    config = SwarmConfig("not-a-websocket-url", workers=2)
    assert asyncio.run(asyncio.wait_for(run_swarm(config, asyncio.Event()), scaled(30))) == 1


def test_cancelling_the_swarm_cancels_its_workers() -> None:
    """A cancelled swarm leaves no worker task behind (they would run on unowned)."""

    async def scenario() -> set[asyncio.Task[Any]]:
        # Port 1 refuses connections: the workers keep reconnecting until cancelled.
        swarm = Swarm(SwarmConfig("ws://127.0.0.1:1/worker-listen", workers=3))
        served = asyncio.create_task(swarm.run(asyncio.Event()))

        async def running() -> bool:
            return all(w.state is WorkerState.RUNNING for w in swarm.workers)

        await _until(running, 10, "the workers to run")
        served.cancel()
        with pytest.raises(asyncio.CancelledError):
            await served
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert asyncio.run(scenario()) == set()
