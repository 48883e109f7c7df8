"""Prometheus metrics of one dispatcher, in a registry of its own (one per app instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The `_created` series repeat every counter with the same help text and nothing a dashboard
# needs (process start time covers it).
disable_created_metrics()

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


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

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
