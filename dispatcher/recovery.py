"""Restart recovery: what the state database says a fresh dispatcher should do.

`plan_recovery` reads the rows back and sorts them; the runtime applies the plan through the
core's public methods (docs/architecture.md §3.5). Unfinished asynchronous tasks are queued
again with what is left of their deadline; one whose deadline passed while the dispatcher was
down is answered 504; finished ones stay readable at `/tasks/{id}` until their TTL. A task
queued again may have been running on a worker when the old dispatcher died: if that worker
reports its result after reconnecting, the core takes it instead of running the task twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatcher.store import StoredTask, TaskStore
from dispatcher.tasks import ResultStore, TaskQueue, TaskRecord, TaskState


@dataclass
class RecoveryPlan:
    """Tasks read back from the state database, by what must happen to them."""

    requeue: list[TaskRecord] = field(default_factory=list)
    expired: list[TaskRecord] = field(default_factory=list)
    finished: list[TaskRecord] = field(default_factory=list)


def plan_recovery(
    store: TaskStore, result_ttl_s: float, now: float, now_unix: float
) -> RecoveryPlan:
    """Read `store` (expired rows deleted first) into a plan; `now` is the core's clock."""
    store.expire(result_ttl_s, now_unix)
    plan = RecoveryPlan()
    for row in store.load():
        task = _task_of(row, now, now_unix)
        if row.finished:
            state = TaskState.COMPLETED if row.state == "completed" else TaskState.FAILED
            task.restore_answer(state, row.answer or {})
            task.finished_at = now - (now_unix - (row.finished_unix or now_unix))
            plan.finished.append(task)
        elif task.deadline <= now:
            plan.expired.append(task)
        else:
            plan.requeue.append(task)
    return plan


def _task_of(row: StoredTask, now: float, now_unix: float) -> TaskRecord:
    remaining = row.deadline_unix_ms / 1000.0 - now_unix
    return TaskRecord(
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


def claim_restored(
    results: ResultStore,
    queue: TaskQueue,
    running: dict[str, TaskRecord],
    worker_id: str,
    task_id: str,
) -> TaskRecord | None:
    """A task queued again after a restart whose first run a worker reports now (its outbox
    kept the result across the reconnect): take it off the queue as running on that worker,
    so the result completes it instead of the task running twice. None if it is no such task.
    """
    task = results.get(task_id)
    if task is None or not task.restored or queue.remove(task_id) is None:
        return None
    task.worker_id = worker_id
    task.dispatched_at = task.enqueued_at
    task.state = TaskState.RUNNING
    running[task_id] = task
    return task
