"""Writing asynchronous tasks to the state database, off the event loop.

`Persistence` owns the `TaskStore` (SQLite) and one writer thread, so every write keeps its
order and none blocks the event loop. A new task is written before its caller hears "accepted"
(`add`, awaited); a finished task's answer is written when the core reports it (an observer:
docs/architecture.md §3.3), without holding anyone up. See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from dispatcher.errors import DispatcherError, ShuttingDown
from dispatcher.interfaces import NullObserver
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
        )
        task.persisted = True

    def task_finished(self, task: TaskRecord, now: float) -> None:
        if not task.persisted or isinstance(task.error, ShuttingDown):
            # Not ours, or left "queued" in the database on purpose: the next start runs it.
            return
        future = self._thread.submit(
            self._finish, task.task_id, task.state.value, task.answer_json()
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _finish(self, task_id: str, state: str, answer: dict[str, object]) -> None:
        try:
            self.store.finish(task_id, state, answer)
            if self.store.writes % EXPIRE_EVERY_WRITES == 0:
                self.store.expire(self.result_ttl_s)
        except DispatcherError as exc:  # the answer still reached a waiting caller
            log.error("could not record task %s: %s", task_id, exc)

    async def close(self) -> None:
        """Finish the writes under way, then close the database."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._thread.shutdown, True)
        self.store.close()
