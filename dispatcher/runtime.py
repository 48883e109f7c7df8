"""The dispatcher on asyncio: the real clock and timers, waiting callers, start and shutdown.

`Dispatcher` assembles one dispatcher (docs/architecture.md §3): the sans-I/O `Core`, its
`Admission`, `Stats` and, with a state database, `Persistence`; it gives the core the event
loop's clock and timers, lets callers await a task's answer, repairs state after a restart,
expires kept results on a timer (so they go even when nobody reads) and runs the shutdown
sequence once, however many times it is asked for.

With a shared task store (`--store-url`, docs/architecture.md "Shared task store") it also
runs the lease loop (`dispatcher.leases`): tasks other dispatchers stopped renewing are
claimed and queued here. A task this dispatcher does not have is looked up in the store
(`find`): a finished one is kept here like a local result (so an idempotent retry gets it), an
unfinished one another dispatcher runs is answered from the store (`wait` polls it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from dispatcher.admission import Admission
from dispatcher.catalogue import Catalogue
from dispatcher.config import Config
from dispatcher.core import GOING_AWAY_CLOSE_CODE, Core
from dispatcher.errors import DeadlineExceeded, DispatcherError, TaskIdConflict
from dispatcher.event_log import EventLog
from dispatcher.interfaces import NullObserver
from dispatcher.leases import LeaseLoop
from dispatcher.metrics import Metrics
from dispatcher.persistence import Persistence
from dispatcher.recovery import RecoveryPlan, plan_recovery, plan_rows, task_of_row
from dispatcher.stats import Stats
from dispatcher.status_page import RecentTasks
from dispatcher.store import BadRow, StoredTask, open_task_store
from dispatcher.tasks import TaskRecord, TaskState
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher")

#: Longest pause between two expiries of kept results (shorter with a short TTL).
EXPIRE_EVERY_S = 30.0
#: How often a caller waiting for a task another dispatcher runs reads the shared store.
REMOTE_POLL_S = 0.2
#: Dispatchers made in this process so far (the second and later get a suffix: tests run
#: several in one process, and the id names a lease holder).
_INSTANCES = itertools.count(1)


def default_dispatcher_id() -> str:
    """`<hostname>-<pid>`: stable across a container's restarts in one pod (pid 1), so a
    restarted dispatcher takes its own leases back at once; unique per process otherwise."""
    base = f"{socket.gethostname()}-{os.getpid()}"
    n = next(_INSTANCES)
    return base if n == 1 else f"{base}-{n}"


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
        self.dispatcher_id = config.dispatcher_id or default_dispatcher_id()
        self.started_at = time.monotonic()
        #: The model catalogue (dispatcher.catalogue): which labels are served, failed loads.
        self.catalogue = Catalogue()
        self.stats = Stats(metrics, self.catalogue.metric_label)
        # A damaged file is moved aside and replaced, never a crash loop (docs/reliability.md).
        self.store = open_task_store(config.store_url, config.state_db)
        self.persistence = (
            Persistence(self.store, config.result_ttl_s, self.dispatcher_id, config.lease_s)
            if self.store is not None
            else None
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
        self.stats.watch(
            self.core.registry,
            self.core.queue,
            self.core.running,
            self.core.cold_payoff,
            self.core.demand,
        )
        # What happened, for operators: log lines and the status page's recent tasks.
        self.recent_tasks = RecentTasks()
        self.core.observers.extend((EventLog(), self.recent_tasks))
        self._shutdown: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        #: Renews and claims leases on a shared store (None: no store, or SQLite).
        self.leases: LeaseLoop | None = None
        if self.persistence is not None and self.persistence.store.shared:
            self.leases = LeaseLoop(self.persistence, config.lease_s, self._adopt, self._holding)
        #: Unfinished tasks read from the shared store that another dispatcher runs.
        self._remote: weakref.WeakValueDictionary[str, TaskRecord] = weakref.WeakValueDictionary()

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
        if self.leases is not None:
            self.leases.start()

    def _expire_results(self) -> None:
        self.core.results.expire(self.core.clock.monotonic())
        every = min(EXPIRE_EVERY_S, max(0.1, self.config.result_ttl_s / 10))
        self._expiry = asyncio.get_running_loop().call_later(every, self._expire_results)

    @property
    def shared_store(self) -> bool:
        """Whether the task store is shared with other dispatchers (PostgreSQL)."""
        return self.leases is not None

    def restore(self) -> tuple[int, int]:
        """Read the state database back (a restart); returns (tasks queued again, kept).
        A shared store is not read whole: the lease loop claims what this dispatcher runs."""
        if self.store is None or self.shared_store:
            return 0, 0
        clock = self.core.clock
        plan = plan_recovery(self.store, self.config.result_ttl_s, clock.monotonic(), clock.unix())
        return self._apply_plan(plan)

    def _holding(self) -> set[str]:
        assert self.persistence is not None
        return set(self.persistence.holding)

    async def _adopt(self, rows: list[StoredTask], bad: list[BadRow]) -> None:
        """Queue tasks claimed from the shared store (those running here already stay)."""
        assert self.persistence is not None
        rows = [r for r in rows if not self._runs_here(r.task_id)]
        clock = self.core.clock
        now, now_unix = clock.monotonic(), clock.unix()
        # On the writer thread: a bad row is quarantined with a write.
        plan = await self.persistence.call(plan_rows, self.store, rows, bad, now, now_unix)
        self.persistence.holding.update(t.task_id for t in plan.requeue + plan.held)
        self._apply_plan(plan)

    def _runs_here(self, task_id: str) -> bool:
        task = self.core.results.get(task_id)
        return task is not None and not task.state.finished

    def _apply_plan(self, plan: RecoveryPlan) -> tuple[int, int]:
        """Hand restored or claimed tasks to the core; returns (unfinished, finished)."""
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
        """Admit a task (see `Admission.submit`). With a shared store, a task id this
        dispatcher does not know is looked up there first: a retry of a task another
        dispatcher finished gets its answer, one it still runs gets that task (`wait` reads
        the store), one whose dispatcher died is claimed here (then it is a local retry)."""
        task_id = kwargs.get("task_id")
        if task_id and self.shared_store and self.core.results.get(task_id) is None:
            remote = await self._remote_retry(task_id, kwargs)
            if remote is not None:
                return remote
        task = await self.admission.submit(*args, **kwargs)
        persisted = kwargs.get("persist", False)
        if task_id and not persisted and not task.state.finished and self.persistence:
            self.persistence.keep_result(task.task_id)  # a sync retry elsewhere gets it
        return task

    async def _remote_retry(self, task_id: str, request: dict[str, Any]) -> TaskRecord | None:
        """The unfinished task another dispatcher runs that this request repeats, or None
        (then admission decides: the id is free, or a finished answer is now kept here)."""
        task = await self.find(task_id)
        if task is None or not self.is_remote(task):
            return None
        if self.leases is not None:
            await self.leases.claim_now()  # ours now if its dispatcher stopped renewing
        if self.core.results.get(task_id) is not None:
            return None
        same = task.same_request(
            request.get("task_type", ""),
            request.get("label", ""),
            request.get("parameters_json", ""),
        )
        if task.owner != request.get("owner") or not same:
            raise TaskIdConflict(f"task id {task_id!r} is in use; use a new task id")
        return task

    async def find(self, task_id: str) -> TaskRecord | None:
        """A task here (`task`), else its row in a shared store: a finished one is kept here
        as a result, an unfinished one is returned as another dispatcher's (`is_remote`)."""
        task = self.task(task_id)
        if task is not None or not self.shared_store or self.persistence is None:
            return task
        try:
            row = await self.persistence.get(task_id)
        except DispatcherError as exc:
            log.error("task store: cannot read task %s: %s", task_id, exc)
            return None
        task = self._record_of(row)
        if task is not None and task.state.finished:
            if self.core.results.get(task_id) is None:
                self.core.keep_finished(task)
            return self.core.results.get(task_id)
        if task is not None:
            self._remote[task_id] = task
        return task

    def _record_of(self, row: StoredTask | None) -> TaskRecord | None:
        if row is None:
            return None
        clock = self.core.clock
        try:
            return task_of_row(row, clock.monotonic(), clock.unix())
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            log.error("task store: task %s cannot be read: %r", row.task_id, exc)
            return None

    def is_remote(self, task: TaskRecord) -> bool:
        """Whether `task` is another dispatcher's, read from the shared store."""
        return self._remote.get(task.task_id) is task

    async def wait(self, task: TaskRecord) -> TaskRecord:
        """Wait for a task's answer (its deadline timer guarantees one); another dispatcher's
        task is read from the store until it is finished (or its deadline passed)."""
        if self.is_remote(task):
            await self._wait_remote(task)
            return task
        await self._waiters.wait(task)
        return task

    async def _wait_remote(self, task: TaskRecord) -> None:
        assert self.persistence is not None
        while not task.state.finished:
            await asyncio.sleep(REMOTE_POLL_S)
            if self.core.clock.monotonic() > task.deadline:
                task.error = DeadlineExceeded(f"no answer for task {task.task_id!r} in time")
                task.state = TaskState.FAILED
                return
            try:
                fresh = self._record_of(await self.persistence.get(task.task_id))
            except DispatcherError:
                continue
            if fresh is None:
                continue
            for field in dataclasses.fields(fresh):
                setattr(task, field.name, getattr(fresh, field.name))

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
        if self.leases is not None:
            await self.leases.stop()
        drain = pb.DispatcherMessage(drain=pb.Drain(reason="dispatcher shutting down"))
        links = list(core.links.values())
        for link in links:
            link.send(drain)
        await asyncio.gather(
            *(link.close(GOING_AWAY_CLOSE_CODE, "dispatcher shutting down") for link in links),
            return_exceptions=True,
        )
        if self.persistence is not None:
            if self.leases is not None:
                await self._release_leases(self.persistence)
            await self.persistence.close()

    async def _release_leases(self, persistence: Persistence) -> None:
        """Hand the unfinished tasks' leases back (another dispatcher claims them at once)."""
        try:
            released = await persistence.call(persistence.store.release, self.dispatcher_id)
        except DispatcherError as exc:
            log.error("task store: could not release leases: %s", exc)
            return
        if released:
            log.info("released the leases of %d unfinished tasks", released)
