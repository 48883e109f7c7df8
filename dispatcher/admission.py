"""Admission: whether a new task is taken, and what it becomes before the core routes it.

A task id makes a retry idempotent (`Admission.retried`): the same id with the same body
while the task is queued, running, or completed and kept (`--result-ttl-s`) is that task again,
not a second run; with another body it is 409 `TaskIdConflict`. A failed task's id may be used
again (a retry after a 503 runs the task anew).

The checks of a new task, in order: the dispatcher is accepting; the id is not in use; a
worker is connected (when so configured); the queue has room; the caller is under its limit
(`CallerLimits`); and, for an asynchronous task with a state database, the row is written
before the caller hears "accepted". A refused task raises the `DispatcherError` that says why
and leaves nothing behind. Per-caller counts are released when the core reports the task
finished.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from dispatcher.config import Config
from dispatcher.core import Core
from dispatcher.errors import DuplicateTask, NoWorkers, QueueFull, ShuttingDown, TaskIdConflict
from dispatcher.interfaces import NullObserver
from dispatcher.limits import CallerLimits
from dispatcher.persistence import Persistence
from dispatcher.tasks import TaskRecord, TaskState


class Admission(NullObserver):
    """Takes new tasks in for one core."""

    def __init__(
        self,
        core: Core,
        persistence: Persistence | None = None,
        rejected: Callable[[str], None] = lambda label: None,
    ) -> None:
        self.core = core
        self.config: Config = core.config
        self.persistence = persistence
        self.callers = CallerLimits(self.config.max_tasks_per_caller, self.config.retry_after_s)
        self._rejected = rejected
        #: Ids of tasks being written to the state database (not yet in the core).
        self._reserved: set[str] = set()

    async def submit(
        self,
        task_type: str,
        label: str,
        parameters_json: str,
        task_id: str | None = None,
        timeout_s: float | None = None,
        caller: str | None = None,
        persist: bool = False,
    ) -> TaskRecord:
        """Admit a task and hand it to the core; raises a `DispatcherError` when refused.

        `caller` counts the task against `max_tasks_per_caller`; `persist` writes it to the
        state database (when one is configured) before this returns. A retry of a known task
        (same id, same body) returns that task, whatever its state, and admits nothing.
        """
        if task_id is not None:
            known = self.retried(task_id, task_type, label, parameters_json)
            if known is not None:
                return known
        task = self.admit(task_type, label, parameters_json, task_id, timeout_s, caller)
        if persist and self.persistence is not None:
            self._reserved.add(task.task_id)
            try:
                # Written before the caller hears "accepted": a crash after this loses nothing.
                await self.persistence.add(task)
            except BaseException:
                self._release(task)
                raise
            finally:
                self._reserved.discard(task.task_id)
        self.core.accept(task)
        return task

    def retried(
        self, task_id: str, task_type: str, label: str, parameters_json: str
    ) -> TaskRecord | None:
        """The task a request with this id and body repeats: a queued, running or completed
        (and kept) one with the same body. None when the id is free or its task failed;
        `TaskIdConflict` (409) when the id is in use with another body."""
        results = self.core.results
        results.expire(self.core.clock.monotonic())  # a result past its TTL is forgotten
        known = results.get(task_id)
        if known is None or known.state is TaskState.FAILED:
            return None
        if not known.same_request(task_type, label, parameters_json):
            raise TaskIdConflict(
                f"task {task_id!r} exists ({known.state.value}) with another body;"
                " use a new task id for a new task"
            )
        return known

    def admit(
        self,
        task_type: str,
        label: str,
        parameters_json: str,
        task_id: str | None = None,
        timeout_s: float | None = None,
        caller: str | None = None,
    ) -> TaskRecord:
        """Run the checks and build the task (not yet handed to the core; nothing stored)."""
        core, config = self.core, self.config
        if not core.accepting:
            raise ShuttingDown("the dispatcher is shutting down", retry_after_s=1.0)
        task_id = task_id or uuid.uuid4().hex
        if core.results.live(task_id) or task_id in self._reserved:
            raise DuplicateTask(f"task {task_id!r} is already queued or running")
        if config.reject_without_workers and not core.registry.workers:
            raise NoWorkers("no worker is connected", retry_after_s=config.retry_after_s)
        if len(core.queue) >= config.max_queue:
            self._rejected(label)
            raise QueueFull(
                f"{len(core.queue)} tasks are queued (limit {config.max_queue})",
                retry_after_s=config.retry_after_s,
            )
        now, now_unix = core.clock.monotonic(), core.clock.unix()
        timeout = config.task_timeout_s if timeout_s is None else timeout_s
        task = TaskRecord(
            task_id=task_id,
            task_type=task_type,
            label=label,
            parameters_json=parameters_json,
            submitted_at=now,
            deadline=now + timeout,
            deadline_unix_ms=int((now_unix + timeout) * 1000),
            enqueued_at=now,
        )
        task.caller = self.callers.admit(caller)
        return task

    def task_finished(self, task: TaskRecord, now: float) -> None:
        self._release(task)

    def _release(self, task: TaskRecord) -> None:
        if task.caller is not None:
            self.callers.release(task.caller)
            task.caller = None
