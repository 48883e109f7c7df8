"""Concurrent slots: a hit never waits behind another label's load (docs/architecture.md §6.3).

The worker runs in-process against the protocol peer with a simulated engine whose load of
one label is held open by the test (an event, not a duration), so ordering is asserted on
events: the hit's result arrives while that load is still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from proto import smartrouting_pb2 as pb
from tests.support import scaled
from tests.worker.peer import ProtocolPeer, protocol_peer
from worker.config import Config
from worker.engines.simulated import SimulatedEngine
from worker.models import ModelManager
from worker.runtime import Worker


class GatedEngine(SimulatedEngine):
    """Simulated engine whose loads of `slow` labels wait until `release` is set."""

    def __init__(self, slow: set[str]) -> None:
        super().__init__(load_ms=5, load_stddev_ms=0, run_ms=2, run_stddev_ms=0, seed=1)
        self.slow = slow
        self.release = asyncio.Event()
        self.loading = asyncio.Event()
        self.loads: list[str] = []

    async def load(self, label: str) -> None:
        self.loads.append(label)
        if label in self.slow:
            self.loading.set()
            await self.release.wait()
        await super().load(label)


@contextlib.asynccontextmanager
async def gated_worker(
    peer: ProtocolPeer, engine: GatedEngine, slots: int = 4, capacity: int = 2
) -> AsyncIterator[Worker]:
    config = Config(
        dispatcher_url=peer.url,
        worker_id="w-slots",
        capacity=capacity,
        slots=slots,
        engine="simulated",
        reconnect_max_backoff_s=0.5,
        shutdown_timeout_s=10,
    )
    worker = Worker(config, engine=engine)
    job = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        engine.release.set()
        worker.request_stop()
        await asyncio.wait_for(job, scaled(30))


async def test_hit_is_not_delayed_by_a_slow_load_of_another_label() -> None:
    """While label B loads (held open), a task on the loaded label A runs and answers; B's
    task answers only after its load is released."""
    engine = GatedEngine(slow={"b"})
    async with protocol_peer() as peer, gated_worker(peer, engine):
        await peer.session(0)
        await peer.task("a1", "a")
        assert (await peer.result()).label_miss
        await peer.task("b1", "b")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await peer.task("a2", "a")
        hit = await peer.result()
        # The hit answered while B's load is still pending: nothing waited behind it.
        assert (hit.task_id, hit.ok, hit.label_miss) == ("a2", True, False)
        assert not engine.release.is_set()
        engine.release.set()
        miss = await peer.result()
        assert (miss.task_id, miss.ok, miss.label_miss) == ("b1", True, True)
        assert sorted(miss.labels_loaded) == ["a", "b"]


async def test_tasks_for_a_loading_label_share_its_one_load() -> None:
    """A second task for a label being loaded waits for that load, as a hit: one load only."""
    engine = GatedEngine(slow={"b"})
    async with protocol_peer() as peer, gated_worker(peer, engine):
        await peer.session(0)
        await peer.task("b1", "b")
        await asyncio.wait_for(engine.loading.wait(), scaled(10))
        await peer.task("b2", "b")
        await peer.task("c1", "c")
        first = await peer.result()
        assert (first.task_id, first.ok, first.label_miss) == ("c1", True, True)
        engine.release.set()
        results = {r.task_id: r for r in [await peer.result(), await peer.result()]}
        assert results["b1"].ok and results["b1"].label_miss
        assert results["b2"].ok and not results["b2"].label_miss
        assert engine.loads == ["b", "c"]


async def test_cancelled_waiter_leaves_the_load_running_for_the_next() -> None:
    """The task that started a load is cancelled while it loads: the load still completes,
    its hold is given back, and the label can be evicted afterwards."""
    engine = GatedEngine(slow={"b"})
    await engine.start()
    manager = ModelManager(engine, capacity=1)

    async def use_b() -> None:
        async with manager.use("b"):
            pass

    first = asyncio.create_task(use_b())
    await asyncio.wait_for(engine.loading.wait(), scaled(10))
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    engine.release.set()
    await asyncio.wait_for(asyncio.gather(*manager.jobs), scaled(10))
    assert manager.cache.ready == ["b"] and manager.cache.entries["b"].in_use == 0
    async with manager.use("c") as outcome:
        assert outcome.miss and outcome.evicted == ["b"]
    assert engine.loads == ["b", "c"]


async def test_slots_bound_the_tasks_running_at_once() -> None:
    """With slots 2, a third task on a held label is answered BUSY at once while two run (the
    worker queues nothing: its dispatcher places the task elsewhere, docs/architecture.md
    §6.6); once a slot is free the next task runs."""
    engine = GatedEngine(slow=set())
    async with protocol_peer() as peer, gated_worker(peer, engine, slots=2) as worker:
        await peer.session(0)
        for task_id in ("r1", "r2", "r3"):
            await peer.task(task_id, "a", params='{"run_ms": 100}')
        busy = await peer.result()
        assert (busy.task_id, busy.ok, busy.error_code) == ("r3", False, pb.BUSY)
        results = [await peer.result() for _ in range(2)]
        assert sorted(r.task_id for r in results) == ["r1", "r2"] and all(r.ok for r in results)
        await peer.task("r4", "a")
        assert (await peer.result()).task_id == "r4"
        assert (worker.busy_answers, worker.tasks_run) == (1, 3)
