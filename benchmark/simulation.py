"""A discrete-event simulation that drives the REAL dispatcher core in virtual time.

No sockets and no sleeping: the dispatcher's `Core` and `Admission` (with the real policy,
registry, queue and estimates) are given a `VirtualClock` and `VirtualTimers`, and each worker
is a `SimulatedWorkerLink` that models the simulated engine: an LRU cache of `capacity`
labels honouring the dispatcher's evict hints, a load drawn around `load_ms` on a miss and a run
around `run_ms`, answered with a real `TaskResult`. A policy change is judged here in seconds
on any number of workers, and the numbers match what the core does in production because it
is the same code (docs/architecture.md §3 and §8).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dispatcher.admission import Admission
from dispatcher.config import Config
from dispatcher.core import Core
from dispatcher.interfaces import NullObserver
from dispatcher.stats import Stats
from dispatcher.tasks import TaskRecord, TaskState
from proto import smartrouting_pb2 as pb

#: The Unix time at virtual time 0 (deadlines sent to workers are Unix milliseconds).
EPOCH_UNIX = 1_700_000_000.0


class VirtualClock:
    """Time that moves only when the simulation says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def unix(self) -> float:
        return EPOCH_UNIX + self.now


@dataclass
class _Timer:
    callback: Callable[..., Any]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualTimers:
    """An event heap: `call_later` schedules, `run` fires events in time order."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._events: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def call_later(self, delay_s: float, callback: Callable[..., Any], *args: Any) -> _Timer:
        timer = _Timer(callback, args)
        heapq.heappush(self._events, (self.clock.now + max(0.0, delay_s), next(self._seq), timer))
        return timer

    def call_at(self, at: float, callback: Callable[..., Any], *args: Any) -> _Timer:
        return self.call_later(at - self.clock.now, callback, *args)

    def run(self, until: float = float("inf")) -> None:
        """Fire events until none is left (or the next one is after `until`)."""
        while self._events and self._events[0][0] <= until:
            at, _, timer = heapq.heappop(self._events)
            self.clock.now = at
            if not timer.cancelled:
                timer.callback(*timer.args)


@dataclass(frozen=True)
class WorkerModel:
    """Costs of a simulated worker, in milliseconds (normal draws, clamped below)."""

    capacity: int = 2
    slots: int = 1
    load_ms: float = 270.0
    load_stddev_ms: float = 30.0
    run_ms: float = 10.0
    run_stddev_ms: float = 2.0


class SimulatedWorkerLink:
    """One simulated worker behind the `WorkerLink` the core sends frames through.

    It models the worker's model manager (`worker.models`): loads go one at a time through one
    lane, and a task, even a hit, waits for the load in progress, since one lock guards both;
    runs overlap up to the worker's slots. The cache evicts as `worker.cache.plan_load` does:
    hinted labels first, then the least recently used, never a label in use or loading. A
    Preload loads ahead of demand and reports `LabelsChanged` once the label is ready (nothing
    when it is already held); an Unload drops an idle ready label and reports it. Cancel and
    Drain are ignored: the task runs to its end and the core treats the answer as late.
    """

    def __init__(
        self,
        worker_id: str,
        model: WorkerModel,
        core: Core,
        timers: VirtualTimers,
        rng: random.Random,
    ) -> None:
        self.worker_id = worker_id
        self.model = model
        self.core = core
        self.timers = timers
        self.rng = rng
        #: Labels held (ready or loading), least recently used first.
        self.loaded: OrderedDict[str, None] = OrderedDict()
        #: Loads on a task's path (misses); `preloads` counts the loads ahead of demand.
        self.loads = 0
        self.preloads = 0
        #: The virtual time at which each preload arrived.
        self.preload_times: list[float] = []
        # Held label -> when its load ends (in the past once ready); running task id -> label.
        self._ready_at: dict[str, float] = {}
        self._running: dict[str, str] = {}
        # When the load lane is free again.
        self._lane_free_at = 0.0

    def hello(self) -> pb.Hello:
        return pb.Hello(
            worker_id=self.worker_id,
            capacity=self.model.capacity,
            slots=self.model.slots,
            engine="simulated",
        )

    def send(self, message: pb.DispatcherMessage) -> None:
        # Called from inside the core: whatever is reported back goes through a timer, never
        # into the core while it is still applying a decision.
        kind = message.WhichOneof("body")
        if kind == "task":
            self._start(message.task)
        elif kind == "preload":
            self._preload(message.preload)
        elif kind == "unload":
            self.timers.call_later(0.0, self._unload, message.unload.label)

    async def close(self, code: int, reason: str) -> None:
        return None

    @property
    def ready(self) -> list[str]:
        """Labels loaded and ready now (what the worker reports as `labels_loaded`)."""
        now = self.timers.clock.now
        return [label for label in self.loaded if self._ready_at[label] <= now]

    @property
    def loading(self) -> list[str]:
        """Labels whose load has not ended yet."""
        now = self.timers.clock.now
        return [label for label in self.loaded if self._ready_at[label] > now]

    def _make_room(self, evict_hint: Iterable[str]) -> bool:
        """Evict as the worker's cache plans a load; False when nothing can go."""
        now = self.timers.clock.now
        busy = set(self._running.values())
        while len(self.loaded) >= self.model.capacity:
            evictable = [
                held for held in self.loaded if held not in busy and self._ready_at[held] <= now
            ]
            if not evictable:
                return False
            hinted = [held for held in evict_hint if held in evictable]
            victim = hinted[0] if hinted else evictable[0]
            del self.loaded[victim], self._ready_at[victim]
        return True

    def _begin_load(self, label: str) -> tuple[float, float]:
        """Put `label` on the load lane; returns (when it is ready, the load's own ms)."""
        m = self.model
        load_ms = max(1.0, self.rng.gauss(m.load_ms, m.load_stddev_ms))
        start = max(self.timers.clock.now, self._lane_free_at)
        self._lane_free_at = ready_at = start + load_ms / 1000.0
        self.loaded[label] = None
        self._ready_at[label] = ready_at
        return ready_at, load_ms

    def _start(self, task: pb.Task) -> None:
        m = self.model
        miss = task.label not in self.loaded
        load_ms = 0.0
        if miss:
            self.loads += 1
            # Stays over capacity only when every held label is in use (slots > capacity).
            self._make_room(task.evict_hint)
            start, load_ms = self._begin_load(task.label)
        else:
            start = max(self.timers.clock.now, self._lane_free_at)
        self.loaded.move_to_end(task.label)
        self._running[task.task_id] = task.label
        run_ms = max(0.5, self.rng.gauss(m.run_ms, m.run_stddev_ms))
        result = pb.TaskResult(
            task_id=task.task_id,
            ok=True,
            result_json="{}",
            label_miss=miss,
            load_ms=load_ms,
            run_ms=run_ms,
        )
        self.timers.call_at(start + run_ms / 1000.0, self._finish, result)

    def _finish(self, result: pb.TaskResult) -> None:
        self._running.pop(result.task_id, None)
        result.labels_loaded.extend(self.ready)
        self.core.worker_result(self.worker_id, result)

    def _preload(self, preload: pb.Preload) -> None:
        label = preload.label
        if label in self.loaded:
            return  # the worker's load finds it held: a hit, nothing changes, nothing said
        if not self._make_room(preload.evict_hint):
            self.timers.call_later(0.0, self._report, f"preload of {label} failed: cache full")
            return
        self.preloads += 1
        self.preload_times.append(self.timers.clock.now)
        ready_at, _ = self._begin_load(label)
        self.timers.call_at(ready_at, self._report, f"preloaded {label}")

    def _unload(self, label: str) -> None:
        now = self.timers.clock.now
        if label not in self.loaded or self._ready_at[label] > now:
            return
        if label in self._running.values():
            return
        del self.loaded[label], self._ready_at[label]
        self._report(f"unloaded {label}")

    def _report(self, reason: str) -> None:
        if self.worker_id in self.core.registry:
            change = pb.LabelsChanged(
                labels_loaded=self.ready, labels_loading=self.loading, reason=reason
            )
            self.core.worker_labels_changed(self.worker_id, change)


