"""What the dispatcher knows about its workers, indexed so routing never scans them all.

Plain data, no I/O: the websocket layer feeds it (Hello, TaskResult, LabelsChanged,
disconnects) and the routing policy reads it. Indexes kept up to date on every change:

- `holders(label)`: ready workers holding `label` (loaded, or loading for a task sent there);
- `idle_holders(label)`: those of them with a free task slot;
- `idle`: ready workers with a free task slot;
- `idle_with_room`: idle workers that can load one more label without evicting.

Every update touches one worker and costs O(its capacity); every lookup is O(1).

With several dispatchers (docs/architecture.md §6.6) a worker's slots are shared: its free
slots here are its slots less this dispatcher's tasks on it (`in_flight`, counted as they are
sent) less the slots its last report said the other dispatchers' tasks take
(`busy_elsewhere`); a worker that answered BUSY counts as full until it reports again.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dispatcher.errors import RegistryError
from proto import smartrouting_pb2 as pb

__all__ = ["IndexedSet", "Registry", "RegistryError", "WorkerRecord", "WorkerState"]


class WorkerState(enum.Enum):
    """Lifecycle of a connected worker."""

    READY = "ready"  # said Hello, takes tasks
    SUSPENDED = "suspended"  # kept failing or timing out: no new tasks for a cool-down
    DRAINING = "draining"  # said Goodbye or was sent Drain: no new tasks
    GONE = "gone"  # disconnected; kept by nobody

    def can_become(self, new: WorkerState) -> bool:
        return new in _TRANSITIONS[self]


_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.READY: frozenset({WorkerState.SUSPENDED, WorkerState.DRAINING, WorkerState.GONE}),
    WorkerState.SUSPENDED: frozenset({WorkerState.READY, WorkerState.DRAINING, WorkerState.GONE}),
    WorkerState.DRAINING: frozenset({WorkerState.GONE}),
    WorkerState.GONE: frozenset(),
}


class IndexedSet:
    """A set of strings with O(1) add, discard, membership and uniform random choice."""

    __slots__ = ("_items", "_pos")

    def __init__(self, items: Iterable[str] = ()) -> None:
        self._items: list[str] = []
        self._pos: dict[str, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: str) -> None:
        if item not in self._pos:
            self._pos[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        pos = self._pos.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._pos[last] = pos

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def first(self) -> str | None:
        """Some member (the same one until the set changes), or None."""
        return self._items[0] if self._items else None

    def first_not_in(self, excluded: set[str] | frozenset[str]) -> str | None:
        """Some member not in `excluded`, or None; O(len(excluded)) at most."""
        if not excluded:
            return self.first()
        for item in self._items:
            if item not in excluded:
                return item
        return None

    def choice(self, rng: random.Random) -> str | None:
        """A uniformly random member, or None."""
        return self._items[rng.randrange(len(self._items))] if self._items else None

    def sample(self, rng: random.Random, n: int) -> list[str]:
        """Up to `n` distinct members drawn uniformly at random, in O(n).

        Uniform on purpose: members that changed last move around in the list (see
        `discard`), so a slice of it would favour the workers that just became idle.
        """
        size = len(self._items)
        if size <= n:
            return list(self._items)
        return [self._items[i] for i in rng.sample(range(size), n)]


@dataclass
class WorkerRecord:
    """One connected worker: its limits, labels and running tasks."""

    worker_id: str
    capacity: int = 1
    slots: int = 1
    engine: str = ""
    device: str = ""
    task_types: tuple[str, ...] = ()
    state: WorkerState = WorkerState.READY
    #: Labels held (loaded or loading) -> last time a task used them (monotonic seconds).
    labels: dict[str, float] = field(default_factory=dict)
    #: Labels the worker is loading (a subset of `labels`).
    loading: set[str] = field(default_factory=set)
    #: Running tasks: task id -> label.
    in_flight: dict[str, str] = field(default_factory=dict)
    connected_at: float = 0.0
    #: Failures and soft timeouts in a row (a success resets it); the circuit breaker reads it.
    failures: int = 0
    #: Models the worker can serve (Hello.servable); None: any label (the simulated engine).
    servable: frozenset[str] | None = None
    #: Slots taken by other dispatchers' tasks, as the worker last reported (Hello, Occupancy).
    busy_elsewhere: int = 0
    #: It answered BUSY: full until its next report or result says a slot was freed.
    saturated: bool = False

    @classmethod
    def from_hello(cls, hello: pb.Hello, now: float) -> WorkerRecord:
        """The record of a worker that just said Hello."""
        return cls(
            worker_id=hello.worker_id,
            capacity=hello.capacity or 1,
            slots=hello.slots or 1,
            engine=hello.engine,
            device=hello.device,
            task_types=tuple(hello.task_types),
            connected_at=now,
            servable=frozenset(hello.servable) if hello.servable_only else None,
            busy_elsewhere=hello.slots_in_use_elsewhere,
        )

    @property
    def free_slots(self) -> int:
        # Our tasks are counted as sent, the others' as reported: neither is counted twice,
        # since a worker reports to each dispatcher only the slots of the other ones.
        if self.saturated:
            return 0
        return max(0, self.slots - len(self.in_flight) - self.busy_elsewhere)

    @property
    def is_idle(self) -> bool:
        """Ready and with a free task slot."""
        return self.state is WorkerState.READY and self.free_slots > 0

    @property
    def has_room(self) -> bool:
        """Can load one more label without evicting."""
        return len(self.labels) < self.capacity


class Registry:
    """Workers by id plus the indexes routing decisions read."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerRecord] = {}
        self._holders: dict[str, set[str]] = {}
        self._idle_holders: dict[str, IndexedSet] = {}
        self.idle = IndexedSet()
        self.idle_with_room = IndexedSet()

    # ---- lookups ------------------------------------------------------------------------

    def get(self, worker_id: str) -> WorkerRecord:
        try:
            return self.workers[worker_id]
        except KeyError:
            raise RegistryError(f"unknown worker {worker_id!r}") from None

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self.workers

    def __len__(self) -> int:
        return len(self.workers)

    def holders(self, label: str) -> set[str]:
        """Workers holding `label` (do not mutate)."""
        return self._holders.get(label, _EMPTY)

    def idle_holders(self, label: str) -> IndexedSet:
        """Workers holding `label` with a free slot (do not mutate)."""
        return self._idle_holders.get(label, _EMPTY_INDEXED)

    def copies(self, label: str) -> int:
        """How many ready workers hold `label`."""
        return len(self._holders.get(label, _EMPTY))

    def holder_slots(self, label: str) -> int:
        """Task slots of the ready workers holding `label` (O(holders))."""
        holders = self._holders.get(label, _EMPTY)
        return sum(self.workers[wid].slots for wid in holders)

    def held_labels(self) -> frozenset[str]:
        """Every label some ready worker holds."""
        return frozenset(self._holders)

    def preload(self, worker_id: str, label: str, evict: Iterable[str], now: float) -> None:
        """Record a Preload sent to a worker: `evict` goes, `label` is held (loading)."""
        record = self.get(worker_id)
        self._unindex(record)
        for old in evict:
            if old != label and old in record.labels and not self._in_use(record, old):
                self._drop_label(record, old)
        if label not in record.labels:
            self._add_label(record, label, now)
            record.loading.add(label)
        self._reindex(record)

    def labels(self) -> dict[str, list[str]]:
        """Label -> sorted worker ids holding it (the /labels answer)."""
        return {label: sorted(ids) for label, ids in sorted(self._holders.items()) if ids}

    # ---- changes ------------------------------------------------------------------------

    def add(self, record: WorkerRecord, labels: Iterable[str] = (), now: float = 0.0) -> None:
        """Register a worker that said Hello, with the labels it already holds."""
        if record.worker_id in self.workers:
            raise RegistryError(f"worker {record.worker_id!r} is already registered")
        record.capacity = max(1, record.capacity)
        record.slots = max(1, record.slots)
        record.busy_elsewhere = min(max(0, record.busy_elsewhere), record.slots)
        self.workers[record.worker_id] = record
        for label in labels:
            self._add_label(record, label, now)
        self._reindex(record)

    def remove(self, worker_id: str) -> WorkerRecord:
        """Forget a worker; its labels leave the indexes. Returns the record (in-flight kept)."""
        record = self.get(worker_id)
        self._unindex(record)
        for label in list(record.labels):
            self._drop_label(record, label)
        record.state = WorkerState.GONE
        del self.workers[worker_id]
        return record

    def set_state(self, worker_id: str, state: WorkerState) -> None:
        """Move a worker along its lifecycle; an illegal change raises."""
        record = self.get(worker_id)
        if record.state is state:
            return
        if not record.state.can_become(state):
            raise RegistryError(
                f"worker {worker_id!r} cannot go from {record.state.value} to {state.value}"
            )
        record.state = state
        for label in record.labels:
            if state is WorkerState.READY:
                self._holders.setdefault(label, set()).add(record.worker_id)
            else:
                # A worker that takes no tasks: nobody should wait for it as a holder.
                self._unhold(record.worker_id, label)
        self._reindex(record)

    def assign(
        self, worker_id: str, task_id: str, label: str, evict: Iterable[str] = (), now: float = 0.0
    ) -> None:
        """Record a task sent to a worker; the label counts as held (loading on a miss)."""
        record = self.get(worker_id)
        if task_id in record.in_flight:
            raise RegistryError(f"task {task_id!r} is already on worker {worker_id!r}")
        self._unindex(record)
        for old in evict:
            if old != label and old in record.labels and not self._in_use(record, old):
                self._drop_label(record, old)
        if label not in record.labels:
            self._add_label(record, label, now)
            record.loading.add(label)
        record.labels[label] = now
        record.in_flight[task_id] = label
        self._reindex(record)

    def finish(self, worker_id: str, task_id: str) -> str | None:
        """A task left its worker (result or cancel); returns its label, None if unknown."""
        record = self.workers.get(worker_id)
        if record is None:
            return None
        label = record.in_flight.pop(task_id, None)
        if label is not None:
            record.loading.discard(label)
        self._reindex(record)
        return label

    def set_busy_elsewhere(self, worker_id: str, slots_in_use: int) -> None:
        """The worker reported the slots its other dispatchers' tasks take (Occupancy)."""
        record = self.get(worker_id)
        record.busy_elsewhere = min(max(0, slots_in_use), record.slots)
        record.saturated = False
        self._reindex(record)

    def set_saturated(self, worker_id: str, saturated: bool) -> None:
        """The worker answered BUSY (True), or freed a slot of ours (False)."""
        record = self.workers.get(worker_id)
        if record is None or record.saturated is saturated:
            return
        record.saturated = saturated
        self._reindex(record)

    def set_labels(
        self,
        worker_id: str,
        loaded: Iterable[str],
        loading: Iterable[str] = (),
        now: float = 0.0,
    ) -> None:
        """Replace a worker's labels with its own report (full state, not a delta).

        Labels of tasks still running there stay held: the report may predate their load.
        """
        record = self.get(worker_id)
        loaded_set = set(loaded)
        loading_set = set(loading)
        pending = {lbl for lbl in record.in_flight.values() if lbl not in loaded_set}
        wanted = loaded_set | loading_set | pending
        self._unindex(record)
        for label in list(record.labels):
            if label not in wanted:
                self._drop_label(record, label)
        for label in wanted:
            if label not in record.labels:
                self._add_label(record, label, now)
        record.loading = (loading_set | pending) - loaded_set
        self._reindex(record)

    # ---- index upkeep -------------------------------------------------------------------

    def _in_use(self, record: WorkerRecord, label: str) -> bool:
        return label in record.in_flight.values()

    def _add_label(self, record: WorkerRecord, label: str, now: float) -> None:
        record.labels[label] = now
        if record.state is WorkerState.READY:
            self._holders.setdefault(label, set()).add(record.worker_id)

    def _unhold(self, worker_id: str, label: str) -> None:
        holders = self._holders.get(label)
        if holders is not None:
            holders.discard(worker_id)
            if not holders:
                del self._holders[label]

    def _drop_label(self, record: WorkerRecord, label: str) -> None:
        record.labels.pop(label, None)
        record.loading.discard(label)
        self._unhold(record.worker_id, label)
        idle = self._idle_holders.get(label)
        if idle is not None:
            idle.discard(record.worker_id)
            if not idle:
                del self._idle_holders[label]

    def _unindex(self, record: WorkerRecord) -> None:
        wid = record.worker_id
        self.idle.discard(wid)
        self.idle_with_room.discard(wid)
        for label in record.labels:
            idle = self._idle_holders.get(label)
            if idle is not None:
                idle.discard(wid)
                if not idle:
                    del self._idle_holders[label]

    def _reindex(self, record: WorkerRecord) -> None:
        self._unindex(record)
        if record.worker_id not in self.workers or not record.is_idle:
            return
        wid = record.worker_id
        self.idle.add(wid)
        if record.has_room:
            self.idle_with_room.add(wid)
        for label in record.labels:
            self._idle_holders.setdefault(label, IndexedSet()).add(wid)


_EMPTY: set[str] = set()
_EMPTY_INDEXED = IndexedSet()
