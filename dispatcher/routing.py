"""The routing policies: pure functions of the registry, the queue, the estimates and demand.

A policy never mutates anything and does no I/O: it reads the state and returns a decision,
which the dispatcher core applies (docs/architecture.md §5). Four questions are asked:

- `place(task, now)`: a task arrives; dispatch it now, or queue it?
- `next_for(worker_id, now)`: a worker has a free slot; which queued task should it take?
- `rescue(now)`: the oldest queued task may be starving; should an idle worker take it?
- `preload(label, now)`: should an idle worker load another copy of `label` before it is
  needed?

**Routed** (default): 1) an idle worker holding the label; 2) if every holder is busy, wait
when the expected wait for a holder (learned run time x tasks ahead / holders) is no longer than
the label's learned load time; 3) otherwise load it on an idle worker (placement, below);
4) no idle worker: queue. A freed worker takes the oldest queued task of a label it holds,
unless the oldest task overall has waited longer than `starvation_factor` loads of its label
(starvation guard; the decision to wait carries the time of that re-check).

**Placement** (where a label is loaded, and what it evicts) reads the demand model
(`dispatcher.demand`: a decayed request rate per label, and the copies each needs). Among an
unbiased random sample of `PLACEMENT_SAMPLE` idle workers (plus as many with a free label slot)
it picks the one where the load costs least:

- evicting a label costs the requests its copy would serve over the next `tau` seconds,
  frequency / copies x tau, where the frequency is the label's share of the recent arrivals
  times the arrival rate (`DemandModel.frequency`: counted in arrivals over memories of 2,000
  and 24,000 and since the last change of the mix that `dispatcher.shift_detector` declared,
  weighed by how well each has been predicting, so a steady Zipf tail is ranked by the long
  counts and a hot set that jumped by the counts since the jump), and nothing when the label has
  more copies than its 10 s rate needs (a surplus copy goes first); the last copy of a label
  with queued work is never evicted, nor a label a running task uses;
- loading blocks the worker's other labels for the load time: each costs the requests its copy
  would have served meanwhile, rate / copies x load time. This keeps new labels away from the
  only copies of hot ones, which is where the p50 latency went with the old rule (16-28% of
  loads landed beside a top-20 label and blocked it for ~270 ms).

The old rule took the first 8 members of the idle index, which are the workers that became
idle last, and evicted by per-worker LRU, so it evicted mid-recency labels (often the only copy
of a hot one); at 200 workers x 2 slots and 1,000 Zipf(1.1) labels it missed more than one
pooled LRU cache of 400 slots. Demand per copy is a frequency with forgetting (like LRFU), which
on Zipf traffic beats recency, and its silence bound lets a shifted hot set go within seconds.

Measured (`python -m benchmark simulate`, 200 workers x 2, 1,000 Zipf(1.1) labels, seeds 1-3,
misses summed; README "Routing at scale"). 72,000 tasks (a minute at 1,200/s): 22,198 /
22,655 / 23,036 at 400 / 800 / 1,200 tasks/s, where W-TinyLFU on one pooled cache of 400 slots
misses 23,325 (-4.8% / -2.9% / -1.2%); the shifting trace (a new hot set every 10 s) 31,964 at
400/s and 27,762 at 1,200/s (one pooled LRU cache: 31,846 and 29,022). 24,000 tasks, where
first loads and learning weigh more: 8,298 / 8,437 / 8,503 (W-TinyLFU 8,303), p50 at 1,200/s
15-20 ms. What keeps a short run near W-TinyLFU is the price of loading: a label being loaded
(~480 ms) holds its slot and cannot be evicted, ~70 of the 400 slots at 1,200/s; even a policy
that knew every label's true probability would lose ~200 misses of 24,000 to that pinning,
which one pooled cache, loading instantly, never pays.

**Cold wait** (`cold_wait_s`; the dispatcher's default 500 ms): W-TinyLFU's admission, paid in
waiting, while waiting pays (`cold_payoff`, `dispatcher.cold_wait`). A label
no worker holds is loaded at once only where the load costs at most `COLD_ADMISSION_RATIO`
(half) of the label's own value (frequency x tau); otherwise its task waits, a freed worker
takes it only where the load is that cheap, and once `cold_wait_s` has passed `rescue` loads
it on the cheapest sampled idle worker, cheap or not. A one-off request then displaces
another one-off label rather than a warm one. Measured (same setting as below, 500 ms, seeds
1-3): 24,000 tasks 7,992 / 7,915 / 7,873 misses at 400 / 800 / 1,200 tasks/s (4-5% below
W-TinyLFU's 8,303; without it 8,298 / 8,437 / 8,503), 72,000 tasks 21,714 / 21,401 / 21,458
(W-TinyLFU 23,325), p50 12-15 ms; the price is the first call of a cold label (seed 1,
1,200/s: p50 of misses 0.95 s instead of 0.50 s, p99 of all tasks 1.18 s instead of 0.73 s).
With it a copy is surplus only beyond one spare (`COLD_WAIT_SURPLUS_MARGIN`), and a freed
worker examines only the `COLD_SCAN_LIMIT` oldest waiting labels, costing itself once for all.
Where labels are worth alike (the reference scenario: 5 uniform labels on 4 slots) a cheap
place almost never frees up, the wait saved 13 of 480 misses and moved the p99 from 0.73 to
1.24 s; so a task is held only while the recent holds have been paying (at least 1 in 10 found
a cheap place), and otherwise 1 in 50 as a probe. Only a held task (`TaskRecord.cold_held`)
waits for a cheap worker; `rescue` loads one whose wait is over for `COLD_WAIT_OVER`, which the
core records as a hold that did not pay.

**Preload** (proactive copies, `Preload` frames): when a label's copies fall short of its
demand and there are more idle workers than queued tasks, an idle worker loads one more copy,
placed by the same costs and only where the new copy is worth more than what it displaces; at
most `max_preload_share` of the idle workers load a preload at once, so a preload never
delays a task that could run now.

**Random** (baseline): one FIFO; a random idle worker takes a new task, a freed worker takes the
oldest one, whatever labels it holds.

Lookups go through the registry's indexes; the only loops are over one worker's labels, the
labels with queued tasks (of those waiting for a cheap place, at most `COLD_SCAN_LIMIT`), and
at most 2 x `PLACEMENT_SAMPLE` sampled idle workers, so a decision costs the same with 10 or
10,000 workers.
"""

