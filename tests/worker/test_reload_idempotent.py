"""The dispatcher's Reload is idempotent (`ModelManager.reload`): every dispatcher a worker is
linked to sends the Reload of a publish, and the worker loads each version once."""

from __future__ import annotations

import asyncio

from tests.support import scaled
from worker.engines.simulated import SimulatedEngine
from worker.models import ModelManager


class VersionedEngine(SimulatedEngine):
    """Simulated engine with versions: a reload serves the repository's current version after
    waiting for `release`; every reload is recorded."""

    def __init__(self) -> None:
        super().__init__(load_ms=1, load_stddev_ms=0, run_ms=1, run_stddev_ms=0, seed=1)
        self.repository_version = "1"
        self.serving: dict[str, str] = {}
        self.reloads: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def load(self, label: str) -> None:
        await super().load(label)
        self.serving[label] = self.repository_version

    async def reload(self, label: str) -> None:
        self.reloads.append((label, self.repository_version))
        await self.release.wait()
        self.serving[label] = self.repository_version

    def model_version(self, label: str) -> str:
        return self.serving.get(label, "")


async def test_reload_loads_each_version_once_even_when_told_at_once_by_two() -> None:
    engine = VersionedEngine()
    await engine.start()
    manager = ModelManager(engine, capacity=2)
    await manager.preload("m")
    assert await manager.reload("m", "1") is False  # already serving it
    engine.repository_version = "2"
    engine.release.clear()
    # Two dispatchers' Reloads of v2 arrive while the first is still loading.
    first = asyncio.create_task(manager.reload("m", "2"))
    second = asyncio.create_task(manager.reload("m", "2"))
    await asyncio.sleep(0)  # both have started and wait
    engine.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), scaled(5)) == [True, False]
    assert engine.reloads == [("m", "2")] and engine.model_version("m") == "2"
    assert await manager.reload("m", "2") is False  # a late one (a catalogue sync)

    engine.repository_version = "1"  # a rollback is a version too
    assert await manager.reload("m", "1") is True
    assert await manager.reload("m", "") is True  # no version said: reloaded
    assert await manager.reload("absent", "3") is False  # not held: its next load is new
    assert engine.reloads == [("m", "2"), ("m", "1"), ("m", "1")]
    await engine.stop()
