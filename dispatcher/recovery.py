"""Restart recovery: what the state database says a fresh dispatcher should do.

`plan_recovery` reads the rows back and sorts them; the runtime applies the plan through the
core's public methods (docs/architecture.md §3.5). Unfinished asynchronous tasks are queued
again with what is left of their deadline; one whose deadline passed while the dispatcher was
down is answered 504; finished ones stay readable at `/tasks/{id}` until their TTL.

A task the old dispatcher had sent to a worker (the state database keeps the worker's id) may
still be running there, or its result may wait in that worker's outbox (kept across
reconnects). Such a task is **held**, not queued (`HeldTasks`): it is dispatched to nobody
until that worker reconnects and reports it, which completes it with no second run, or until
`HOLD_GRACE_S` passes without that, when it is queued again. Only that worker's result is taken
for a held task. A worker sends its outbox right after its Hello, so once it has reconnected,
`REJOIN_SETTLE_S` without its result means it has none to give (it is still running the task,
never got it, or gave the result to the old dispatcher): the task goes back to that worker if
it can take it (a worker ignores a task id it is already running, so its one run answers
it), else to the queue. A task queued again with no worker on record (a row written before the
dispatch was) still takes a buffered result that arrives while it waits in the queue
(`claim_restored`).

A row that cannot be read back (a value of the wrong type, an answer that is not JSON) is
quarantined (`TaskStore.quarantine`, an ERROR naming the task and why) and the good rows are
restored: one bad row must not stop the dispatcher from starting.

With a shared store (PostgreSQL, several dispatchers) a dispatcher restores only the rows it
claims (`plan_rows` over `TaskStorage.claim`): at start those whose lease ended or that it
held under the same id, later those whose holder stopped renewing (`dispatcher.leases`). Rows
are read one at a time for `/tasks/{id}` and retries (`task_of_row`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from dispatcher.store import BadRow, StoredTask, TaskStorage
from dispatcher.tasks import ResultStore, TaskQueue, TaskRecord, TaskState

log = logging.getLogger("dispatcher.recovery")


@dataclass
class RecoveryPlan:
    """Tasks read back from the state database, by what must happen to them."""

    requeue: list[TaskRecord] = field(default_factory=list)
    #: Sent to a worker before the restart (`task.worker_id`): held for that worker's result.
    held: list[TaskRecord] = field(default_factory=list)
    expired: list[TaskRecord] = field(default_factory=list)
    finished: list[TaskRecord] = field(default_factory=list)
    #: Rows moved to the quarantine table: (task id as stored, why).
    quarantined: list[tuple[object, str]] = field(default_factory=list)


def plan_recovery(
    store: TaskStorage, result_ttl_s: float, now: float, now_unix: float
) -> RecoveryPlan:
    """Read `store` (expired rows deleted first) into a plan; `now` is the core's clock.
    Rows that cannot be read back are quarantined and left out."""
    store.expire(result_ttl_s, now_unix)
    rows, bad = store.load_checked()
    return plan_rows(store, rows, bad, now, now_unix)


def plan_rows(
    store: TaskStorage, rows: list[StoredTask], bad: list[BadRow], now: float, now_unix: float
) -> RecoveryPlan:
    """Sort rows read back (or claimed) into a plan; `bad` ones, and rows that cannot be
    restored, are quarantined and left out."""
    plan = RecoveryPlan()
    for row_bad in bad:
        _quarantine(store, plan, row_bad.rowid, row_bad.task_id, row_bad.reason)
    for row in rows:
        try:
            task = _task_of(row, now, now_unix)
            if row.finished:
                _restore_finished(task, row, now, now_unix)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            _quarantine(store, plan, row.rowid, row.task_id, f"cannot be restored: {exc!r}")
            continue
        if row.finished:
            plan.finished.append(task)
        elif task.deadline <= now:
            plan.expired.append(task)
        elif row.worker_id:
            task.worker_id = row.worker_id
            plan.held.append(task)
        else:
            plan.requeue.append(task)
    return plan


def task_of_row(row: StoredTask, now: float, now_unix: float) -> TaskRecord:
    """A row as a task record (with its answer when finished); raises `ValueError` (or
    another error of `plan_rows`' list) when it cannot be restored."""
    task = _task_of(row, now, now_unix)
    if row.finished:
        _restore_finished(task, row, now, now_unix)
    elif row.worker_id:
        task.worker_id = row.worker_id
        task.state = TaskState.RUNNING
    return task


def _quarantine(
    store: TaskStorage, plan: RecoveryPlan, rowid: int, task_id: object, reason: str
) -> None:
    log.error(
        "state database: task %r cannot be restored (%s); moved to the quarantine table",
        task_id,
        reason,
    )
    store.quarantine(rowid, reason)
    plan.quarantined.append((task_id, reason))


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
        owner=row.owner,
        parameters_digest=row.parameters_digest or "",
    )


def _restore_finished(task: TaskRecord, row: StoredTask, now: float, now_unix: float) -> None:
    """Fill a finished row's answer in; raises when the answer does not fit its shape."""
    state = TaskState.COMPLETED if row.state == "completed" else TaskState.FAILED
    answer = row.answer or {}
    task.restore_answer(state, answer)
    if state is TaskState.COMPLETED and not isinstance(task.timings_ms, dict):
        raise ValueError("timings_ms is not an object")
    task.finished_at = now - (now_unix - (row.finished_unix or now_unix))
    done = answer.get("completed") if state is TaskState.COMPLETED else None
    task.answer_bytes = len(json.dumps(done)) if done is not None else 0


#: How long a restored task waits for a worker that ran it and does not reconnect (workers
#: reconnect within their backoff, at most 5 s by default) before it is queued again.
HOLD_GRACE_S = 15.0
#: After the worker a task is held for reconnects: its buffered results arrive right after its
#: Hello, so this long without one ends the hold.
REJOIN_SETTLE_S = 1.0


class HeldTasks:
    """Restored tasks waiting for the worker that was running them (sans-I/O bookkeeping)."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def hold(self, task: TaskRecord) -> None:
        """Hold `task` for `task.worker_id`; it shows as running (it may be, there)."""
        assert task.worker_id, task
        task.state = TaskState.RUNNING
        self._tasks[task.task_id] = task

    def claim(self, worker_id: str, task_id: str) -> TaskRecord | None:
        """The held task `worker_id` reports a result of, now released; None when `task_id`
        is not held, or is held for another worker (whose result alone is taken)."""
        task = self._tasks.get(task_id)
        if task is None or task.worker_id != worker_id:
            return None
        return self._tasks.pop(task_id)

    def of_worker(self, worker_id: str) -> list[str]:
        """Ids of the tasks held for `worker_id`."""
        return [t.task_id for t in self._tasks.values() if t.worker_id == worker_id]

    def release(self, task_id: str) -> TaskRecord | None:
        """Stop holding a task (its grace passed, or it was answered); None if not held."""
        return self._tasks.pop(task_id, None)

    def drain(self) -> list[TaskRecord]:
        """Stop holding every task (shutdown)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        return tasks


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
