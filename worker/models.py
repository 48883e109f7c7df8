"""Applies the model cache's decisions to an engine (the I/O side of worker/cache.py).

Tasks run in several slots at once, so no lock is held across an engine call: each load
or unload is a job of its own, one per label at a time. Deciding is synchronous (no
`await` between reading the cache and reserving in it, so two decisions never see the
same state): a task finds its label READY and takes it at once (a hit never waits for
anything); finds it LOADING or UNLOADING and waits for that label's job only; or plans a
load, reserving the label (LOADING) and its victims (UNLOADING) in the same step, then
starts the job and waits for it. When nothing can be evicted (every held label is in
use), it waits for the next release or finished job and decides again.

Jobs are tasks owned here (`jobs`), not by the caller: a caller cancelled while waiting
(the dispatcher's Cancel, a shutdown) leaves the load running for whoever waits next.

Every load, failed load, eviction and unload is told to a `ModelEvents` listener (the
worker's logs and metrics, worker/observability.py) after it happened, with its duration and
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.cache import CacheFullError, ModelCache, ModelState
from worker.engines.base import Engine
from worker.errors import EngineUnavailableError

log = logging.getLogger(__name__)

#: Why a label was loaded: for a task that needed it (a miss), or ahead of demand.
LOAD_FOR_TASK, LOAD_PRELOAD = "task", "preload"
#: Why a label was unloaded: to make room for another (an eviction), because the dispatcher
#: asked, at shutdown, or because the engine lost it (e.g. tritonserver died).
UNLOAD_EVICTION, UNLOAD_REQUESTED, UNLOAD_SHUTDOWN, UNLOAD_ENGINE_LOST = (
    "eviction",
    "dispatcher",
    "shutdown",
    "engine_lost",
)


class ModelEvents(Protocol):
    """Told what the manager did, after it happened (never calls back into the manager)."""

    def model_loaded(self, label: str, version: str, load_ms: float, reason: str) -> None:
        """`label` is ready; `load_ms` includes the evictions it waited for."""

    def model_load_failed(self, label: str, load_ms: float, error: Exception) -> None:
        """Loading `label` failed with `error`."""

    def model_evicted(self, label: str, for_label: str, hinted: bool) -> None:
        """`label` is being unloaded to make room for `for_label`; `hinted`: the dispatcher
        named it in the task's evict hint (else it was the least recently used)."""

    def model_unloaded(self, label: str, reason: str, unload_ms: float) -> None:
        """`label` is gone (one of the UNLOAD_* reasons)."""


class NoModelEvents:
    """The listener that ignores everything (tests and tools that need no logs)."""

    def model_loaded(self, label: str, version: str, load_ms: float, reason: str) -> None:
        return None

    def model_load_failed(self, label: str, load_ms: float, error: Exception) -> None:
        return None

    def model_evicted(self, label: str, for_label: str, hinted: bool) -> None:
        return None

    def model_unloaded(self, label: str, reason: str, unload_ms: float) -> None:
        return None


@dataclass
class LoadOutcome:
    """What making a label ready cost: whether it was a miss, the load time, the victims."""

    miss: bool
    load_ms: float = 0.0
    evicted: list[str] = field(default_factory=list)


def _consume(job: asyncio.Task[Any]) -> None:
    # A job whose waiters were all cancelled still finishes; its error is logged there.
    if not job.cancelled():
        job.exception()


