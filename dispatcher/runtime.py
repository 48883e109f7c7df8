"""The dispatcher on asyncio: the real clock and timers, waiting callers, start and shutdown.

`Dispatcher` assembles one dispatcher (docs/architecture.md §3): the sans-I/O `Core`, its
`Admission`, `Stats` and, with a state database, `Persistence`; it gives the core the event
loop's clock and timers, lets callers await a task's answer, repairs state after a restart,
expires kept results on a timer (so they go even when nobody reads) and runs the shutdown
sequence once, however many times it is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from dispatcher.admission import Admission
from dispatcher.catalogue import Catalogue
from dispatcher.config import Config
from dispatcher.core import GOING_AWAY_CLOSE_CODE, Core
from dispatcher.errors import DeadlineExceeded
from dispatcher.event_log import EventLog
from dispatcher.interfaces import NullObserver
from dispatcher.metrics import Metrics
from dispatcher.persistence import Persistence
from dispatcher.recovery import plan_recovery
from dispatcher.stats import Stats
from dispatcher.status_page import RecentTasks
from dispatcher.store import open_store
from dispatcher.tasks import TaskRecord
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher")

#: Longest pause between two expiries of kept results (shorter with a short TTL).
EXPIRE_EVERY_S = 30.0


class LoopClock:
    """The process's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def unix(self) -> float:
        return time.time()


class LoopTimers:
    """Timers on the running event loop."""

    def call_later(self, delay_s: float, callback: Callable[..., Any], *args: Any) -> Any:
        return asyncio.get_running_loop().call_later(delay_s, callback, *args)


class _Waiters(NullObserver):
    """Callers awaiting a task's answer, woken when the core reports it finished."""

    def __init__(self, running: dict[str, TaskRecord]) -> None:
        self._futures: dict[str, list[asyncio.Future[None]]] = {}
        self._running = running
        self.all_done = asyncio.Event()
        self.all_done.set()

    async def wait(self, task: TaskRecord) -> None:
        if task.state.finished:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(task.task_id, []).append(future)
        try:
            await future
        finally:
            futures = self._futures.get(task.task_id)
            if futures is not None and future in futures:
                futures.remove(future)
                if not futures:
                    del self._futures[task.task_id]

    def count(self, task_id: str) -> int:
        """Callers awaiting this task now."""
        return len(self._futures.get(task_id, ()))

    def task_routed(self, task: TaskRecord, decision: Any, now: float) -> None:
        if self._running:
            self.all_done.clear()

    def task_finished(self, task: TaskRecord, now: float) -> None:
        for future in self._futures.pop(task.task_id, ()):
            if not future.done():
                future.set_result(None)
        if not self._running:
            self.all_done.set()


class Dispatcher:
    """One dispatcher: tasks in through `submit`, answers out through `wait`."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.dispatcher_id = uuid.uuid4().hex[:12]
        self.started_at = time.monotonic()
        #: The model catalogue (dispatcher.catalogue): which labels are served, failed loads.
        self.catalogue = Catalogue()
        self.stats = Stats(metrics, self.catalogue.metric_label)
        # A damaged file is moved aside and replaced, never a crash loop (docs/reliability.md).
        self.store = open_store(config.state_db) if config.state_db else None
        self.persistence = (
            Persistence(self.store, config.result_ttl_s) if self.store is not None else None
        )
        self.core = Core(config, LoopClock(), LoopTimers())
        self._waiters = _Waiters(self.core.running)
        self.admission = Admission(
            self.core, self.persistence, self.stats.task_rejected, self.catalogue
        )
        # The catalogue first: Stats names labels by what it knows after the event.
        self.core.observers.extend(
            o
            for o in (self.catalogue, self.stats, self.admission, self.persistence, self._waiters)
            if o
        )
        self.stats.watch(self.core.registry, self.core.queue, self.core.running)
        # What happened, for operators: log lines and the status page's recent tasks.
        self.recent_tasks = RecentTasks()
        self.core.observers.extend((EventLog(), self.recent_tasks))
        self._shutdown: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def metrics(self) -> Metrics:
        return self.stats.metrics

    @property
    def accepting(self) -> bool:
        return self.core.accepting

    def start(self) -> None:
        """Restore the state database's tasks and start expiring kept results (call once, on
        the running event loop)."""
        self.restore()
        self._expire_results()

    def _expire_results(self) -> None:
        self.core.results.expire(self.core.clock.monotonic())
        every = min(EXPIRE_EVERY_S, max(0.1, self.config.result_ttl_s / 10))
        self._expiry = asyncio.get_running_loop().call_later(every, self._expire_results)

    def restore(self) -> tuple[int, int]:
        """Read the state database back (a restart); returns (tasks queued again, kept)."""
        if self.store is None:
            return 0, 0
        clock = self.core.clock
        plan = plan_recovery(self.store, self.config.result_ttl_s, clock.monotonic(), clock.unix())
        for task in plan.finished:
            self.core.keep_finished(task)
        for task in plan.expired:
            self.core.fail(task, DeadlineExceeded("the deadline passed during a restart"))
        for task in plan.requeue:
            self.admission.charge_restored(task)
            self.core.accept(task)
        for task in plan.held:  # sent to a worker before the restart: wait for its result
            self.admission.charge_restored(task)
            self.core.hold(task)
        unfinished = len(plan.requeue) + len(plan.held)
        if unfinished or plan.finished:
            log.info(
                "restored %d unfinished (%d held for their workers) and %d finished tasks",
                unfinished,
                len(plan.held),
                len(plan.finished),
            )
        return unfinished, len(plan.finished)

    async def submit(self, *args: Any, **kwargs: Any) -> TaskRecord:
        """Admit a task (see `Admission.submit`)."""
        return await self.admission.submit(*args, **kwargs)

    async def wait(self, task: TaskRecord) -> TaskRecord:
        """Wait for a task's answer (its deadline timer guarantees one)."""
        await self._waiters.wait(task)
        return task

    def waiting(self, task_id: str) -> int:
        """How many callers are awaiting this task's answer (`wait`) now."""
        return self._waiters.count(task_id)

    def task(self, task_id: str) -> TaskRecord | None:
        """A queued, running or finished (and not yet expired) task."""
        self.core.results.expire(self.core.clock.monotonic())
        return self.core.results.get(task_id)

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """The shutdown sequence, run once however often it is asked for."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shut_down(timeout_s))
        await asyncio.shield(self._shutdown)

    async def _shut_down(self, timeout_s: float | None) -> None:
        """Stop accepting and answer queued callers 503; let running tasks finish (bounded),
        fail the rest; tell workers to drain and close their sockets with 1001."""
        core = self.core
        if self._expiry is not None:
            self._expiry.cancel()
        core.stop_accepting()
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        if core.running:
            self._waiters.all_done.clear()
            try:
                await asyncio.wait_for(self._waiters.all_done.wait(), timeout)
            except TimeoutError:
                log.warning("%d tasks still running at shutdown", len(core.running))
        core.fail_running()
        drain = pb.DispatcherMessage(drain=pb.Drain(reason="dispatcher shutting down"))
        links = list(core.links.values())
        for link in links:
            link.send(drain)
        await asyncio.gather(
            *(link.close(GOING_AWAY_CLOSE_CODE, "dispatcher shutting down") for link in links),
            return_exceptions=True,
        )
        if self.persistence is not None:
            await self.persistence.close()
