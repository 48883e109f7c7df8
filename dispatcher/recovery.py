"""Restart recovery: read the state database back into a fresh dispatcher.

Unfinished asynchronous tasks are queued again with what is left of their deadline (a task
whose deadline passed while the dispatcher was down is answered 504); finished ones stay
readable at `/tasks/{id}` until their TTL. A task queued again may have been running on a
worker when the old dispatcher died: if that worker reports its result after reconnecting, the
dispatcher takes it instead of running the task twice (`Dispatcher.worker_result`).
"""

from __future__ import annotations

import logging
import time

from dispatcher.core import Dispatcher
from dispatcher.errors import DeadlineExceeded
from dispatcher.tasks import TaskRecord, TaskState

log = logging.getLogger("dispatcher.recovery")


def restore(d: Dispatcher) -> tuple[int, int]:
    """Load `d.store` into `d`; returns (tasks queued again, finished tasks kept)."""
    if d.store is None:
        return 0, 0
    d.store.expire(d.config.result_ttl_s)
    requeued = kept = 0
    now, now_unix = time.monotonic(), time.time()
    for row in d.store.load():
        if d.results.live(row.task_id):
            continue
        remaining = row.deadline_unix_ms / 1000.0 - now_unix
        task = TaskRecord(
            task_id=row.task_id,
            task_type=row.task_type,
            label=row.label,
            parameters_json=row.parameters_json,
            submitted_at=now - (now_unix - row.submitted_unix),
            deadline=now + remaining,
            deadline_unix_ms=row.deadline_unix_ms,
            enqueued_at=now,
            persisted=True,
            restored=True,
        )
        if row.finished:
            state = TaskState.COMPLETED if row.state == "completed" else TaskState.FAILED
            task.restore_answer(state, row.answer or {})
            task.finished_at = now - (now_unix - (row.finished_unix or now_unix))
            task.done.set()
            d.results.add(task)
            d.results.finished(task, task.finished_at)
            kept += 1
        elif remaining <= 0:
            d.fail_restored(task, DeadlineExceeded("the deadline passed during a restart"))
        else:
            d.accept_restored(task, remaining)
            requeued += 1
    if requeued or kept:
        log.info("restored %d unfinished and %d finished tasks", requeued, kept)
    return requeued, kept