from __future__ import annotations

import enum
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from dispatcher.cold_wait import ColdWaitPayoff
from dispatcher.demand import DemandModel
from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.tasks import TaskQueue, TaskRecord

#: A queued task is starving once it has waited this many times its label's load time.
#: Above 1 so that scheduling jitter on a busy host does not turn a short wait for a holder
#: into a needless second copy of the label (which evicts another label and costs misses).
STARVATION_FACTOR = 2.0

#: Idle workers sampled when choosing where to load a label (bounded, not a scan of all).
PLACEMENT_SAMPLE = 16

#: With a cold wait (`cold_wait_s` > 0), a label nobody holds is loaded at once only where the
#: load costs at most this share of the label's own value (its frequency x tau); otherwise its
#: task waits for such a worker. Measured (seed 1, 200 workers x 2, 1,000 Zipf(1.1) labels,
#: 1,200 tasks/s, 24,000 tasks, 500 ms wait): 1.0 gave 2,692 misses (p99 of all tasks 1.13 s),
#: 0.5 gave 2,652 (1.18 s) and 0.25 2,668 (1.19 s): below a half, nothing more is saved.
COLD_ADMISSION_RATIO = 0.5

#: With a cold wait, a freed worker examines at most this many of the labels that wait for a
#: cheap place (oldest first); one further back is loaded by `rescue` when its wait is over.
#: At 1,200 tasks/s ~23 labels wait, and examining every one on every freed worker took a third
#: of a core: the live median at 1,200/s was 45-51 ms on 2 cores. Measured (simulator, 200
#: workers x 2, 1,000 Zipf(1.1) labels, 1,200/s, 24,000 tasks, 500 ms wait, seed 1): all 2,650
#: misses and 7.4 s of CPU, 8 2,674, 4 2,652 and 4.7 s, 1 2,682 (no cold wait: 3.7 s); seeds
#: 1-3 at 400 / 800 / 1,200/s, all 7,972 / 7,885 / 7,892, 4 7,992 / 7,915 / 7,873; live p50 22 ms.
COLD_SCAN_LIMIT = 4

