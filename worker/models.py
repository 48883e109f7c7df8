"""Applies the model cache's decisions to an engine (the I/O side of worker/cache.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from worker.cache import CacheFullError, ModelCache, ModelState
from worker.engines.base import Engine
from worker.errors import EngineUnavailableError

log = logging.getLogger(__name__)


@dataclass
class LoadOutcome:
    """What making a label ready cost: whether it was a miss, the load time, the victims."""

    miss: bool
    load_ms: float = 0.0
    evicted: list[str] = field(default_factory=list)


class ModelManager:
    """Loads and unloads labels on the engine one at a time, keeping the cache in step."""

    def __init__(
        self,
        engine: Engine,
        capacity: int,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.cache = ModelCache(capacity)
        self.on_change = on_change
        self._lock = asyncio.Lock()
        # Signalled when a task releases a label, so a load waiting for room can retry.
        self._room = asyncio.Condition(self._lock)
        # Bumped whenever the engine loses every label; a load that spans it failed.
        self._generation = 0
        engine.on_labels_lost = self._labels_lost

    def _labels_lost(self, labels: list[str], reason: str) -> None:
        self._generation += 1
        gone = self.cache.clear()
        log.warning("engine lost labels %s: %s", sorted(set(gone) | set(labels)), reason)
        if self.on_change is not None:
            self.on_change(reason)

    async def _unload(self, label: str) -> None:
        self.cache.begin_unload(label)
        try:
            await self.engine.unload(label)
        except Exception:
            log.exception("unloading %r failed; counting it as gone", label)
        finally:
            if self.cache.state(label) is ModelState.UNLOADING:
                self.cache.finish_unload(label)

    async def _ensure(self, label: str, evict_hint: Sequence[str]) -> LoadOutcome:
        self.engine.check_label(label)
        if self.cache.state(label) is ModelState.READY:
            self.cache.hits += 1
            return LoadOutcome(miss=False)
        victims = self.cache.plan_load(label, evict_hint)
        # A miss costs the evictions too: Triton frees an unloaded model's memory ~1.2 s after
        # acknowledging the unload, and the load waits for it. Reporting only the load itself
        # would make misses look cheaper than they are to the dispatcher's wait-or-load choice.
        started = time.perf_counter()
        for victim in victims:
            await self._unload(victim)
        generation = self._generation
        self.cache.begin_load(label)
        try:
            await self.engine.load(label)
        except BaseException:
            if self.cache.state(label) is ModelState.LOADING:
                self.cache.fail_load(label)
            raise
        if generation != self._generation:
            raise EngineUnavailableError(f"engine restarted while loading {label!r}")
        load_ms = (time.perf_counter() - started) * 1000.0
        self.cache.finish_load(label, load_ms)
        return LoadOutcome(miss=True, load_ms=load_ms, evicted=victims)

    @contextlib.asynccontextmanager
    async def use(self, label: str, evict_hint: Sequence[str] = ()) -> AsyncIterator[LoadOutcome]:
        """Make `label` ready (loading it on a miss) and hold it for the `with` block."""
        async with self._room:
            while True:
                try:
                    outcome = await self._ensure(label, evict_hint)
                    break
                except CacheFullError:
                    # Every held label is in use (slots > capacity): wait for a release.
                    await self._room.wait()
            self.cache.acquire(label)
        try:
            yield outcome
        finally:
            if self.cache.state(label) is ModelState.READY:
                self.cache.release(label)
            async with self._room:
                self._room.notify_all()

    async def preload(self, label: str, evict_hint: Sequence[str] = ()) -> LoadOutcome:
        """Load `label` ahead of demand."""
        async with self._lock:
            outcome = await self._ensure(label, evict_hint)
        if outcome.miss and self.on_change is not None:
            self.on_change(f"preloaded {label}")
        return outcome

    async def unload(self, label: str) -> bool:
        """Unload `label` if it is ready and idle; whether it was unloaded."""
        async with self._lock:
            entry = self.cache.entries.get(label)
            if entry is None or entry.state is not ModelState.READY or entry.in_use:
                return False
            await self._unload(label)
        if self.on_change is not None:
            self.on_change(f"unloaded {label}")
        return True

    async def unload_all(self) -> None:
        """Unload every ready label (shutdown)."""
        async with self._lock:
            for label in self.cache.ready:
                await self._unload(label)
