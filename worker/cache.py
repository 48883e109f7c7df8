"""The model cache: which labels a worker holds, in which state, and what to evict.

Pure bookkeeping, no I/O: the runtime asks `plan_load` what to evict, performs the
engine calls, and reports each step back (`begin_load`, `finish_load`, ...). Every
state change goes through `_transition`, which refuses the moves the state machine
does not allow:

    (absent) --begin_load--> LOADING --finish_load--> READY --begin_unload--> UNLOADING
        ^                       |                                                 |
        +------fail_load--------+-------------------finish_unload-----------------+

A label counts against `capacity` in every state (an unloading model still holds its
memory until the engine says it is gone).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# CacheFullError lives in the error tree; callers may keep importing it from here.
from worker.errors import CacheFullError, ConfigError, IllegalTransitionError


class ModelState(enum.Enum):
    """Lifecycle of one label on this worker."""

    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"


@dataclass
class Entry:
    """One label held by the cache."""

    label: str
    state: ModelState
    last_used: int = 0
    in_use: int = 0


@dataclass
class LabelCost:
    """Moving averages of one label's load and run times (milliseconds)."""

    load_ms: float = 0.0
    run_ms: float = 0.0
    loads: int = 0
    runs: int = 0

    def record_load(self, ms: float, alpha: float = 0.3) -> None:
        self.load_ms = ms if self.loads == 0 else (1 - alpha) * self.load_ms + alpha * ms
        self.loads += 1

    def record_run(self, ms: float, alpha: float = 0.3) -> None:
        self.run_ms = ms if self.runs == 0 else (1 - alpha) * self.run_ms + alpha * ms
        self.runs += 1


_ALLOWED: dict[ModelState | None, set[ModelState | None]] = {
    None: {ModelState.LOADING},
    ModelState.LOADING: {ModelState.READY, None},
    ModelState.READY: {ModelState.UNLOADING},
    ModelState.UNLOADING: {None},
}


@dataclass
class ModelCache:
    """Holds at most `capacity` labels; evicts the dispatcher's hint first, then LRU."""

    capacity: int
    entries: dict[str, Entry] = field(default_factory=dict)
    costs: dict[str, LabelCost] = field(default_factory=dict)
    misses: int = 0
    hits: int = 0
    _clock: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {self.capacity}")

    # -- queries -------------------------------------------------------------

    def state(self, label: str) -> ModelState | None:
        """The label's state, or None when the cache does not hold it."""
        entry = self.entries.get(label)
        return entry.state if entry else None

    def labels(self, state: ModelState) -> list[str]:
        """Labels in `state`, least recently used first."""
        chosen = [e for e in self.entries.values() if e.state is state]
        return [e.label for e in sorted(chosen, key=lambda e: e.last_used)]

    @property
    def ready(self) -> list[str]:
        """Labels ready to run, least recently used first."""
        return self.labels(ModelState.READY)

    # -- decisions -----------------------------------------------------------

    def plan_load(self, label: str, evict_hint: Sequence[str] = ()) -> list[str]:
        """Labels to evict so that `label` fits; empty when it is held or there is room.

        Victims are READY labels not in use: first those named in `evict_hint` (in
        the hint's order), then the least recently used. Raises CacheFullError when
        not enough of them exist.
        """
        if label in self.entries:
            return []
        needed = len(self.entries) + 1 - self.capacity
        if needed <= 0:
            return []
        evictable = [
            e for e in self.entries.values() if e.state is ModelState.READY and e.in_use == 0
        ]
        by_label = {e.label: e for e in evictable}
        victims: list[str] = []
        for hinted in evict_hint:
            if hinted in by_label and hinted not in victims:
                victims.append(hinted)
        for entry in sorted(evictable, key=lambda e: e.last_used):
            if entry.label not in victims:
                victims.append(entry.label)
        if len(victims) < needed:
            raise CacheFullError(
                f"cannot make room for {label!r}: {needed} eviction(s) needed, "
                f"{len(victims)} label(s) evictable"
            )
        return victims[:needed]

    # -- state changes -------------------------------------------------------

    def _transition(self, label: str, new: ModelState | None) -> None:
        old = self.state(label)
        if new not in _ALLOWED[old]:
            old_name = old.value if old else "absent"
            new_name = new.value if new else "absent"
            raise IllegalTransitionError(f"label {label!r}: {old_name} -> {new_name} not allowed")
        if new is None:
            del self.entries[label]
        elif old is None:
            self.entries[label] = Entry(label, new, last_used=self._tick())
        else:
            self.entries[label].state = new

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def begin_load(self, label: str) -> None:
        """The engine starts loading `label`; counts a miss."""
        self._transition(label, ModelState.LOADING)
        self.misses += 1

    def finish_load(self, label: str, load_ms: float) -> None:
        """The load succeeded after `load_ms`."""
        self._transition(label, ModelState.READY)
        self.touch(label)
        self.costs.setdefault(label, LabelCost()).record_load(load_ms)

    def fail_load(self, label: str) -> None:
        """The load failed; the label is gone."""
        self._transition(label, None)

    def begin_unload(self, label: str) -> None:
        """The engine starts unloading `label`; refuses one that is in use."""
        entry = self.entries.get(label)
        if entry is not None and entry.in_use:
            raise IllegalTransitionError(f"label {label!r}: ready -> unloading while in use")
        self._transition(label, ModelState.UNLOADING)

    def finish_unload(self, label: str) -> None:
        """The engine confirmed the label's memory is free."""
        self._transition(label, None)

    def touch(self, label: str) -> None:
        """Mark `label` as just used (LRU order)."""
        self.entries[label].last_used = self._tick()

    def acquire(self, label: str) -> None:
        """A task starts running on `label` (READY only); counts a hit is up to the caller."""
        entry = self.entries.get(label)
        if entry is None or entry.state is not ModelState.READY:
            state = entry.state.value if entry else "absent"
            raise IllegalTransitionError(f"label {label!r}: cannot run while {state}")
        entry.in_use += 1
        self.touch(label)

    def release(self, label: str) -> None:
        """A task on `label` finished."""
        entry = self.entries.get(label)
        if entry is None or entry.in_use == 0:
            raise IllegalTransitionError(f"label {label!r}: released more often than acquired")
        entry.in_use -= 1

    def record_run(self, label: str, run_ms: float) -> None:
        """Feed a run time into the label's moving average."""
        self.costs.setdefault(label, LabelCost()).record_run(run_ms)

    def clear(self) -> list[str]:
        """Forget every label (the engine lost them, e.g. tritonserver restarted)."""
        gone = list(self.entries)
        self.entries.clear()
        return gone

    def adopt(self, labels: Iterable[str]) -> None:
        """Record labels the engine already holds (READY) at start-up."""
        for label in labels:
            if label not in self.entries:
                self._transition(label, ModelState.LOADING)
                self._transition(label, ModelState.READY)
