"""What the dispatcher did, as log lines an operator can search: one per event, with fields.

`EventLog` is a `CoreObserver` (docs/architecture.md §3.3) writing to the `dispatcher.events`
logger, one line per:

- task outcome (`event=task_finished`): task id, label, worker, miss, attempt, queue/load/run/
  total ms, status `completed` or the error code with its HTTP status (and the worker's code,
  e.g. `MODEL_LOAD_FAILED`); INFO, WARNING for a 5xx;
- model load and eviction as the worker reported them (`model_loaded` with `load_ms`,
  `model_evicted` with the label that made room), preloads sent (`preload_sent`);
- worker join, leave and suspension (`worker_joined`, `worker_left`, `worker_suspended`);
- re-dispatches and late results.

Structured fields travel as `extra=`, so `--log-format json` puts them in the object and the
text format appends them as `key=value` (`smartrouting.logs`).
"""

from __future__ import annotations

import logging
from typing import Any

from dispatcher.errors import TaskFailed
from dispatcher.interfaces import NullObserver
from dispatcher.registry import WorkerRecord
from dispatcher.routing import Preload
from dispatcher.tasks import TaskRecord, TaskState
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher.events")


def task_fields(task: TaskRecord) -> dict[str, Any]:
    """The fields of a finished task's log line (and of the status page's recent tasks)."""
    timings = task.timings_ms
    fields: dict[str, Any] = {
        "task_id": task.task_id,
        "label": task.label,
        "worker": task.worker_id,
        "miss": task.label_miss,
        "attempt": task.attempt,
        "queue_ms": timings.get("queue"),
        "load_ms": timings.get("load"),
        "run_ms": timings.get("run"),
        "total_ms": round((task.finished_at - task.submitted_at) * 1000.0, 3),
    }
    if task.state is TaskState.COMPLETED or task.error is None:
        fields.update(status="completed", http_status=200)
    else:
        fields.update(status=task.error.code, http_status=task.error.http_status)
        if isinstance(task.error, TaskFailed):
            fields["error_code"] = task.error.worker_code
    return fields


class EventLog(NullObserver):
    """Logs every task outcome, model load and eviction, and worker event of one core."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger

    def task_finished(self, task: TaskRecord, now: float) -> None:
        fields = task_fields(task)
        fields["event"] = "task_finished"
        level = logging.WARNING if fields["http_status"] >= 500 else logging.INFO
        self.log.log(level, "task %s %s", task.task_id, fields["status"], extra=fields)

    def task_redispatched(self, task: TaskRecord) -> None:
        self.log.info(
            "task %s re-dispatched",
            task.task_id,
            extra={"event": "task_redispatched", "task_id": task.task_id, "label": task.label},
        )

    def result_observed(
        self, record: WorkerRecord | None, label: str, result: pb.TaskResult
    ) -> None:
        worker = record.worker_id if record is not None else None
        if result.label_miss and result.load_ms > 0:
            self.log.info(
                "worker %s loaded %s in %.0f ms",
                worker,
                label,
                result.load_ms,
                extra={
                    "event": "model_loaded",
                    "worker": worker,
                    "label": label,
                    "load_ms": round(result.load_ms, 3),
                    "task_id": result.task_id,
                },
            )
        for evicted in result.labels_evicted:
            self.log.info(
                "worker %s evicted %s to load %s",
                worker,
                evicted,
                label,
                extra={
                    "event": "model_evicted",
                    "worker": worker,
                    "label": evicted,
                    "reason": f"room for {label}",
                },
            )

    def preload_sent(self, preload: Preload) -> None:
        self.log.info(
            "worker %s told to preload %s",
            preload.worker_id,
            preload.label,
            extra={
                "event": "preload_sent",
                "worker": preload.worker_id,
                "label": preload.label,
                "evict": list(preload.evict),
            },
        )

    def late_result(self, worker_id: str, task_id: str) -> None:
        self.log.info(
            "late result of task %s from worker %s",
            task_id,
            worker_id,
            extra={"event": "late_result", "worker": worker_id, "task_id": task_id},
        )

    def worker_joined(self, record: WorkerRecord) -> None:
        self.log.info(
            "worker %s joined",
            record.worker_id,
            extra={
                "event": "worker_joined",
                "worker": record.worker_id,
                "capacity": record.capacity,
                "slots": record.slots,
                "engine": record.engine,
                "device": record.device,
                "labels": sorted(record.labels),
            },
        )

    def worker_left(self, record: WorkerRecord) -> None:
        self.log.info(
            "worker %s left",
            record.worker_id,
            extra={
                "event": "worker_left",
                "worker": record.worker_id,
                "tasks_running": len(record.in_flight),
                "labels": sorted(record.labels),
            },
        )

    def worker_suspended(self, record: WorkerRecord, why: str) -> None:
        self.log.warning(
            "worker %s suspended after %d failures in a row",
            record.worker_id,
            record.failures,
            extra={
                "event": "worker_suspended",
                "worker": record.worker_id,
                "failures": record.failures,
                "reason": why,
            },
        )
