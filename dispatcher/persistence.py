"""Writing asynchronous tasks to the state database, off the event loop.

`Persistence` owns the `TaskStore` (SQLite) and one writer thread, so every write keeps its
order and none blocks the event loop. A new task is written before its caller hears "accepted"
(`add`, awaited); the worker a task is sent to, and a finished task's answer, are written when
the core reports them (an observer: docs/architecture.md §3.3), without holding anyone up. The
worker id lets a restarted dispatcher wait for that worker's buffered result instead of running
the task a second time (`dispatcher.recovery`). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dispatcher.errors import DispatcherError, ShuttingDown
from dispatcher.interfaces import NullObserver
from dispatcher.routing import Decision, Dispatch
from dispatcher.store import TaskStore
from dispatcher.tasks import TaskRecord

log = logging.getLogger("dispatcher.persistence")

#: Expire old rows once every this many writes (an expiry is one DELETE).
EXPIRE_EVERY_WRITES = 1000


class Persistence(NullObserver):
    """The state database of one dispatcher, written from one thread in submission order."""

    def __init__(self, store: TaskStore, result_ttl_s: float) -> None:
        self.store = store
        self.result_ttl_s = result_ttl_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-db")
        self._pending: set[Future[None]] = set()

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
        )
        task.persisted = True

    def task_routed(self, task: TaskRecord, decision: Decision, now: float) -> None:
        if not task.persisted:
            return
        if isinstance(decision, Dispatch):
            self._write(self.store.dispatched, task.task_id, decision.worker_id)
        elif task.attempt or task.restored:
            # Queued again (its worker left or handed it back; or restored): no worker holds it.
            self._write(self.store.dispatched, task.task_id, None)

    def task_finished(self, task: TaskRecord, now: float) -> None:
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
