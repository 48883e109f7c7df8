"""What a worker tells its operator: one log line per event, and its Prometheus metrics.

`WorkerObservability` is told what happened, after it happened: a model loaded, failed to
load, was evicted or unloaded (by the model manager, as a `worker.models.ModelEvents`), a
task finished (by the runtime). For each event it writes one log line with structured fields
(`extra=`, so `--log-format json` gives them as keys: smartrouting/logs.py) and counts it
in `WorkerMetrics` (only where the worker serves `/metrics`). What describes the worker
*now* (labels held, slots in use, engine up, open dispatcher links, model memory) is read
from the worker when `/metrics` is scraped (`WorkerCollector`), so it is never stale and
needs no bookkeeping.

Label values are bounded: `outcome` is `hit`, `miss` or an `ErrorCode` name; `reason` and
`code` come from fixed sets; `label` appears only on the per-label gauges, which list the
labels the worker holds now (at most its capacity). The counters carry no `_created` series
(disabled process-wide, as in dispatcher/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proto import smartrouting_pb2 as pb
from worker.cache import ModelState
from worker.errors import error_code

if TYPE_CHECKING:
    from worker.config import Config
    from worker.engines.base import Engine
    from worker.models import ModelManager

disable_created_metrics()

log = logging.getLogger("worker.events")

#: Seconds a load took (a model into Triton: from 0.1 s to minutes), evictions it waited for
#: included; the dispatcher's histogram has the same buckets.
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
#: Seconds a task ran on a loaded model.
RUN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


#: Answers that give the task back to the dispatcher rather than fail it.
_HANDED_BACK = frozenset({pb.BUSY, pb.WORKER_SHUTTING_DOWN})


def task_outcome(result: pb.TaskResult) -> str:
    """`hit` or `miss` for a task that ran, else its error code in lower case."""
    if result.ok:
        return "miss" if result.label_miss else "hit"
    return pb.ErrorCode.Name(result.error_code).lower()


class WorkerView(Protocol):
    """What the collector reads from a worker when scraped (worker.runtime.Worker)."""

    config: Config
    engine: Engine | None
    models: ModelManager

    def slots_in_use(self) -> int:
        """Tasks running now."""
        ...

    def links_open(self) -> int:
        """Dispatcher links open now."""
        ...


class WorkerMetrics:
    """A worker's Prometheus registry: the event counters, the scrape-time gauges, process
    metrics."""

    def __init__(self, worker: WorkerView) -> None:
        self.registry = r = CollectorRegistry()
        self.tasks = Counter(
            "smartrouting_worker_tasks",
            "Tasks this worker answered, by outcome: hit (its label was loaded), miss (loaded "
            "first), or the error code of the answer (model_not_found, busy, ...).",
            ["outcome"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "smartrouting_worker_task_run_seconds",
            "Time a task ran on its loaded model (no queueing, no load).",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.load_seconds = Histogram(
            "smartrouting_worker_model_load_seconds",
            "Time a model load took, the evictions it waited for included.",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.loads = Counter(
            "smartrouting_worker_model_loads",
            "Models loaded, by reason: task (a task needed it) or preload (asked ahead).",
            ["reason"],
            registry=r,
        )
        self.load_failures = Counter(
            "smartrouting_worker_model_load_failures",
            "Model loads that failed, by error code (model_load_failed, engine_unavailable, ...).",
            ["code"],
            registry=r,
        )
        self.unloads = Counter(
            "smartrouting_worker_model_unloads",
            "Models unloaded, by reason: eviction, dispatcher (asked), shutdown, engine_lost.",
            ["reason"],
            registry=r,
        )
        self.evictions = Counter(
            "smartrouting_worker_model_evictions",
            "Models evicted to make room, by how the victim was chosen: hint (named by the "
            "dispatcher) or lru (least recently used).",
            ["reason"],
            registry=r,
        )
        r.register(WorkerCollector(worker))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class WorkerObservability:
    """Logs a worker's events and, with `metrics`, counts them; `render()` is `/metrics`.

    Metrics only where someone can read them (`--http-port`): a swarm of thousands of
    simulated workers in one process (benchmark/swarm.py) would pay ~0.6 ms and ~15 KB per
    worker for registries nobody scrapes.
    """

    def __init__(self, worker: WorkerView, metrics: bool = True) -> None:
        self.metrics = WorkerMetrics(worker) if metrics else None

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (empty without metrics)."""
        return self.metrics.render() if self.metrics is not None else b""

    # -- worker.models.ModelEvents -------------------------------------------

    def model_loaded(self, label: str, version: str, load_ms: float, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.loads.labels(reason).inc()
            self.metrics.load_seconds.observe(load_ms / 1000.0)
        log.info(
            "model %s loaded in %.0f ms (%s)",
            label,
            load_ms,
            reason,
            extra={
                "event": "model_loaded",
                "label": label,
                "version": version,
                "duration_ms": round(load_ms, 3),
                "reason": reason,
            },
        )

    def model_load_failed(self, label: str, load_ms: float, error: Exception) -> None:
        code = pb.ErrorCode.Name(error_code(error))
        if self.metrics is not None:
            self.metrics.load_failures.labels(code.lower()).inc()
        log.warning(
            "model %s failed to load after %.0f ms: %s",
            label,
            load_ms,
            error,
            extra={
                "event": "model_load_failed",
                "label": label,
                "duration_ms": round(load_ms, 3),
                "code": code,
            },
        )

    def model_evicted(self, label: str, for_label: str, hinted: bool) -> None:
        reason = "hint" if hinted else "lru"
        if self.metrics is not None:
            self.metrics.evictions.labels(reason).inc()
        log.info(
            "model %s evicted for %s (%s)",
            label,
            for_label,
            reason,
            extra={
                "event": "model_evicted",
                "label": label,
                "for_label": for_label,
                "reason": reason,
            },
        )

    def model_unloaded(self, label: str, reason: str, unload_ms: float) -> None:
        if self.metrics is not None:
            self.metrics.unloads.labels(reason).inc()
        log.info(
            "model %s unloaded in %.0f ms (%s)",
            label,
            unload_ms,
            reason,
            extra={
                "event": "model_unloaded",
                "label": label,
                "duration_ms": round(unload_ms, 3),
                "reason": reason,
            },
        )

    # -- the runtime ---------------------------------------------------------

    def task_finished(self, task: pb.Task, result: pb.TaskResult) -> None:
        """A task ran (or failed) and its result is on its way to the dispatcher."""
        outcome = task_outcome(result)
        if self.metrics is not None:
            self.metrics.tasks.labels(outcome).inc()
            if result.ok:
                self.metrics.run_seconds.observe(result.run_ms / 1000.0)
        if result.ok and not log.isEnabledFor(logging.DEBUG):  # the hot path: build nothing
            return
        fields: dict[str, object] = {
            "event": "task_finished",
            "task_id": task.task_id,
            "label": task.label,
            "outcome": outcome,
            "attempt": task.attempt,
        }
        if result.ok:
            fields.update(
                queue_ms=round(result.queue_ms, 3),
                load_ms=round(result.load_ms, 3),
                run_ms=round(result.run_ms, 3),
            )
            log.debug("task %s done (%s)", task.task_id, outcome, extra=fields)
            return
        code = pb.ErrorCode.Name(result.error_code)
        fields.update(event="task_failed", code=code, error=result.error_message)
        # Handed back for another worker (the dispatcher re-routes it): news, not a fault.
        level = logging.INFO if result.error_code in _HANDED_BACK else logging.WARNING
        log.log(
            level, "task %s failed: %s %s", task.task_id, code, result.error_message, extra=fields
        )


class WorkerCollector(Collector):
    """The gauges read from the worker at scrape time."""

    def __init__(self, worker: WorkerView) -> None:
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        worker, engine = self.worker, self.worker.engine
        config, cache = worker.config, worker.models.cache
        info = GaugeMetricFamily(
            "smartrouting_worker_info",
            "This worker: its id, engine and device (always 1).",
            labels=["worker", "engine", "device"],
        )
        info.add_metric(
            [config.worker_id, engine.name if engine else "", engine.device if engine else ""], 1
        )
        yield info
        # Not `smartrouting_worker_capacity`: the dispatcher's per-worker gauge has that name.
        yield GaugeMetricFamily(
            "smartrouting_worker_label_capacity",
            "Labels this worker keeps loaded at once.",
            value=config.capacity,
        )
        held = GaugeMetricFamily(
            "smartrouting_worker_labels_held",
            "Labels this worker holds, by state (loading, ready, unloading).",
            labels=["state"],
        )
        per_label = GaugeMetricFamily(
            "smartrouting_worker_label_state",
            "1 for each label held now, with its state (at most capacity series).",
            labels=["label", "state"],
        )
        for state in ModelState:
            labels = cache.labels(state)
            held.add_metric([state.value], len(labels))
            for label in labels:
                per_label.add_metric([label, state.value], 1)
        yield held
        yield per_label
        yield GaugeMetricFamily(
            "smartrouting_worker_task_slots",
            "Tasks this worker runs at once.",
            value=config.slots,
        )
        yield GaugeMetricFamily(
            "smartrouting_worker_task_slots_in_use",
            "Tasks running now.",
            value=worker.slots_in_use(),
        )
        yield GaugeMetricFamily(
            "smartrouting_worker_dispatcher_links_open",
            "Dispatchers this worker is connected to now.",
            value=worker.links_open(),
        )
        up = engine is not None and engine.healthy()
        yield GaugeMetricFamily(
            "smartrouting_worker_engine_up",
            "1 while the engine can run tasks (tritonserver ready), else 0.",
            value=1 if up else 0,
        )
        restarts = CounterMetricFamily(
            "smartrouting_worker_engine_restarts",
            "Times the engine's server (tritonserver) died and was started again.",
        )
        restarts.add_metric([], engine.restarts() if engine else 0)
        yield restarts
        memory = GaugeMetricFamily(
            "smartrouting_worker_model_memory_bytes",
            "Resident memory of each loaded label, where the engine can tell (Triton's "
            "Python backend: its stub process).",
            labels=["label"],
        )
        for label, size in sorted((engine.model_memory_bytes() if engine else {}).items()):
            memory.add_metric([label], size)
        yield memory
