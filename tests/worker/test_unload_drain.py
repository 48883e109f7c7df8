"""The dispatcher's Unload drains: tasks running on the label finish first, and a load of it
in progress ends first (`ModelManager.unload`, used when a model is deleted)."""

from __future__ import annotations

import asyncio

from tests.support import scaled, until
from worker.engines.simulated import SimulatedEngine
from worker.models import ModelManager


class RecordingEngine(SimulatedEngine):
    """Simulated engine recording unloads; loads wait for `release`."""

    def __init__(self) -> None:
        super().__init__(load_ms=1, load_stddev_ms=0, run_ms=1, run_stddev_ms=0, seed=1)
        self.release = asyncio.Event()
        self.release.set()
        self.unloads: list[str] = []

    async def load(self, label: str) -> None:
        await self.release.wait()
        await super().load(label)

    async def unload(self, label: str) -> None:
        self.unloads.append(label)
        await super().unload(label)


async def test_unload_waits_for_the_tasks_using_the_label() -> None:
    engine = RecordingEngine()
    await engine.start()
    changes: list[str] = []
    manager = ModelManager(engine, capacity=2, on_change=changes.append)
    finished = asyncio.Event()

    async def task() -> None:
        async with manager.use("m"):
            await finished.wait()

    running = asyncio.create_task(task())
    await until(lambda: manager.cache.ready == ["m"], "m ready", timeout=5)
    unload = asyncio.create_task(manager.unload("m"))
    await asyncio.sleep(0.05)  # give the unload every chance to run early (it must not)
    assert not unload.done() and engine.unloads == []
    finished.set()
    assert await asyncio.wait_for(unload, scaled(5)) is True
    await running
    assert engine.unloads == ["m"] and manager.cache.ready == []
    assert changes == ["unloaded m"]
    await engine.stop()


async def test_unload_waits_for_a_load_in_progress_and_ignores_an_absent_label() -> None:
    engine = RecordingEngine()
    await engine.start()
    manager = ModelManager(engine, capacity=2)
    assert await manager.unload("never-loaded") is False
    engine.release.clear()
    load = asyncio.create_task(manager.preload("m"))
    await until(lambda: manager.cache.state("m") is not None, "m known", timeout=5)
    unload = asyncio.create_task(manager.unload("m"))
    await asyncio.sleep(0.05)
    assert not unload.done()
    engine.release.set()
    await load
    assert await asyncio.wait_for(unload, scaled(5)) is True
    assert engine.unloads == ["m"] and manager.cache.state("m") is None
    await engine.stop()
