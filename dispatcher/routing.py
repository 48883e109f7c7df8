"""The routing policies: pure functions of the registry, the queue and the estimates.

A policy never mutates anything and does no I/O: it reads the state and returns a decision,
which the dispatcher core applies (docs/architecture.md §5). Three questions are asked:

- `place(task, now)`: a task arrives; dispatch it now, or queue it?
- `next_for(worker_id, now)`: a worker has a free slot; which queued task should it take?
- `rescue(now)`: the oldest queued task may be starving; should an idle worker take it?

**Routed** (default): 1) an idle worker holding the label; 2) if every holder is busy, wait
when the expected wait for a holder (learned run time x tasks ahead / holders) is no longer than
the label's learned load time; 3) otherwise load it on an idle worker, preferring one with a
free label slot, else evicting the label with no queued demand used least recently; 4) no idle
worker: queue. A freed worker takes the oldest queued task of a label it holds, unless the
oldest task overall has waited longer than its label's load time (starvation guard).

**Random** (baseline): one FIFO; a random idle worker takes a new task, a freed worker takes the
oldest one, whatever labels it holds.

Lookups go through the registry's indexes; the only loops are over one worker's labels, the
labels with queued tasks, and at most `EVICTION_SAMPLE` idle workers.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Protocol

from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.tasks import TaskQueue, TaskRecord

#: A queued task is starving once it has waited this many times its label's load time.
#: Above 1 so that scheduling jitter on a busy host does not turn a short wait for a holder
#: into a needless second copy of the label (which evicts another label and costs misses).
STARVATION_FACTOR = 2.0

#: Idle workers examined when choosing where to evict a label (bounded, not a scan of all).
EVICTION_SAMPLE = 8


class Reason(enum.Enum):
    """Why a decision was taken (metrics and tests read it)."""

    IDLE_HOLDER = "idle_holder"
    WAIT_FOR_HOLDER = "wait_for_holder"
    LOAD_FREE_SLOT = "load_free_slot"
    LOAD_EVICT = "load_evict"
    NO_IDLE_WORKER = "no_idle_worker"
    STARVATION = "starvation"
    RANDOM = "random"
    RANDOM_FIFO = "random_fifo"


@dataclass(frozen=True)
class Dispatch:
    """Send task `task_id` to `worker_id` now; `evict` goes into the Task's evict_hint."""

    task_id: str
    worker_id: str
    reason: Reason
    miss: bool
    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class Enqueue:
    """Keep the task queued until a worker frees up (or its deadline).

    `recheck_after_s`: ask `rescue` again after this long even if no worker frees up (the
    starvation guard of a task waiting for a busy holder); None: no re-check needed.
    """

    reason: Reason
    recheck_after_s: float | None = None


Decision = Dispatch | Enqueue


class Policy(Protocol):
    """What the dispatcher core asks a routing policy."""

    name: str

    def place(self, task: TaskRecord, now: float) -> Decision: ...

    def next_for(self, worker_id: str, now: float) -> Dispatch | None: ...

    def rescue(self, now: float) -> Dispatch | None: ...


