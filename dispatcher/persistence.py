"""Writing asynchronous tasks to the task store, off the event loop.

`Persistence` owns the store (`dispatcher.store.TaskStorage`: the SQLite file, or the shared
PostgreSQL database) and one writer thread, so every write keeps its order and none blocks the
event loop; the lease calls and reads of a shared store (`renew`, `claim`, `get`) go through
the same thread. A new task is written before its caller hears "accepted"
(`add`, awaited); the worker a task is sent to, and a finished task's answer, are written when
the core reports them (an observer: docs/architecture.md §3.3), without holding anyone up. The
worker id lets a restarted dispatcher wait for that worker's buffered result instead of running
the task a second time (`dispatcher.recovery`). See docs/reliability.md.

A new row is held by this dispatcher (`holder`) for `lease_s`; with a shared store the
runtime renews those leases (`dispatcher.leases`). A synchronous task submitted with the
caller's own id is written once finished (`keep_result`) when the store is shared, so a retry
that lands on another dispatcher gets the stored answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from dispatcher.errors import DispatcherError, ShuttingDown
from dispatcher.interfaces import NullObserver
from dispatcher.routing import Decision, Dispatch
from dispatcher.store import BadRow, StoredTask, TaskStorage
from dispatcher.tasks import TaskRecord, TaskState

T = TypeVar("T")

log = logging.getLogger("dispatcher.persistence")

#: Expire old rows once every this many writes (an expiry is one DELETE).
EXPIRE_EVERY_WRITES = 1000


class Persistence(NullObserver):
    """The task store of one dispatcher, written from one thread in submission order."""

    def __init__(
        self,
        store: TaskStorage,
        result_ttl_s: float,
        holder: str | None = None,
        lease_s: float = 15.0,
    ) -> None:
        self.store = store
        self.result_ttl_s = result_ttl_s
        #: This dispatcher's id: the holder of the leases of the rows it writes.
        self.holder = holder
        self.lease_s = lease_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-db")
        self._pending: set[Future[None]] = set()
        #: Synchronous tasks submitted with the caller's id: their answer is kept in a shared
        #: store once they finish (`keep_result`).
        self._keep: set[str] = set()
        #: Ids of the unfinished tasks this dispatcher runs from the store (their leases).
        self.holding: set[str] = set()

    async def call(self, method: Callable[..., T], *args: Any) -> T:
        """Run a store method on the writer thread (after the writes queued before it)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    async def get(self, task_id: str) -> StoredTask | None:
        """The stored row of `task_id` (any dispatcher's), or None."""
        return await self.call(self.store.get, task_id)

    async def renew(self) -> set[str]:
        """Extend this dispatcher's leases; the ids of the unfinished rows it still holds."""
        assert self.holder is not None
        return await self.call(self.store.renew, self.holder, self.lease_s)

    async def claim(self, own: bool = False) -> tuple[list[StoredTask], list[BadRow]]:
        """Take over rows whose lease ended (with `own`: this holder's too, at start)."""
        assert self.holder is not None
        return await self.call(self.store.claim, self.holder, self.lease_s, 1000, own)

    def keep_result(self, task_id: str) -> None:
        """Write this synchronous task's answer to a shared store once it finishes."""
        if self.store.shared:
            self._keep.add(task_id)

    async def add(self, task: TaskRecord) -> None:
        """Record an accepted task; raises `StoreFailed` when it cannot be written."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._thread,
            self.store.add,
            task.task_id,
            task.task_type,
            task.label,
            task.parameters_json,
            task.deadline_unix_ms,
            task.owner,
            self.holder,
            self.lease_s,
        )
        task.persisted = True
        self.holding.add(task.task_id)

    def task_routed(self, task: TaskRecord, decision: Decision, now: float) -> None:
        if not task.persisted:
            return
        if isinstance(decision, Dispatch):
            self._write(self.store.dispatched, task.task_id, decision.worker_id)
        elif task.attempt or task.restored:
            # Queued again (its worker left or handed it back; or restored): no worker holds it.
            self._write(self.store.dispatched, task.task_id, None)

    def task_finished(self, task: TaskRecord, now: float) -> None:
        if task.task_id in self._keep and not task.persisted:
            self._keep.discard(task.task_id)
            if task.state is TaskState.COMPLETED:  # a failed task's id may run again anyway
                self._write(
                    self.store.keep_result,
                    task.task_id,
                    task.task_type,
                    task.label,
                    task.state.value,
                    task.answer_json(),
                    task.parameters_digest or "",
                    task.owner,
                )
            return
        self.holding.discard(task.task_id)
        if not task.persisted or isinstance(task.error, ShuttingDown):
            # Not ours, or left "queued" in the database on purpose: the next start runs it.
            return
        # The row keeps the parameters' digest, not the parameters (dropped at the finish).
        digest = task.parameters_digest or None
        self._write(self._finish, task.task_id, task.state.value, task.answer_json(), digest)

    def _write(self, write: Callable[..., None], task_id: str, *args: Any) -> None:
        """Run `write(task_id, *args)` on the writer thread, in order, logging a failure."""

        def run() -> None:
            try:
                write(task_id, *args)
            except DispatcherError as exc:  # the answer still reached a waiting caller
                log.error("could not record task %s: %s", task_id, exc)

        future = self._thread.submit(run)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _finish(
        self, task_id: str, state: str, answer: dict[str, object], digest: str | None
    ) -> None:
        self.store.finish(task_id, state, answer, digest)
        if self.store.writes % EXPIRE_EVERY_WRITES == 0:
            self.store.expire(self.result_ttl_s)

    async def close(self) -> None:
        """Finish the writes under way, then close the database."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._thread.shutdown, True)
        self.store.close()