#: With a cold wait, a copy is surplus (free to evict) only beyond this many more copies than
#: the label's demand needs. A waiting cold task takes the first cheap slot that frees up, and
#: without the margin that is a hot label's spare copy, which its queue then loads again: the
#: top label had 2 of its 4.4 holders loading at any time and the median task waited 24-26 ms.
COLD_WAIT_SURPLUS_MARGIN = 1

#: Weight of the blocking cost against the eviction cost. Measured in the simulator (200
#: workers x 2, 1,000 Zipf(1.1) labels, 1,200 tasks/s, 24,000 tasks, seeds 1-3 summed, with the
#: two-memory frequency): 0.5 gave 8,503 misses and p50 15-20 ms, 0.75 gave 8,683 and 14-15 ms,
#: 1.0 gave 8,737 and 13-17 ms; with no blocking cost p50 reached 33 ms (seed 1).
BLOCKING_WEIGHT = 0.5


class Reason(enum.Enum):
    """Why a decision was taken (metrics and tests read it)."""

    IDLE_HOLDER = "idle_holder"
    WAIT_FOR_HOLDER = "wait_for_holder"
    LOAD_FREE_SLOT = "load_free_slot"
    LOAD_EVICT = "load_evict"
    NO_IDLE_WORKER = "no_idle_worker"
    COLD_WAIT = "cold_wait"
    COLD_WAIT_OVER = "cold_wait_over"
    STARVATION = "starvation"
    RANDOM = "random"
    RANDOM_FIFO = "random_fifo"


#: A task held by the cold wait and then dispatched for one of these reasons waited for nothing:
#: its wait (or its patience) ran out before a cheap place freed up (`dispatcher.cold_wait`).
UNPAID_COLD_HOLDS = frozenset({Reason.COLD_WAIT_OVER, Reason.STARVATION})


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


@dataclass(frozen=True)
class Preload:
    """Have `worker_id` load `label` now, evicting `evict`, before a task needs it."""

    worker_id: str
    label: str
    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Displacement:
    """What loading a label on one worker displaces: the label evicted (None: a free slot),
    its eviction cost, and the requests/s per copy of every label there but the loaded one,
    which the load blocks (the victim's among them)."""

    victim_cost: float
    victim: str | None
    victim_per_copy: float
    per_copies: tuple[float, ...]

    @property
    def evict(self) -> tuple[str, ...]:
        return () if self.victim is None else (self.victim,)

    def cost(self, load_s: float) -> float:
        """The eviction cost plus what the labels that stay lose while `load_s` blocks them."""
        blocking = sum(BLOCKING_WEIGHT * per_copy * load_s for per_copy in self.per_copies)
        if self.victim is None:
            return blocking
        return self.victim_cost + blocking - BLOCKING_WEIGHT * self.victim_per_copy * load_s


class Policy(Protocol):
    """What the dispatcher core asks a routing policy."""

    name: str

    def place(self, task: TaskRecord, now: float) -> Decision: ...

    def next_for(self, worker_id: str, now: float) -> Dispatch | None: ...

    def rescue(self, now: float) -> Dispatch | None: ...

    def preload(self, label: str, now: float, in_flight: int) -> Preload | None: ...


