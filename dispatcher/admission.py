"""Admission: whether a new task is taken, and what it becomes before the core routes it.

A task id makes a retry idempotent (`Admission.retried`): the same id with the same body
while the task is queued, running, or completed and kept (`--result-ttl-s`) is that task again,
not a second run; with another body it is 409 `TaskIdConflict`. A failed task's id may be used
again (a retry after a 503 runs the task anew), once a cancelled run of it has left its worker
(409 `duplicate_task` with Retry-After until then).

A task belongs to the API key that submitted it (`owner`, when keys are in use): another key
cannot read, cancel, repeat or replace it; its id is refused 409 for that key as for a task
with another body (the id is in use), and nothing of the task is told.

The checks of a new task, in order: the dispatcher is accepting; the id is not in use; the
label is in the model catalogue and did not fail to load lately (`dispatcher.catalogue`); a
worker is connected (when so configured); the queue has room; the bytes of parameters held by
unfinished tasks stay under their caps, in all and per caller (`ByteBudget`); the caller is
under its limit of tasks (`CallerLimits`); and, for an asynchronous task with a state
database, the row is written before the caller hears "accepted". A refused task raises the
`DispatcherError` that says why and leaves nothing behind. Per-caller counts and bytes are
released when the core reports the task finished (its parameters are dropped then:
`dispatcher.tasks`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from dispatcher.catalogue import Catalogue
from dispatcher.config import Config
from dispatcher.core import Core
from dispatcher.errors import (
    CallerBusy,
    DuplicateTask,
    NoWorkers,
    QueueFull,
    ShuttingDown,
    TaskIdConflict,
)
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
        catalogue: Catalogue | None = None,
    ) -> None:
        self.core = core
        #: The model catalogue: an unknown label, or one whose load failed lately, is
        #: answered at once without a trip to a worker (None: every label goes).
        self.catalogue = catalogue
        self.config: Config = core.config
        self.persistence = persistence
        self.callers = CallerLimits(self.config.max_tasks_per_caller, self.config.retry_after_s)
        self.budget = ByteBudget(
            self.config.max_queued_bytes, self.config.max_caller_bytes, self.config.retry_after_s
        )
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
        owner: str | None = None,
    ) -> TaskRecord:
        """Admit a task and hand it to the core; raises a `DispatcherError` when refused.

        `caller` counts the task against `max_tasks_per_caller` and `max_caller_bytes`;
        `owner` (the hashed API key; None: anyone) alone may read it and repeat its id;
        `persist` writes it to the state database (when one is configured) before this
        returns. A retry of a known task (same id, same body, same owner) returns that task,
        whatever its state, and admits nothing.
        """
        if task_id is not None:
            known = self.retried(task_id, task_type, label, parameters_json, owner)
            if known is not None:
                return known
        task = self.admit(task_type, label, parameters_json, task_id, timeout_s, caller)
        task.owner = owner
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
        self,
        task_id: str,
        task_type: str,
        label: str,
        parameters_json: str,
        owner: str | None = None,
    ) -> TaskRecord | None:
        """The task a request with this id and body repeats: a queued, running or completed
        (and kept) one with the same body and owner. None when the id is free or its owner's
        task failed; `TaskIdConflict` (409) when the id is in use with another body, or by
        another owner (whatever its state, which is not told)."""
        results = self.core.results
        results.expire(self.core.clock.monotonic())  # a result past its TTL is forgotten
        known = results.get(task_id)
        if known is not None and known.owner != owner:
            raise TaskIdConflict(f"task id {task_id!r} is in use; use a new task id")
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
        if core.cancel_pending(task_id) is not None:
            raise DuplicateTask(
                f"task {task_id!r} failed and its run is still being cancelled on a worker;"
                " retry shortly",
                retry_after_s=config.cancel_grace_s,
            )
        if self.catalogue is not None:
            refusal = self.catalogue.refusal(label, core.clock.monotonic())
            if refusal is not None:
                raise refusal
        if config.reject_without_workers and not core.registry.workers:
            raise NoWorkers("no worker is connected", retry_after_s=config.retry_after_s)
        if len(core.queue) >= config.max_queue:
            self._rejected(label)
            raise QueueFull(
                f"{len(core.queue)} tasks are queued (limit {config.max_queue})",
                retry_after_s=config.retry_after_s,
            )
        size = len(parameters_json)
        self.budget.check(caller, size)
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
        self.budget.charge(task.task_id, caller, size)
        return task

    def charge_restored(self, task: TaskRecord) -> None:
        """Count the parameters of a task read back from the state database (no caller; never
        refused: it was admitted before the restart)."""
        self.budget.charge(task.task_id, None, len(task.parameters_json))

    def task_finished(self, task: TaskRecord, now: float) -> None:
        self._release(task)

    def _release(self, task: TaskRecord) -> None:
        self.budget.release(task.task_id)
        if task.caller is not None:
            self.callers.release(task.caller)
            task.caller = None


class ByteBudget:
    """Bytes of parameters held by unfinished tasks, against a cap in all (`total_limit`) and
    one per caller (`caller_limit`); 0 means no cap. Past a cap a new task is refused 429
    (`QueueFull` in all, `CallerBusy` for the caller) with Retry-After: the queue is bounded
    in bytes as well as in tasks, so large parameters cannot exhaust memory."""

    def __init__(self, total_limit: int, caller_limit: int, retry_after_s: float) -> None:
        self.total_limit = total_limit
        self.caller_limit = caller_limit
        self.retry_after_s = retry_after_s
        self.total = 0
        self.by_caller: dict[str, int] = {}
        self._tasks: dict[str, tuple[str | None, int]] = {}

    def check(self, caller: str | None, size: int) -> None:
        """Raise 429 when `size` more bytes of `caller` would pass a cap."""
        if self.total_limit and self.total + size > self.total_limit:
            raise QueueFull(
                f"unfinished tasks hold {self.total} bytes of parameters; {size} more would"
                f" pass the limit of {self.total_limit} (--max-queued-bytes)",
                retry_after_s=self.retry_after_s,
            )
        held = self.by_caller.get(caller, 0) if caller is not None else 0
        if caller is not None and self.caller_limit and held + size > self.caller_limit:
            raise CallerBusy(
                f"this caller's unfinished tasks hold {held} bytes of parameters; {size} more"
                f" would pass the limit of {self.caller_limit} (--max-caller-bytes)",
                retry_after_s=self.retry_after_s,
            )

    def charge(self, task_id: str, caller: str | None, size: int) -> None:
        """Count `size` bytes for `task_id` (of `caller`) until `release`."""
        self.release(task_id)
        self._tasks[task_id] = (caller, size)
        self.total += size
        if caller is not None:
            self.by_caller[caller] = self.by_caller.get(caller, 0) + size

    def release(self, task_id: str) -> None:
        """The task finished (or was refused): its bytes are free again."""
        charged = self._tasks.pop(task_id, None)
        if charged is None:
            return
        caller, size = charged
        self.total -= size
        if caller is not None:
            left = self.by_caller.get(caller, size) - size
            if left > 0:
                self.by_caller[caller] = left
            else:
                self.by_caller.pop(caller, None)