@dataclass
class RoutedPolicy:
    """Label-aware routing (see the module docstring)."""

    registry: Registry
    queue: TaskQueue
    estimates: LabelEstimates
    starvation_factor: float = STARVATION_FACTOR
    name: str = "routed"

    def expected_wait_ms(self, label: str, position: int) -> float:
        """Expected wait for a busy holder of `label` for the `position`-th task of the label.

        Holders work the label's queue in parallel, each task taking the learned run time.
        """
        holders = len(self.registry.holders(label))
        if holders == 0:
            return float("inf")
        return self.estimates.run_ms(label) * position / holders

    def patience_ms(self, label: str) -> float:
        """How long a queued task of `label` waits before it is starving."""
        return self.starvation_factor * self.estimates.load_ms(label)

    def starving(self, task: TaskRecord, now: float) -> bool:
        """Whether `task` has waited longer than `starvation_factor` loads of its label."""
        return (now - task.enqueued_at) * 1000.0 > self.patience_ms(task.label)

    def place(self, task: TaskRecord, now: float) -> Decision:
        label = task.label
        holder = self.registry.idle_holders(label).first()
        if holder is not None:
            return Dispatch(task.task_id, holder, Reason.IDLE_HOLDER, miss=False)
        if self.registry.holders(label):
            position = self.queue.count(label) + 1
            if self.expected_wait_ms(label, position) <= self.estimates.load_ms(label):
                # Just past the patience, so the re-check finds the task starving.
                recheck_s = self.patience_ms(label) / 1000.0 + 0.001
                return Enqueue(Reason.WAIT_FOR_HOLDER, recheck_after_s=recheck_s)
        if not self.registry.idle:
            return Enqueue(Reason.NO_IDLE_WORKER)
        return self._load_anywhere(task) or Enqueue(Reason.NO_IDLE_WORKER)

    def next_for(self, worker_id: str, now: float) -> Dispatch | None:
        worker = self.registry.workers.get(worker_id)
        if worker is None or not worker.is_idle:
            return None
        oldest = self.queue.oldest()
        if oldest is None:
            return None
        if self.starving(oldest, now):
            decision = self._load_on(worker, oldest, Reason.STARVATION)
            if decision is not None:
                return decision
        # The oldest queued task of a label this worker holds: a hit.
        best: TaskRecord | None = None
        for label in worker.labels:
            task = self.queue.oldest_of(label)
            if task is not None and (best is None or task.enqueued_at < best.enqueued_at):
                best = task
        if best is not None:
            return Dispatch(best.task_id, worker_id, Reason.IDLE_HOLDER, miss=False)
        # A label whose holders are gone or too slow to drain its queue: load it here.
        for label in self.queue.labels():
            waiting = self.queue.count(label)
            if self.expected_wait_ms(label, waiting) > self.estimates.load_ms(label):
                task = self.queue.oldest_of(label)
                assert task is not None
                decision = self._load_on(worker, task, None)
                if decision is not None:
                    return decision
        return None

    def rescue(self, now: float) -> Dispatch | None:
        oldest = self.queue.oldest()
        if oldest is None or not self.starving(oldest, now) or not self.registry.idle:
            return None
        holder = self.registry.idle_holders(oldest.label).first()
        if holder is not None:
            return Dispatch(oldest.task_id, holder, Reason.STARVATION, miss=False)
        decision = self._load_anywhere(oldest)
        if decision is None:
            return None
        return Dispatch(
            decision.task_id, decision.worker_id, Reason.STARVATION, True, decision.evict
        )

    # ---- helpers ------------------------------------------------------------------------

    def victim(self, worker: WorkerRecord, keep: str) -> str | None:
        """The label `worker` should evict to make room for `keep`: no queued demand first,
        then least recently used; never one a running task uses. None if nothing can go."""
        in_use = set(worker.in_flight.values())
        best: str | None = None
        best_key: tuple[bool, float] | None = None
        for label, last_used in worker.labels.items():
            if label == keep or label in in_use:
                continue
            key = (self.queue.count(label) > 0, last_used)
            if best_key is None or key < best_key:
                best, best_key = label, key
        return best

    def _load_on(
        self, worker: WorkerRecord, task: TaskRecord, reason: Reason | None
    ) -> Dispatch | None:
        """Send `task` to `worker`, loading its label there if needed."""
        if task.label in worker.labels:
            return Dispatch(task.task_id, worker.worker_id, reason or Reason.IDLE_HOLDER, False)
        if worker.has_room:
            return Dispatch(task.task_id, worker.worker_id, reason or Reason.LOAD_FREE_SLOT, True)
        evict = self.victim(worker, task.label)
        if evict is None:
            return None
        return Dispatch(task.task_id, worker.worker_id, reason or Reason.LOAD_EVICT, True, (evict,))

    def _load_anywhere(self, task: TaskRecord) -> Dispatch | None:
        """Load `task`'s label on an idle worker: a free label slot, else the best eviction."""
        roomy = self.registry.idle_with_room.first()
        if roomy is not None:
            return Dispatch(task.task_id, roomy, Reason.LOAD_FREE_SLOT, miss=True)
        best: tuple[tuple[bool, float], str, str] | None = None
        for worker_id in self.registry.idle.head(EVICTION_SAMPLE):
            worker = self.registry.workers[worker_id]
            evict = self.victim(worker, task.label)
            if evict is None:
                continue
            key = (self.queue.count(evict) > 0, worker.labels[evict])
            if best is None or key < best[0]:
                best = (key, worker_id, evict)
        if best is None:
            return None
        return Dispatch(task.task_id, best[1], Reason.LOAD_EVICT, miss=True, evict=(best[2],))


@dataclass
class RandomPolicy:
    """The baseline: one FIFO, any idle worker, labels ignored."""

    registry: Registry
    queue: TaskQueue
    rng: random.Random
    name: str = "random"

    def place(self, task: TaskRecord, now: float) -> Decision:
        if len(self.queue) > 0:
            return Enqueue(Reason.RANDOM_FIFO)  # keep FIFO order: older tasks go first
        worker_id = self.registry.idle.choice(self.rng)
        if worker_id is None:
            return Enqueue(Reason.RANDOM_FIFO)
        miss = task.label not in self.registry.workers[worker_id].labels
        return Dispatch(task.task_id, worker_id, Reason.RANDOM, miss=miss)

    def next_for(self, worker_id: str, now: float) -> Dispatch | None:
        worker = self.registry.workers.get(worker_id)
        oldest = self.queue.oldest()
        if worker is None or not worker.is_idle or oldest is None:
            return None
        miss = oldest.label not in worker.labels
        return Dispatch(oldest.task_id, worker_id, Reason.RANDOM, miss=miss)

    def rescue(self, now: float) -> Dispatch | None:
        return None  # FIFO order already serves the oldest task first


def make_policy(
    name: str,
    registry: Registry,
    queue: TaskQueue,
    estimates: LabelEstimates,
    rng: random.Random | None = None,
    starvation_factor: float = STARVATION_FACTOR,
) -> RoutedPolicy | RandomPolicy:
    """The policy called `name` ("routed" or "random") over the given state."""
    if name == "routed":
        return RoutedPolicy(registry, queue, estimates, starvation_factor)
    if name == "random":
        return RandomPolicy(registry, queue, rng or random.Random())
    raise ValueError(f"unknown policy {name!r}")
