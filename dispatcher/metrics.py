"""Prometheus metrics of one dispatcher, in a registry of its own (one per app instance).

Label values are bounded: `label` comes from tasks, `worker` only from connected workers (the
per-worker gauges are read from the registry at scrape time, so a worker that left has no
series), `route` is the route's template (`/tasks/{task_id}`), never the raw path, and
`status` an HTTP status code. The process's own metrics (CPU, memory, open files) are in the
same registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dispatcher.cold_wait import MIN_PAID_SHARE

if TYPE_CHECKING:
    from dispatcher.registry import WorkerRecord

# The `_created` series repeat every counter with the same help text and nothing a dashboard
# needs (process start time covers it).
disable_created_metrics()

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "WorkerCollector"]

#: Seconds a worker took to load a label (a model into Triton: from 0.1 s to minutes).
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
#: Seconds an HTTP request took (/run-task includes its task's whole run).
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
WORKER_STATES = ("ready", "suspended", "draining", "gone")


@dataclass
class Metrics:
    """The dispatcher's metrics; `render()` gives the Prometheus text format."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.tasks = Counter(
            "smartrouting_tasks",
            "Tasks answered, by label and outcome: completed, rejected (queue full), or the error "
            "code of the answer (deadline_exceeded, task_failed, shutting_down, ...).",
            ["label", "outcome"],
            registry=r,
        )
        self.label_hits = Counter(
            "smartrouting_label_hits",
            "Completed tasks that ran on a worker already holding the label.",
            ["label"],
            registry=r,
        )
        self.label_misses = Counter(
            "smartrouting_label_misses",
            "Completed tasks whose label had to be loaded first.",
            ["label"],
            registry=r,
        )
        self.model_loads = Counter(
            "smartrouting_model_loads",
            "Label loads reported by workers (for any task, completed or not).",
            ["label"],
            registry=r,
        )
        self.preloads = Counter(
            "smartrouting_preloads",
            "Copies of a label a worker was told to load before a task needed them.",
            ["label"],
            registry=r,
        )
        self.worker_suspensions = Counter(
            "smartrouting_worker_suspensions",
            "Workers taken out of routing by the circuit breaker (failures or timeouts in a row).",
            registry=r,
        )
        self.workers_suspended = Gauge(
            "smartrouting_workers_suspended",
            "Workers suspended by the circuit breaker now.",
            registry=r,
        )
        self.redispatches = Counter(
            "smartrouting_task_redispatches",
            "Tasks sent again after their worker left.",
            registry=r,
        )
        self.late_results = Counter(
            "smartrouting_late_results",
            "Results for tasks already answered or moved to another worker (ran twice or late).",
            registry=r,
        )
        self.decisions = Counter(
            "smartrouting_routing_decisions",
            "Routing decisions by reason.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "smartrouting_queue_depth", "Tasks waiting for a worker.", registry=r
        )
        self.cold_wait_paid_share = Gauge(
            "smartrouting_cold_wait_paid_share",
            "Share of the recent cold-wait holds that found a cheap worker; the routed policy "
            f"holds cold tasks while it is at least {MIN_PAID_SHARE:g} (dispatcher/cold_wait.py).",
            registry=r,
        )
        self.demand_shifts = Gauge(
            "smartrouting_demand_shifts_detected",
            "Jumps of the label mix the demand model's change detector declared since start "
            "(dispatcher/shift_detector.py); each restarts the counts eviction ranks labels by.",
            registry=r,
        )
        self.in_flight = Gauge(
            "smartrouting_tasks_in_flight", "Tasks running on workers.", registry=r
        )
        self.workers_connected = Gauge(
            "smartrouting_workers_connected", "Workers connected over /worker-listen.", registry=r
        )
        self.dispatch_latency = Histogram(
            "smartrouting_dispatch_latency_seconds",
            "Time from a task's submission to its dispatch to a worker.",
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=r,
        )
        self.task_latency = Histogram(
            "smartrouting_task_latency_seconds",
            "Time from a task's submission to its answer.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )

        self.model_load_seconds = Histogram(
            "smartrouting_model_load_seconds",
            "Time workers took to load a label for a task (label misses), by label.",
            ["label"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.model_evictions = Counter(
            "smartrouting_model_evictions",
            "Labels workers unloaded to make room for another, by the label evicted.",
            ["label"],
            registry=r,
        )
        self.worker_joins = Counter(
            "smartrouting_worker_joins",
            "Workers that connected and said Hello (a reconnect counts again).",
            registry=r,
        )
        self.worker_leaves = Counter(
            "smartrouting_worker_leaves",
            "Worker connections that ended (a graceful stop, a crash or a network cut).",
            registry=r,
        )
        self.http_requests = Counter(
            "smartrouting_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "smartrouting_http_request_duration_seconds",
            "Time from an HTTP request's arrival to its answer, by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        # The default registry has these; ours is per app, so they are added here.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def watch_workers(self, workers: Callable[[], Iterable[WorkerRecord]]) -> None:
        """Per-worker gauges, read from `workers()` at every scrape."""
        self.registry.register(WorkerCollector(workers))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class WorkerCollector(Collector):
    """Per-worker gauges of the connected workers, read when scraped (no stale series)."""

    def __init__(self, workers: Callable[[], Iterable[WorkerRecord]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "smartrouting_worker_state",
            "1 for the state a connected worker is in (ready, suspended, draining), else 0.",
            labels=["worker", "state"],
        )
        slots = GaugeMetricFamily(
            "smartrouting_worker_slots", "Tasks a worker runs at once.", labels=["worker"]
        )
        busy = GaugeMetricFamily(
            "smartrouting_worker_slots_busy", "Tasks running on a worker now.", labels=["worker"]
        )
        capacity = GaugeMetricFamily(
            "smartrouting_worker_capacity",
            "Labels a worker can hold loaded at once.",
            labels=["worker"],
        )
        held = GaugeMetricFamily(
            "smartrouting_worker_labels",
            "Labels a worker holds (loaded or loading).",
            labels=["worker"],
        )
        for w in list(self._workers()):
            for name in WORKER_STATES:
                state.add_metric([w.worker_id, name], 1.0 if w.state.value == name else 0.0)
            slots.add_metric([w.worker_id], w.slots)
            busy.add_metric([w.worker_id], len(w.in_flight))
            capacity.add_metric([w.worker_id], w.capacity)
            held.add_metric([w.worker_id], len(w.labels))
        yield from (state, slots, busy, capacity, held)

    def describe(self) -> Iterator[Metric]:
        # Nothing to describe ahead of a scrape; registering must not call collect().
        return iter(())