class ModelManager:
    """Loads and unloads labels on the engine, keeping the cache in step; see the module doc."""

    def __init__(
        self,
        engine: Engine,
        capacity: int,
        on_change: Callable[[str], None] | None = None,
        events: ModelEvents | None = None,
    ) -> None:
        self.engine = engine
        self.cache = ModelCache(capacity)
        self.on_change = on_change
        self.events: ModelEvents = events or NoModelEvents()
        #: The load or unload in progress per label.
        self._jobs: dict[str, asyncio.Task[Any]] = {}
        # Set (and replaced) whenever a label is released or a job ends: waiters for room
        # decide again.
        self._changed = asyncio.Event()
        # Bumped whenever the engine loses every label; a load or a hold that spans it is void.
        self._generation = 0
        # One reload at a time: every dispatcher sends its Reload of a publish, and the
        # second must see the version the first loaded (reloads are rare; none waits long).
        self._reload_lock = asyncio.Lock()
        engine.on_labels_lost = self._labels_lost

    @property
    def jobs(self) -> list[asyncio.Task[Any]]:
        """Loads and unloads in progress (the runtime cancels them if it is cancelled)."""
        return list(self._jobs.values())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _labels_lost(self, labels: list[str], reason: str) -> None:
        self._generation += 1
        gone = self.cache.clear()
        log.warning("engine lost labels %s: %s", sorted(set(gone) | set(labels)), reason)
        for label in sorted(set(gone) | set(labels)):
            self.events.model_unloaded(label, UNLOAD_ENGINE_LOST, 0.0)
        self._notify()
        if self.on_change is not None:
            self.on_change(reason)

    # -- jobs ----------------------------------------------------------------

    def _start(self, label: str, job: asyncio.Task[Any]) -> asyncio.Task[Any]:
        self._jobs[label] = job

        def done(finished: asyncio.Task[Any]) -> None:
            if self._jobs.get(label) is finished:
                del self._jobs[label]
            _consume(finished)
            self._notify()

        job.add_done_callback(done)
        return job

    def _start_unload(self, label: str, reason: str) -> asyncio.Task[None]:
        self.cache.begin_unload(label)  # refuses a label in use
        job = asyncio.create_task(
            self._unload(label, self._generation, reason), name=f"unload-{label}"
        )
        self._start(label, job)
        return job

    async def _unload(self, label: str, generation: int, reason: str) -> None:
        started = time.perf_counter()
        try:
            await self.engine.unload(label)
        except Exception:
            log.exception("unloading %r failed; counting it as gone", label)
        finally:
            if generation == self._generation and self.cache.state(label) is ModelState.UNLOADING:
                self.cache.finish_unload(label)
                unload_ms = (time.perf_counter() - started) * 1000.0
                self.events.model_unloaded(label, reason, unload_ms)

    def _start_load(
        self, label: str, victims: list[str], hold: bool, evict_hint: Sequence[str] = ()
    ) -> asyncio.Task[LoadOutcome]:
        # Reserve first, synchronously: the victims are UNLOADING and the label LOADING
        # before anyone else decides, so capacity is never promised twice.
        for victim in victims:
            self.events.model_evicted(victim, label, hinted=victim in evict_hint)
        unloads = [self._start_unload(victim, UNLOAD_EVICTION) for victim in victims]
        self.cache.begin_load(label)
        job = asyncio.create_task(
            self._load(label, victims, unloads, self._generation, hold), name=f"load-{label}"
        )
        self._start(label, job)
        return job

    async def _load(
        self,
        label: str,
        victims: list[str],
        unloads: list[asyncio.Task[None]],
        generation: int,
        hold: bool,
    ) -> LoadOutcome:
        # A miss costs the evictions too: Triton frees an unloaded model's memory ~1.2 s after
        # acknowledging the unload, and the load waits for it. Reporting only the load itself
        # would make misses look cheaper than they are to the dispatcher's wait-or-load choice.
        started = time.perf_counter()
        try:
            if unloads:
                await asyncio.gather(*unloads)
            await self.engine.load(label)
            if generation != self._generation:
                raise EngineUnavailableError(f"engine restarted while loading {label!r}")
        except BaseException as exc:
            if generation == self._generation and self.cache.state(label) is ModelState.LOADING:
                self.cache.fail_load(label)
            if isinstance(exc, Exception):
                failed_ms = (time.perf_counter() - started) * 1000.0
                self.events.model_load_failed(label, failed_ms, exc)
            raise
        load_ms = (time.perf_counter() - started) * 1000.0
        self.cache.finish_load(label, load_ms)
        reason = LOAD_FOR_TASK if hold else LOAD_PRELOAD
        self.events.model_loaded(label, self.engine.model_version(label), load_ms, reason)
        if hold:
            # Taken for the task that asked, in the step that made it READY: were it left
            # free until that task resumes, another waiting for room could evict it first,
            # and two tasks could evict each other's label forever.
            self.cache.acquire(label)
        return LoadOutcome(miss=True, load_ms=load_ms, evicted=victims)

    # -- making a label ready ------------------------------------------------

    async def _ready(self, label: str, evict_hint: Sequence[str], hold: bool) -> LoadOutcome:
        """Make `label` READY; with `hold`, acquire it in the same step (no await between)."""
        self.engine.check_label(label)
        while True:
            state = self.cache.state(label)
            if state is ModelState.READY:
                self.cache.hits += 1
                if hold:
                    self.cache.acquire(label)
                return LoadOutcome(miss=False)
            if state is not None:
                # Someone else's load (or an unload) of this very label: wait for it only.
                # A failed load fails its waiters too; a failed unload never raises.
                job = self._jobs.get(label)
                await (asyncio.shield(job) if job is not None else self._changed.wait())
                continue
            try:
                victims = self.cache.plan_load(label, evict_hint)
            except CacheFullError:
                # Every held label is in use (slots > capacity): wait for a release.
                await self._changed.wait()
                continue
            job = self._start_load(label, victims, hold, evict_hint)
            try:
                return await asyncio.shield(job)
            except asyncio.CancelledError:
                if hold:  # the load goes on; give back the hold it takes for us
                    job.add_done_callback(functools.partial(self._drop_hold, label))
                raise

    def _drop_hold(self, label: str, job: asyncio.Task[LoadOutcome]) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        if self.cache.state(label) is ModelState.READY:
            self.cache.release(label)
        self._notify()

    @contextlib.asynccontextmanager
    async def use(self, label: str, evict_hint: Sequence[str] = ()) -> AsyncIterator[LoadOutcome]:
        """Make `label` ready (loading it on a miss) and hold it for the `with` block."""
        outcome = await self._ready(label, evict_hint, hold=True)
        generation = self._generation
        try:
            yield outcome
        finally:
            # After an engine restart the hold belongs to a cache that was cleared.
            if generation == self._generation and self.cache.state(label) is ModelState.READY:
                self.cache.release(label)
            self._notify()

    async def preload(self, label: str, evict_hint: Sequence[str] = ()) -> LoadOutcome:
        """Load `label` ahead of demand."""
        outcome = await self._ready(label, evict_hint, hold=False)
        if outcome.miss and self.on_change is not None:
            self.on_change(f"preloaded {label}")
        return outcome

    async def reload(self, label: str, version: str) -> bool:
        """The dispatcher's Reload: load the repository's current version of the ready
        `label` in place of the one serving it; whether the engine was asked to.

        Idempotent: every dispatcher the worker is linked to sends the Reload of a publish
        (the publishing one at once, the others from their catalogue sync), so a `version`
        the engine already serves is not loaded again; "" (no version known) always reloads.
        A label that is not ready is left alone (its next load picks the new version up)."""
        async with self._reload_lock:
            if label not in self.cache.ready:
                return False
            if version and self.engine.model_version(label) == version:
                return False
            await self.engine.reload(label)
            return True

    async def unload(self, label: str) -> bool:
        """Unload `label` (the dispatcher's Unload); whether it was unloaded.

        Drains first: tasks running on it finish, a load of it in progress ends, then it
        is unloaded; False when it is (or becomes) absent meanwhile."""
        while True:
            entry = self.cache.entries.get(label)
            if entry is None:
                return False
            if entry.state is ModelState.READY and not entry.in_use:
                break
            await self._changed.wait()  # set on every release and at the end of every job
        await asyncio.shield(self._start_unload(label, UNLOAD_REQUESTED))
        if self.on_change is not None:
            self.on_change(f"unloaded {label}")
        return True

    async def unload_all(self) -> None:
        """Let loads in progress end, then unload every ready label not in use (shutdown)."""
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        jobs = [
            self._start_unload(entry.label, UNLOAD_SHUTDOWN)
            for entry in list(self.cache.entries.values())
            if entry.state is ModelState.READY and not entry.in_use
        ]
        if jobs:
            await asyncio.gather(*jobs)