@dataclass
class Outcome:
    """What a simulated run measured."""

    completed: int = 0
    failed: int = 0
    misses: int = 0
    busy_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    #: Submission index (`Simulation.submit` order, from 0) of every completed task that missed.
    miss_indices: list[int] = field(default_factory=list)

    def misses_from(self, start: int) -> int:
        """Misses among the tasks submitted at index >= `start` (e.g. the second half)."""
        return sum(1 for index in self.miss_indices if index >= start)

    @property
    def avg_runtime_s(self) -> float:
        """Mean load + run time per completed task (the original system's 'task runtime')."""
        return self.busy_s / self.completed if self.completed else 0.0


class _Recorder(NullObserver):
    def __init__(self, outcome: Outcome, on_finished: Callable[[TaskRecord], None]) -> None:
        self.outcome = outcome
        self.on_finished = on_finished

    def task_finished(self, task: TaskRecord, now: float) -> None:
        o = self.outcome
        if task.state is TaskState.COMPLETED:
            o.completed += 1
            o.misses += task.label_miss
            o.busy_s += (task.timings_ms["load"] + task.timings_ms["run"]) / 1000.0
            o.latencies_s.append(now - task.submitted_at)
        else:
            o.failed += 1
        self.on_finished(task)


class Simulation:
    """The real core, `workers` simulated workers and virtual time."""

    def __init__(
        self,
        config: Config,
        workers: int,
        model: WorkerModel | None = None,
        seed: int = 1,
    ) -> None:
        self.clock = VirtualClock()
        self.timers = VirtualTimers(self.clock)
        self.outcome = Outcome()
        self.stats = Stats()
        self.core = Core(replace(config, seed=seed), self.clock, self.timers)
        self.admission = Admission(self.core)
        self._finished_hooks: list[Callable[[TaskRecord], None]] = []
        #: Virtual submission time of each task, by submission index.
        self.submit_times: list[float] = []
        self._index: dict[str, int] = {}
        recorder = _Recorder(self.outcome, self._task_finished)
        self.core.observers.extend([self.stats, self.admission, recorder])
        rng = random.Random(seed)
        self.links = [
            SimulatedWorkerLink(f"w{i}", model or WorkerModel(), self.core, self.timers, rng)
            for i in range(workers)
        ]
        for link in self.links:
            self.core.worker_joined(link.hello(), link)

    def on_finished(self, hook: Callable[[TaskRecord], None]) -> None:
        """Call `hook(task)` whenever a task gets its answer."""
        self._finished_hooks.append(hook)

    def submit(self, label: str, task_type: str = "sample_task", **extra: Any) -> TaskRecord:
        """Submit a task now (virtual time) through the real admission.

        Task ids default to `t<index>` (not random ones) so that runs are reproducible; a
        refused task raises the admission's `DispatcherError` and takes no index.
        """
        index = len(self.submit_times)
        extra.setdefault("task_id", f"t{index}")
        task = self.admission.admit(task_type, label, "{}", **extra)
        self.submit_times.append(self.clock.now)
        self._index[task.task_id] = index
        self.core.accept(task)
        return task

    def submit_at(self, at: float, label: str) -> None:
        self.timers.call_at(at, self.submit, label)

    def run(self, until: float = float("inf")) -> Outcome:
        self.timers.run(until)
        return self.outcome

    @property
    def preloads(self) -> int:
        """Loads ahead of demand the workers performed (Preload frames that loaded a label)."""
        return sum(link.preloads for link in self.links)

    def _task_finished(self, task: TaskRecord) -> None:
        index = self._index.pop(task.task_id, None)
        if index is not None and task.state is TaskState.COMPLETED and task.label_miss:
            self.outcome.miss_indices.append(index)
        for hook in self._finished_hooks:
            hook(task)


def closed_loop(
    sim: Simulation,
    labels: Iterable[str],
    producers: int,
    wait_avg_s: float,
    wait_stddev_s: float,
    rng: random.Random,
) -> None:
    """Producers as in the original system: each sends a task, waits for its answer, then
    sleeps max(0.1 s, N(avg, sd)) before the next; labels come from `labels` in order."""
    trace = iter(labels)
    owner: dict[str, int] = {}

    def send(producer: int) -> None:
        label = next(trace, None)
        if label is not None:
            owner[sim.submit(label).task_id] = producer

    def finished(task: TaskRecord) -> None:
        producer = owner.pop(task.task_id, None)
        if producer is not None:
            pause = max(0.1, rng.gauss(wait_avg_s, wait_stddev_s))
            sim.timers.call_later(pause, send, producer)

    sim.on_finished(finished)
    for producer in range(producers):
        sim.timers.call_later(0.0, send, producer)