@dataclass
class RoutedPolicy:
    """Label-aware routing with demand-aware placement (see the module docstring)."""

    registry: Registry
    queue: TaskQueue
    estimates: LabelEstimates
    starvation_factor: float = STARVATION_FACTOR
    demand: DemandModel = field(default_factory=DemandModel)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    max_preload_share: float = 0.25
    #: How long a task for a label no worker holds may wait for a cheap place to load it
    #: (`COLD_ADMISSION_RATIO`); 0: load it at once wherever it costs least.
    cold_wait_s: float = 0.0
    #: Whether holding cold tasks has been paying (`dispatcher.cold_wait`); the core records.
    cold_payoff: ColdWaitPayoff = field(default_factory=ColdWaitPayoff)
    name: str = "routed"

    def expected_wait_ms(self, label: str, position: int) -> float:
        """Expected wait for a busy holder of `label` for the `position`-th task of the label.

        Holders work the label's queue in parallel, each of their task slots taking the learned
        run time per task: a worker with 4 slots drains a label's queue 4 times as fast, so
        tasks wait for it rather than load a second copy elsewhere.
        """
        slots = self.registry.holder_slots(label)
        if slots == 0:
            return float("inf")
        return self.estimates.run_ms(label) * position / slots

    def patience_ms(self, label: str) -> float:
        """How long a queued task of `label` waits before it is starving."""
        return self.starvation_factor * self.estimates.load_ms(label)

    def starving(self, task: TaskRecord, now: float) -> bool:
        """Whether `task` has waited longer than `starvation_factor` loads of its label."""
        return (now - task.enqueued_at) * 1000.0 > self.patience_ms(task.label)

    def place(self, task: TaskRecord, now: float) -> Decision:
        label = task.label
        holder = self.registry.idle_holders(label).first_not_in(task.excluded)
        if holder is not None:
            return Dispatch(task.task_id, holder, Reason.IDLE_HOLDER, miss=False)
        holders = self.registry.holders(label)
        if holders and (not task.excluded or holders - task.excluded):
            position = self.queue.count(label) + 1
            if self.expected_wait_ms(label, position) <= self.estimates.load_ms(label):
                # Just past the patience, so the re-check finds the task starving.
                recheck_s = self.patience_ms(label) / 1000.0 + 0.001
                return Enqueue(Reason.WAIT_FOR_HOLDER, recheck_after_s=recheck_s)
        if not self.registry.idle:
            return Enqueue(Reason.NO_IDLE_WORKER)
        best = self._best_placement(label, now, exclude=task.excluded)
        if best is None:
            return Enqueue(Reason.NO_IDLE_WORKER)
        cost, _, evict = best
        if evict and not holders and not self.admits(label, cost, now):
            if not self.cold_payoff.holds(self.rng):
                return self._load_at(task, best)
            # Just past the wait, so the re-check finds the task due (`rescue`).
            return Enqueue(Reason.COLD_WAIT, recheck_after_s=self.cold_wait_s + 0.001)
        return self._load_at(task, best)

    def admits(self, label: str, cost: float, now: float) -> bool:
        """Whether a label no worker holds should be loaded where it costs `cost` now, rather
        than wait for a cheaper place (always, with no cold wait)."""
        if self.cold_wait_s <= 0.0:
            return True
        value = self.demand.frequency(label, now) * self.demand.time_constant_s
        # The slack absorbs the least-recently-used tie-break in `_placement_cost` (< 1e-6):
        # evicting labels nobody asks for, beside labels nobody asks for, costs nothing.
        return cost <= COLD_ADMISSION_RATIO * value + 1e-6

    def next_for(self, worker_id: str, now: float) -> Dispatch | None:
        worker = self.registry.workers.get(worker_id)
        if worker is None or not worker.is_idle:
            return None
        oldest = self.queue.oldest()
        if oldest is None:
            return None
        if self.starving(oldest, now) and worker_id not in oldest.excluded:
            decision = self._load_on(worker, oldest, Reason.STARVATION, now)
            if decision is not None:
                return decision
        # The oldest queued task of a label this worker holds: a hit.
        best: TaskRecord | None = None
        for label in worker.labels:
            task = self.queue.oldest_of(label)
            if task is None or worker_id in task.excluded:
                continue
            if best is None or task.enqueued_at < best.enqueued_at:
                best = task
        if best is not None:
            return Dispatch(best.task_id, worker_id, Reason.IDLE_HOLDER, miss=False)
        # A label whose holders are gone or too slow to drain its queue: load it here.
        # Worked out on first use, once for all the labels waiting (`_cheap_here`).
        displaced = functools.cache(lambda: self._displacement(worker, None, now))
        cold_seen = 0
        for label in self.queue.labels():
            waiting = self.queue.count(label)
            if self.expected_wait_ms(label, waiting) > self.estimates.load_ms(label):
                task = self.queue.oldest_of(label)
                assert task is not None
                if worker_id in task.excluded:
                    continue
                if self._waits_cold(worker, task):
                    cold_seen += 1
                    if cold_seen > COLD_SCAN_LIMIT:
                        break  # younger labels wait for `rescue` (or a later freed worker)
                    if not self._cheap_here(label, displaced, now):
                        continue
                decision = self._load_on(worker, task, None, now)
                if decision is not None:
                    return decision
        return None

    def rescue(self, now: float) -> Dispatch | None:
        if not self.registry.idle:
            return None
        return self._rescue_starving(now) or self._rescue_cold(now)

    def _rescue_starving(self, now: float) -> Dispatch | None:
        """The oldest queued task, if it is starving, on an idle worker."""
        oldest = self.queue.oldest()
        if oldest is None or not self.starving(oldest, now):
            return None
        holder = self.registry.idle_holders(oldest.label).first_not_in(oldest.excluded)
        if holder is not None:
            return Dispatch(oldest.task_id, holder, Reason.STARVATION, miss=False)
        decision = self._load_anywhere(oldest, now)
        if decision is None:
            return None
        return Dispatch(
            decision.task_id, decision.worker_id, Reason.STARVATION, True, decision.evict
        )

    def _rescue_cold(self, now: float) -> Dispatch | None:
        """The oldest task of a label nobody holds whose cold wait is over, loaded where it
        costs least, cheap or not."""
        if self.cold_wait_s <= 0.0:
            return None
        for label in self.queue.labels():  # oldest first: the first one not yet due ends it
            task = self.queue.oldest_of(label)
            assert task is not None
            if now - task.enqueued_at < self.cold_wait_s:
                return None
            if self.registry.holders(label):
                continue
            decision = self._load_anywhere(task, now)
            if decision is not None:
                return replace(decision, reason=Reason.COLD_WAIT_OVER)
        return None

    def _waits_cold(self, worker: WorkerRecord, task: TaskRecord) -> bool:
        """Whether loading `task`'s label on `worker` is held to the cold wait's admission: for
        a task held by it (`TaskRecord.cold_held`), of a label nobody holds, where it would
        evict."""
        return task.cold_held and not worker.has_room and not self.registry.holders(task.label)

    def _cheap_here(
        self, label: str, displaced: Callable[[], _Displacement | None], now: float
    ) -> bool:
        """Whether a freed worker should load `label`, which nobody holds, though it must
        evict: only where the load is cheap enough (`admits`). A task whose wait is over is
        loaded by `rescue` on the best of a sample, not on whichever worker frees up first
        (often the holder of a hot label). `displaced`: what a load on the worker displaces,
        worked out once for all the labels waiting (none of them is on it, so it is the same
        for each)."""
        plan = displaced()
        if plan is None:
            return False
        return self.admits(label, plan.cost(self.estimates.load_ms(label) / 1000.0), now)

    def preload(self, label: str, now: float, in_flight: int) -> Preload | None:
        """Another copy of `label` on an idle worker, when its demand needs one and a preload
        delays nothing (see the module docstring); `in_flight`: preloads not yet done."""
        idle = len(self.registry.idle)
        if len(self.queue) >= idle:
            return None  # every idle worker may be needed by a queued task
        copies = self.registry.copies(label)
        needed = self.demand.copies_needed(label, now, self.estimates.run_ms(label))
        if copies == 0 or copies >= needed:
            return None  # a first copy is loaded by the task that needs it
        if in_flight >= max(1, int(self.max_preload_share * idle)):
            return None
        # The new copy serves its share of the label's requests over the next tau.
        worth = self.demand.rate(label, now) / (copies + 1) * self.demand.time_constant_s
        best = self._best_placement(label, now, exclude=self.registry.holders(label))
        if best is None or best[0] >= worth:
            return None
        _, worker_id, evict = best
        return Preload(worker_id, label, evict)

    # ---- placement ----------------------------------------------------------------------

    def per_copy(self, label: str, now: float) -> tuple[float, bool]:
        """`label`'s requests/s per copy, and whether it has more copies than it needs."""
        copies = self.registry.copies(label)
        rate = self.demand.rate(label, now)
        needed = self.demand.copies_for(rate, self.estimates.run_ms(label))
        if self.cold_wait_s > 0.0 and self.cold_payoff.paying:
            needed += COLD_WAIT_SURPLUS_MARGIN
        return rate / max(1, copies), copies > needed

    def eviction_cost(self, label: str, now: float) -> float:
        """Requests a copy of `label` would serve over the next tau, by the label's long-memory
        frequency (`DemandModel.frequency`); 0 for a surplus copy."""
        return self._eviction_cost(label, now, self.per_copy(label, now)[1])

    def _eviction_cost(self, label: str, now: float, surplus: bool) -> float:
        if surplus:
            return 0.0
        copies = max(1, self.registry.copies(label))
        return self.demand.frequency(label, now) / copies * self.demand.time_constant_s

    def blocking_cost(self, label: str, now: float, load_s: float) -> float:
        """Requests a copy of `label` would serve while its worker loads something else,
        weighted against the eviction cost (`BLOCKING_WEIGHT`)."""
        return BLOCKING_WEIGHT * self.per_copy(label, now)[0] * load_s

    def victim(self, worker: WorkerRecord, keep: str, now: float = 0.0) -> str | None:
        """The label `worker` should evict to make room for `keep`: the cheapest to lose, never
        one a running task uses or the last copy of a label with queued work."""
        choice = self._placement_cost(worker, keep, now, need_room=True)
        return choice[1][0] if choice is not None and choice[1] else None

    def _placement_cost(
        self, worker: WorkerRecord, label: str, now: float, need_room: bool | None = None
    ) -> tuple[float, tuple[str, ...]] | None:
        """What loading `label` on `worker` costs (the victim's eviction cost plus the
        blocking cost of the labels that stay), and what it evicts; None if it cannot."""
        plan = self._displacement(worker, label, now, need_room)
        if plan is None:
            return None
        return plan.cost(self.estimates.load_ms(label) / 1000.0), plan.evict

    def _displacement(
        self, worker: WorkerRecord, label: str | None, now: float, need_room: bool | None = None
    ) -> _Displacement | None:
        """What a load on `worker` displaces, whatever label is loaded (bar `label`, which
        stays if it is there): the cheapest victim and the labels it blocks; None if nothing
        can be evicted where room is needed. One pass over the worker's labels, each label's
        demand read once, so a freed worker is costed once for every label waiting for it."""
        evicting = (not worker.has_room) if need_room is None else need_room
        in_use = set(worker.in_flight.values()) if evicting else set()
        per_copies: list[float] = []
        victim: tuple[float, float, str] | None = None  # (eviction cost, its per copy, label)
        for other, last_used in worker.labels.items():
            if other == label:
                continue
            per_copy, surplus = self.per_copy(other, now)
            per_copies.append(per_copy)
            if not evicting or other in in_use:
                continue
            if self.queue.count(other) and self.registry.copies(other) <= 1:
                continue  # the last copy of a label with queued work stays
            # Ties (two labels nobody asks for) go to the least recently used.
            cost = self._eviction_cost(other, now, surplus) + last_used * 1e-12
            if victim is None or cost < victim[0]:
                victim = (cost, per_copy, other)
        if not evicting:
            return _Displacement(0.0, None, 0.0, tuple(per_copies))
        if victim is None:
            return None
        return _Displacement(victim[0], victim[2], victim[1], tuple(per_copies))

    def _best_placement(
        self, label: str, now: float, exclude: set[str] | frozenset[str] = frozenset()
    ) -> tuple[float, str, tuple[str, ...]] | None:
        """The cheapest sampled idle worker to load `label` on: (cost, worker, evict)."""
        sampled = self.registry.idle_with_room.sample(self.rng, PLACEMENT_SAMPLE)
        sampled += self.registry.idle.sample(self.rng, PLACEMENT_SAMPLE)
        best: tuple[float, str, tuple[str, ...]] | None = None
        for worker_id in sampled:
            if worker_id in exclude:
                continue
            placed = self._placement_cost(self.registry.workers[worker_id], label, now)
            if placed is not None and (best is None or placed[0] < best[0]):
                best = (placed[0], worker_id, placed[1])
        return best

    def _load_on(
        self, worker: WorkerRecord, task: TaskRecord, reason: Reason | None, now: float
    ) -> Dispatch | None:
        """Send `task` to `worker`, loading its label there if needed."""
        if task.label in worker.labels:
            return Dispatch(task.task_id, worker.worker_id, reason or Reason.IDLE_HOLDER, False)
        if worker.has_room:
            return Dispatch(task.task_id, worker.worker_id, reason or Reason.LOAD_FREE_SLOT, True)
        evict = self.victim(worker, task.label, now)
        if evict is None:
            return None
        return Dispatch(task.task_id, worker.worker_id, reason or Reason.LOAD_EVICT, True, (evict,))

    def _load_anywhere(self, task: TaskRecord, now: float) -> Dispatch | None:
        """Load `task`'s label on the idle worker where it costs least."""
        best = self._best_placement(task.label, now, exclude=task.excluded)
        return None if best is None else self._load_at(task, best)

    @staticmethod
    def _load_at(task: TaskRecord, placement: tuple[float, str, tuple[str, ...]]) -> Dispatch:
        """Load `task`'s label where `_best_placement` chose: (cost, worker, evict)."""
        _, worker_id, evict = placement
        reason = Reason.LOAD_EVICT if evict else Reason.LOAD_FREE_SLOT
        return Dispatch(task.task_id, worker_id, reason, miss=True, evict=evict)


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
        if worker_id is None or worker_id in task.excluded:
            return Enqueue(Reason.RANDOM_FIFO)  # another worker takes it when it frees up
        miss = task.label not in self.registry.workers[worker_id].labels
        return Dispatch(task.task_id, worker_id, Reason.RANDOM, miss=miss)

    def next_for(self, worker_id: str, now: float) -> Dispatch | None:
        worker = self.registry.workers.get(worker_id)
        oldest = self.queue.oldest()
        if worker is None or not worker.is_idle or oldest is None or worker_id in oldest.excluded:
            return None
        miss = oldest.label not in worker.labels
        return Dispatch(oldest.task_id, worker_id, Reason.RANDOM, miss=miss)

    def rescue(self, now: float) -> Dispatch | None:
        return None  # FIFO order already serves the oldest task first

    def preload(self, label: str, now: float, in_flight: int) -> Preload | None:
        return None  # the baseline loads only what a task needs


def make_policy(
    name: str,
    registry: Registry,
    queue: TaskQueue,
    estimates: LabelEstimates,
    rng: random.Random | None = None,
    starvation_factor: float = STARVATION_FACTOR,
    demand: DemandModel | None = None,
    max_preload_share: float = 0.25,
    cold_wait_s: float = 0.0,
    cold_payoff: ColdWaitPayoff | None = None,
) -> RoutedPolicy | RandomPolicy:
    """The policy called `name` ("routed" or "random") over the given state."""
    if name == "routed":
        return RoutedPolicy(
            registry,
            queue,
            estimates,
            starvation_factor,
            demand if demand is not None else DemandModel(),
            rng or random.Random(0),
            max_preload_share,
            cold_wait_s,
            cold_payoff if cold_payoff is not None else ColdWaitPayoff(),
        )
    if name == "random":
        return RandomPolicy(registry, queue, rng or random.Random())
    raise ValueError(f"unknown policy {name!r}")
