"""Statistics of one dispatcher, kept by observing the core: `/stats` counters and Prometheus.

`Stats` is a `CoreObserver` (docs/architecture.md §3.3): the core tells it what happened and it
counts, so the core never touches a counter or a metric and `/stats` and `/metrics` read one
source. Gauges (queue depth, tasks in flight, workers) are read from the core when scraped.
What happened is logged by `dispatcher.event_log`, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.cold_wait import ColdWaitPayoff
from dispatcher.demand import DemandModel
from dispatcher.interfaces import NullObserver
from dispatcher.metrics import Metrics
from dispatcher.registry import Registry, WorkerRecord, WorkerState
from dispatcher.routing import Decision, Dispatch, Preload
from dispatcher.tasks import TaskQueue, TaskRecord, TaskState
from proto import smartrouting_pb2 as pb


@dataclass
class LabelStats:
    """Per-label totals for /stats."""

    completed: int = 0
    misses: int = 0
    load_ms_total: float = 0.0
    run_ms_total: float = 0.0


@dataclass
class WorkerStats:
    """Per-worker totals for /stats and /workers?detail=true (while it is connected)."""

    completed: int = 0
    misses: int = 0


@dataclass
class Counters:
    """Totals for /stats."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    redispatched: int = 0
    preloads: int = 0
    late_results: int = 0
    hits: int = 0
    misses: int = 0
    load_ms_total: float = 0.0
    run_ms_total: float = 0.0
    per_label: dict[str, LabelStats] = field(default_factory=dict)
    per_worker: dict[str, WorkerStats] = field(default_factory=dict)


class Stats(NullObserver):
    """Counts what the core reports; feeds /stats and Prometheus."""

    def __init__(
        self, metrics: Metrics | None = None, label_key: Callable[[str], str] = str
    ) -> None:
        self.metrics = metrics or Metrics()
        self.counters = Counters()
        #: The metric label value and /stats key of a label: the model catalogue's
        #: `metric_label` keeps labels outside the catalogue out (bounded cardinality).
        self.label_key = label_key

    def watch(
        self,
        registry: Registry,
        queue: TaskQueue,
        running: dict[str, TaskRecord],
        cold_payoff: ColdWaitPayoff | None = None,
        demand: DemandModel | None = None,
    ) -> None:
        """Gauges read the core's state when scraped instead of being set on every change."""
        if cold_payoff is not None:
            self.metrics.cold_wait_paid_share.set_function(lambda: cold_payoff.paid_share)
        if demand is not None:
            self.metrics.demand_shifts.set_function(lambda: demand.shifts.shifts)
        self.metrics.queue_depth.set_function(lambda: len(queue))
        self.metrics.in_flight.set_function(lambda: len(running))
        self.metrics.workers_connected.set_function(lambda: len(registry))
        self.metrics.workers_suspended.set_function(
            lambda: sum(w.state is WorkerState.SUSPENDED for w in registry.workers.values())
        )
        self.metrics.watch_workers(lambda: registry.workers.values())

    def task_rejected(self, label: str) -> None:
        """Admission refused a task (queue full)."""
        self.metrics.tasks.labels(self.label_key(label), "rejected").inc()

    def task_accepted(self, task: TaskRecord) -> None:
        self.counters.submitted += 1

    def task_routed(self, task: TaskRecord, decision: Decision, now: float) -> None:
        self.metrics.decisions.labels(decision.reason.value).inc()
        if isinstance(decision, Dispatch):
            self.metrics.dispatch_latency.observe(now - task.submitted_at)

    def preload_sent(self, preload: Preload) -> None:
        self.counters.preloads += 1
        self.metrics.preloads.labels(self.label_key(preload.label)).inc()

    def task_redispatched(self, task: TaskRecord) -> None:
        self.counters.redispatched += 1
        self.metrics.redispatches.inc()

    def task_finished(self, task: TaskRecord, now: float) -> None:
        self.metrics.task_latency.observe(now - task.submitted_at)
        label = self.label_key(task.label)
        if task.state is not TaskState.COMPLETED:
            self.counters.failed += 1
            code = task.error.code if task.error is not None else "failed"
            self.metrics.tasks.labels(label, code).inc()
            return
        # Hits, misses and times count completed tasks only: a failed task (an unknown model,
        # a bad parameter) neither hit nor missed anything a caller got.
        c = self.counters
        c.completed += 1
        self.metrics.tasks.labels(label, "completed").inc()
        per_label = c.per_label.setdefault(label, LabelStats())
        per_worker = c.per_worker.get(task.worker_id or "")
        load_ms, run_ms = task.timings_ms.get("load", 0.0), task.timings_ms.get("run", 0.0)
        c.load_ms_total += load_ms
        c.run_ms_total += run_ms
        per_label.completed += 1
        per_label.run_ms_total += run_ms
        if per_worker is not None:
            per_worker.completed += 1
        if task.label_miss:
            c.misses += 1
            per_label.misses += 1
            per_label.load_ms_total += load_ms
            self.metrics.label_misses.labels(label).inc()
            if per_worker is not None:
                per_worker.misses += 1
        else:
            c.hits += 1
            self.metrics.label_hits.labels(label).inc()

    def result_observed(
        self, record: WorkerRecord | None, label: str, result: pb.TaskResult
    ) -> None:
        label = self.label_key(label)
        if result.label_miss:  # a load happened, whatever became of the task
            self.metrics.model_loads.labels(label).inc()
            self.metrics.model_load_seconds.labels(label).observe(result.load_ms / 1000.0)
        for evicted in result.labels_evicted:
            self.metrics.model_evictions.labels(self.label_key(evicted)).inc()

    def late_result(self, worker_id: str, task_id: str) -> None:
        self.counters.late_results += 1
        self.metrics.late_results.inc()

    def worker_joined(self, record: WorkerRecord) -> None:
        self.counters.per_worker[record.worker_id] = WorkerStats()
        self.metrics.worker_joins.inc()

    def worker_left(self, record: WorkerRecord) -> None:
        self.counters.per_worker.pop(record.worker_id, None)
        self.metrics.worker_leaves.inc()

    def worker_suspended(self, record: WorkerRecord, why: str) -> None:
        self.metrics.worker_suspensions.inc()

    def worker(self, worker_id: str) -> WorkerStats:
        """The totals of a connected worker (zeros for one not seen)."""
        return self.counters.per_worker.get(worker_id) or WorkerStats()
