"""The worker process: engine + model manager + dispatcher connections + task execution.

The worker links to every dispatcher it is given (or discovers) and is the single owner of its
slots (docs/architecture.md §6.6): a task's result goes back on the link it came from; a task
arriving with every slot taken is answered BUSY at once (not run, no attempt); each start and
end of a task is reported (`Occupancy`) to the other dispatchers, so each sees the load the
others place: a slot taken at once, a slot freed after `--occupancy-hold-ms`, so that the
task's own dispatcher can refill it before the others race for it (worker/occupancy.py).
A task id that arrives again (a survivor re-sending a dead dispatcher's task, a
caller retrying through another dispatcher) is never run twice here: while it runs, the new
link joins it and gets the same result; once it has finished, its result is answered at once
from the recent results (worker/results.py) or from a down link's outbox.

Shutdown (SIGTERM/SIGINT) is a fixed sequence with a deadline; the signal handler
only sets an event:

1. stop taking tasks (state DRAINING; a Task that still arrives is answered
   WORKER_SHUTTING_DOWN);
2. tasks received but not started are cancelled and handed back in `Goodbye`;
3. running tasks finish (bounded by `shutdown_timeout_s`) and their results are sent;
4. the outbox is flushed, the websocket closed with 1001;
5. every label unloaded, the engine (tritonserver) stopped; exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from proto import smartrouting_pb2 as pb
from proto.frames import PROTOCOL_VERSION, body_of
from worker.cache import ModelState
from worker.config import Config
from worker.connection import ConnectionState, DispatcherConnection
from worker.discovery import DispatcherDiscovery
from worker.engines.base import Engine
from worker.errors import (
    DeadlineExceededError,
    EngineUnavailableError,
    ShuttingDownError,
    WorkerError,
    error_code,
    public_message,
)
from worker.models import LoadOutcome, ModelManager
from worker.observability import WorkerObservability
from worker.occupancy import RefillHistory, SlotView, announce
from worker.probes import serving_probes
from worker.repository import ModelRepository
from worker.results import RecentResults, answer_for, worth_remembering
from worker.tasks import Limits, execute, parse_task

log = logging.getLogger(__name__)


class WorkerState(enum.Enum):
    """Lifecycle of the worker process."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


def build_engine(config: Config) -> Engine:
    """The engine named by the configuration."""
    if config.engine == "simulated":
        from worker.engines.simulated import SimulatedEngine

        return SimulatedEngine(
            load_ms=config.sim_load_ms,
            load_stddev_ms=config.sim_load_stddev_ms,
            run_ms=config.sim_run_ms,
            run_stddev_ms=config.sim_run_stddev_ms,
            time_scale=config.time_scale,
            seed=config.seed,
        )
    repository = ModelRepository(config.model_repository)
    if config.engine == "onnxruntime":
        from worker.engines.onnxruntime import OnnxRuntimeEngine

        delay = config.batch_delay_ms if config.batching else None
        return OnnxRuntimeEngine(repository, device=config.device, batch_delay_ms=delay)
    from worker.engines.triton import TritonEngine

    state_dir = config.state_dir or Path("var") / "worker" / config.worker_id
    return TritonEngine(
        repository,
        state_dir=state_dir,
        binary=config.tritonserver,
        model_config=config.triton_model_config,
        device=config.device,
        log_to_stdout=config.triton_log == "stdout",
    )


@dataclass
class _Pending:
    task: pb.Task
    received: float
    #: The dispatcher the task came from: its result goes back there.
    link: DispatcherConnection
    job: asyncio.Task[None] | None = None
    started: bool = False
    #: Other dispatchers that sent the same task id since: each gets the one result too.
    followers: list[tuple[DispatcherConnection, pb.Task]] = field(default_factory=list)

    def awaits(self, link: DispatcherConnection) -> bool:
        """Whether `link` is owed this task's result (it sent the task)."""
        return link is self.link or any(f is link for f, _ in self.followers)

    def recipients(self) -> list[tuple[DispatcherConnection, pb.Task]]:
        """Every link owed the result, with the Task it sent (the owner first)."""
        return [(self.link, self.task), *self.followers]


@dataclass
class Worker:
    """One worker: call `run()`; `request_stop()` (or SIGTERM) ends it cleanly."""

    config: Config
    engine: Engine | None = None
    state: WorkerState = WorkerState.STARTING
    #: Tasks run and answered (ok or not) since start; cancelled ones do not count.
    tasks_run: int = 0
    #: Tasks answered BUSY (every slot taken when they arrived) since start.
    busy_answers: int = 0
    #: Task ids that arrived again and were answered with the one run's result, not run.
    results_shared: int = 0
    #: One link per dispatcher, by URL (with dns discovery: per address).
    links: dict[str, DispatcherConnection] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _background: set[asyncio.Task[object]] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _link_jobs: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: Set when a link cannot run at all (an invalid URL): the worker stops with exit code 1.
    _link_failed: asyncio.Event = field(default_factory=asyncio.Event)
    _link_error: BaseException | None = None
    #: Runs a callback after a delay (s): the loop's call_later unless a test injects its own.
    schedule: Callable[[float, Callable[[], None]], object] | None = None
    #: Per link URL: the state that dispatcher was last told (Hello, Occupancy, LabelsChanged).
    _told: dict[str, SlotView] = field(default_factory=dict)
    #: A freed slot is held back from some link: the flush that will tell it is scheduled.
    _flush_scheduled: bool = False

    def __post_init__(self) -> None:
        self.engine = self.engine or build_engine(self.config)
        # Logs of loads, evictions and tasks, and their metrics where served (--http-port).
        self.observability = WorkerObservability(self, metrics=self.config.http_port is not None)
        self.models = ModelManager(
            self.engine, self.config.capacity, self._labels_changed, events=self.observability
        )
        self.limits = Limits(
            max_texts=self.config.max_texts, max_text_chars=self.config.max_text_chars
        )
        self._slots = asyncio.Semaphore(self.config.slots)
        #: Which dispatchers refill their freed slots in time: only theirs are held back.
        self.refills = RefillHistory(self.config.occupancy_hold_ms / 1000.0)
        #: Successful results of the last minutes, for a task id sent again.
        self.recent = RecentResults()
        self.discovery: DispatcherDiscovery | None = None
        if self.config.dispatcher_discovery == "dns":
            self.discovery = DispatcherDiscovery(
                self.config.dispatcher_url,
                self._links_changed,
                interval_s=self.config.discovery_interval_s,
            )
        else:
            for url in self.config.dispatcher_url:
                self._make_link(url)

    # -- links to the dispatchers --------------------------------------------

    def links_open(self) -> int:
        """Dispatcher links open now (readiness and metrics: worker/probes.py)."""
        return sum(link.state is ConnectionState.OPEN for link in self.links.values())

    def slots_in_use(self) -> int:
        """Slots taken now: tasks accepted and not yet answered (metrics)."""
        return len(self._pending)

    def _make_link(self, url: str) -> DispatcherConnection:
        link = DispatcherConnection(
            url,
            self.config.worker_id,
            hello=lambda: self.hello(url),
            on_message=lambda message: self._on_message(link, message),
            ping_interval_s=self.config.ping_interval_s,
            max_backoff_s=self.config.reconnect_max_backoff_s,
            token=self.config.worker_token,
        )
        self.links[url] = link
        return link

    def _start_link(self, url: str) -> None:
        job = asyncio.create_task(
            self.links[url].run(), name=f"dispatcher-link-{self.config.worker_id}-{url}"
        )
        self._link_jobs[url] = job
        job.add_done_callback(self._link_ended)

    def _link_ended(self, job: asyncio.Task[None]) -> None:
        if not job.cancelled() and job.exception() is not None:
            self._link_error = job.exception()
            self._link_failed.set()

    def _links_changed(self, added: list[str], removed: list[str]) -> None:
        """Discovery found new dispatchers or lost some: open and close links to match."""
        if self.state is not WorkerState.RUNNING:
            return
        for url in added:
            if url not in self.links:
                self._make_link(url)
                self._start_link(url)
        for url in removed:
            link = self.links.pop(url, None)
            job = self._link_jobs.pop(url, None)
            self._told.pop(url, None)
            self.refills.forget(url)
            if link is not None:
                # Gone from DNS: its pod is gone too, and results still queued for it with it.
                self._spawn(self._close_link(link, job), f"close-link-{url}")

    async def _close_link(self, link: DispatcherConnection, job: asyncio.Task[None] | None) -> None:
        await link.close(1001, "dispatcher no longer discovered")
        if job is not None:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    # -- messages out --------------------------------------------------------

    def hello(self, link_url: str | None = None) -> pb.Hello:
        """The Hello for a (re)connection: capacity, slots, engine, what is loaded, costs, and
        the slots taken by tasks of dispatchers other than the one at `link_url`."""
        assert self.engine is not None
        elsewhere = self._slots_in_use_elsewhere().get(link_url or "", 0)
        if link_url is not None:  # what that dispatcher now knows: the base of later reports
            self._told[link_url] = SlotView(elsewhere, frozenset(self.models.cache.ready))
        costs = {
            label: pb.LabelCost(load_ms=c.load_ms, run_ms=c.run_ms)
            for label, c in self.models.cache.costs.items()
        }
        return pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            worker_id=self.config.worker_id,
            capacity=self.config.capacity,
            slots=self.config.slots,
            engine=self.engine.name,
            labels_loaded=self.models.cache.ready,
            device=self.engine.device,
            label_costs=costs,
            task_types=list(self.engine.task_types),
            # What it can serve: the repository's models (the model catalogue's source),
            # or any label (simulated).
            servable=[] if self.engine.serves_any_label else self.engine.available_labels(),
            servable_only=not self.engine.serves_any_label,
            slots_in_use_elsewhere=elsewhere,
        )

    def _slots_in_use_elsewhere(self) -> dict[str, int]:
        """Per link URL: the slots taken by tasks of the other links (O(slots) to compute)."""
        mine: dict[str, int] = {}
        for pending in self._pending.values():
            for link, _ in pending.recipients():  # a shared task is each recipient's own
                mine[link.url] = mine.get(link.url, 0) + 1
        total = len(self._pending)
        return {url: total - mine.get(url, 0) for url in self.links}

    def _slot_views(self) -> dict[str, SlotView]:
        """Per link URL: the state that dispatcher should see now (O(slots + capacity))."""
        cache = self.models.cache
        loaded, loading = frozenset(cache.ready), frozenset(cache.labels(ModelState.LOADING))
        return {
            url: SlotView(elsewhere, loaded, loading)
            for url, elsewhere in self._slots_in_use_elsewhere().items()
        }

    def _occupancy_changed(
        self, source: DispatcherConnection | None, *, freed: bool = False
    ) -> None:
        """A task of `source` started or ended (`freed`), or (None) the hold on freed slots
        ended: tell every other open link what changed for it (worker/occupancy.py: a slot
        taken at once, a slot freed after the hold if `source` refills in time). `source`
        learns from its own Task and TaskResult; a link that is down gets the state in its
        next Hello, so nothing piles up in its outbox."""
        if len(self.links) < 2:
            return
        now = time.monotonic()
        if source is None:
            holding = False
        elif freed:
            holding = self.refills.freed(source.url, now)
        else:
            self.refills.taken(source.url, now)
            holding = self.config.occupancy_hold_ms > 0  # frees held so far stay held
        owed = False
        for url, current in self._slot_views().items():
            link = self.links[url]
            told = self._told.get(url)
            if link is source:
                if told is not None:  # its TaskResult carries the labels; its count is unchanged
                    self._told[url] = replace(
                        current, slots_in_use_elsewhere=told.slots_in_use_elsewhere
                    )
                continue
            if link.state is not ConnectionState.OPEN:
                continue
            decision = announce(current, told, holding=holding)
            owed = owed or decision.hold
            if decision.send is not None:
                self._told[url] = decision.send
                link.send(pb.WorkerMessage(occupancy=self._occupancy(decision.send, current)))
        if owed and not self._flush_scheduled:
            self._flush_scheduled = True
            schedule = self.schedule or asyncio.get_running_loop().call_later
            schedule(self.config.occupancy_hold_ms / 1000.0, self._hold_ended)

    def _hold_ended(self) -> None:
        """The hold on freed slots is over: each link still told of more slots taken than there
        are gets the current state (nothing, when the slots were refilled meanwhile)."""
        self._flush_scheduled = False
        if self.state is WorkerState.RUNNING:
            self._occupancy_changed(None)

    def _occupancy(self, view: SlotView, current: SlotView) -> pb.Occupancy:
        # A held view shows more slots taken elsewhere than now: the total follows it.
        held = view.slots_in_use_elsewhere - current.slots_in_use_elsewhere
        return pb.Occupancy(
            slots_in_use=len(self._pending) + held,
            slots_in_use_elsewhere=view.slots_in_use_elsewhere,
            slots=self.config.slots,
            labels_loaded=sorted(view.labels_loaded),
            labels_loading=sorted(view.labels_loading),
        )

    def _labels_changed(self, reason: str) -> None:
        cache = self.models.cache
        loaded, loading = cache.ready, cache.labels(ModelState.LOADING)
        message = pb.WorkerMessage(
            labels_changed=pb.LabelsChanged(
                labels_loaded=loaded,
                labels_loading=loading,
                labels_unloading=cache.labels(ModelState.UNLOADING),
                reason=reason,
            )
        )
        for url, link in self.links.items():  # every dispatcher routes on what this worker holds
            link.send(message)
            told = self._told.get(url)
            if told is not None:
                self._told[url] = replace(
                    told, labels_loaded=frozenset(loaded), labels_loading=frozenset(loading)
                )

    # -- messages in ---------------------------------------------------------

    def _spawn(self, coro: object, name: str) -> asyncio.Task[object]:
        job: asyncio.Task[object] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._background.add(job)  # hard reference until it is done
        job.add_done_callback(self._background.discard)
        return job

    def _on_message(self, link: DispatcherConnection, message: pb.DispatcherMessage) -> None:
        kind = message.WhichOneof("body")
        body = body_of(message)
        if kind == "task":
            assert isinstance(body, pb.Task)
            self._accept(link, body)
        elif kind == "preload":
            assert isinstance(body, pb.Preload)
            self._spawn(self._preload(body), f"preload-{body.label}")
        elif kind == "unload":
            assert isinstance(body, pb.Unload)
            self._spawn(self.models.unload(body.label), f"unload-{body.label}")
        elif kind == "reload":
            assert isinstance(body, pb.Reload)
            self._spawn(self._reload(body), f"reload-{body.label}")
        elif kind == "drain":
            # Drain is about this connection (the dispatcher is going away or done with
            # us): take no new task until the next Welcome; running ones finish and their
            # results are sent. Only SIGTERM/SIGINT stops the worker process.
            log.info("dispatcher %s asked to drain: %s", link.url, message.drain.reason)
            link.drained = True
        elif kind == "cancel":
            assert isinstance(body, pb.Cancel)
            self._cancel(link, body)
        elif kind == "welcome":
            link.drained = False
            welcome = message.welcome
            log.info(
                "welcomed by dispatcher %s (%s)",
                welcome.dispatcher_id,
                welcome.policy,
                extra={"event": "link_up", "url": link.url, "dispatcher_id": welcome.dispatcher_id},
            )

    async def _preload(self, preload: pb.Preload) -> None:
        try:
            await self.models.preload(preload.label, list(preload.evict_hint))
        except WorkerError as exc:
            log.warning("preload of %r failed: %s", preload.label, exc)
            self._labels_changed(f"preload of {preload.label} failed: {exc}")

    async def _reload(self, reload: pb.Reload) -> None:
        """A new version of a label was published: load it if this worker holds the label
        and does not serve that version yet (`ModelManager.reload`: each dispatcher sends
        it)."""
        assert self.engine is not None
        try:
            if not await self.models.reload(reload.label, reload.version):
                return
        except WorkerError as exc:
            log.warning("reload of %r (version %s) failed: %s", reload.label, reload.version, exc)
            return
        log.info("reloaded %r: version %s", reload.label, self.engine.model_version(reload.label))

    def _cancel(self, link: DispatcherConnection, cancel: pb.Cancel) -> None:
        pending = self._pending.get(cancel.task_id)
        # Only a dispatcher that sent a task may cancel it.
        if pending is None or not pending.awaits(link):
            return
        reason = DeadlineExceededError(f"cancelled by the dispatcher: {cancel.reason}")
        if link is not pending.link:
            # A dispatcher sharing another's run gives up: it stops waiting, the run goes on.
            task = next(t for f, t in pending.followers if f is link)
            pending.followers = [(f, t) for f, t in pending.followers if f is not link]
            link.send_result(self._error_result(task, reason))
            return
        if pending.started or pending.job is None:
            return
        if pending.followers:
            # Others still wait for it: the first of them owns the run from now on.
            cancelled = pending.task
            pending.link, pending.task = pending.followers.pop(0)
            link.send_result(self._error_result(cancelled, reason))
            return
        pending.job.cancel()
        self._pending.pop(cancel.task_id, None)
        link.send_result(self._error_result(pending.task, reason))
        self._occupancy_changed(link, freed=True)

    def _accept(self, link: DispatcherConnection, task: pb.Task) -> None:
        if self.state is not WorkerState.RUNNING or link.drained:
            link.send_result(self._error_result(task, ShuttingDownError("worker is shutting down")))
            return
        if self._answer_duplicate(link, task):
            return  # never a new slot use (the BUSY rule counts runs, not arrivals)
        if len(self._pending) >= self.config.slots:
            # Another dispatcher's tasks took the slots since this one last heard: answer at
            # once so it places the task elsewhere, rather than keep it waiting here.
            self.busy_answers += 1
            busy = self._busy_result(task)
            self.observability.task_finished(task, busy)
            link.send_result(busy)
            return
        pending = _Pending(task, time.perf_counter(), link)
        self._pending[task.task_id] = pending
        pending.job = asyncio.create_task(self._run_task(pending), name=f"task-{task.task_id}")
        self._occupancy_changed(link)

    def _answer_duplicate(self, link: DispatcherConnection, task: pb.Task) -> bool:
        """A task id that ran or runs here already: share that run's result with `link`
        instead of running it again (docs/architecture.md §6.6). False for a new id."""
        task_id = task.task_id
        pending = self._pending.get(task_id)
        if pending is not None:
            if pending.awaits(link):  # the same dispatcher again (it restarted): one answer
                log.warning("duplicate task %s ignored (already running here)", task_id)
                return True
            pending.followers.append((link, task))
            self._shared(link, task, "joined the run in progress")
            return True
        if link.queued_result(task_id) is not None:
            return True  # its answer is already waiting for this very link
        earlier = self.recent.get(task_id)
        if earlier is None:
            earlier = self._result_queued_elsewhere(task_id)
        if earlier is None:
            return False
        link.send_result(answer_for(task, earlier))
        self._shared(link, task, "answered with its earlier result")
        return True

    def _result_queued_elsewhere(self, task_id: str) -> pb.TaskResult | None:
        """A successful result for `task_id` waiting in some link's outbox (its dispatcher
        down): past the recent results' bounds, the outboxes still hold it."""
        for other in self.links.values():
            result = other.queued_result(task_id)
            if result is not None and worth_remembering(result):
                return result
        return None

    def _shared(self, link: DispatcherConnection, task: pb.Task, how: str) -> None:
        self.results_shared += 1
        log.info(
            "task %s sent again by %s: %s, not run again",
            task.task_id,
            link.url,
            how,
            extra={"event": "task_shared", "task_id": task.task_id, "url": link.url},
        )

    # -- tasks ---------------------------------------------------------------

    def _busy_result(self, task: pb.Task) -> pb.TaskResult:
        return pb.TaskResult(
            task_id=task.task_id,
            ok=False,
            error_code=pb.BUSY,
            error_message=f"all {self.config.slots} slot(s) in use",
            label=task.label,
            labels_loaded=self.models.cache.ready,
            attempt=task.attempt,
        )

    def _error_result(self, task: pb.Task, exc: WorkerError) -> pb.TaskResult:
        message = public_message(exc)
        if message != str(exc):  # what the caller does not see stays in this log
            log.warning("task %s failed: %s", task.task_id, exc)
        return pb.TaskResult(
            task_id=task.task_id,
            ok=False,
            error_code=error_code(exc),
            error_message=message,
            label=task.label,
            labels_loaded=self.models.cache.ready,
            attempt=task.attempt,
        )

    async def _run_task(self, pending: _Pending) -> None:
        task = pending.task
        try:
            async with self._slots:
                pending.started = True
                queue_ms = (time.perf_counter() - pending.received) * 1000.0
                result = await self._execute(task)
                result.queue_ms = queue_ms
        except asyncio.CancelledError:
            if self.state is WorkerState.DRAINING:
                if pending.started:
                    log.error("task %s cut off by the shutdown deadline", task.task_id)
                return  # not started: handed back in Goodbye
            raise
        finally:
            self._pending.pop(task.task_id, None)
        self.tasks_run += 1
        self.observability.task_finished(task, result)
        self.recent.remember(result)
        for link, sent in pending.recipients():
            link.send_result(answer_for(sent, result))
        self._occupancy_changed(pending.link, freed=True)

    async def _execute(self, task: pb.Task) -> pb.TaskResult:
        assert self.engine is not None
        try:
            params = parse_task(task.task_type, task.parameters_json, self.limits)
            self._check_deadline(task)
            try:
                return await self._attempt(task, params)
            except EngineUnavailableError:
                # The engine restarted under the task: wait for it once and retry.
                log.warning("engine unavailable during task %s; retrying once", task.task_id)
                return await self._attempt(task, params)
        except WorkerError as exc:
            return self._error_result(task, exc)
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("task %s failed unexpectedly", task.task_id)
            wrapped = WorkerError(f"{type(exc).__name__}: {exc}")
            return self._error_result(task, wrapped)

    def _check_deadline(self, task: pb.Task) -> None:
        if task.deadline_unix_ms and time.time() * 1000.0 > task.deadline_unix_ms:
            raise DeadlineExceededError(f"deadline passed before task {task.task_id} ran")

    async def _attempt(self, task: pb.Task, params: object) -> pb.TaskResult:
        assert self.engine is not None
        outcome: LoadOutcome
        async with self.models.use(task.label, list(task.evict_hint)) as outcome:
            self._check_deadline(task)
            # The version the task starts on (a reload under it lets it finish there).
            version = self.engine.model_version(task.label)
            started = time.perf_counter()
            value = await execute(self.engine, task.label, params)  # type: ignore[arg-type]
            run_ms = (time.perf_counter() - started) * 1000.0
        self.models.cache.record_run(task.label, run_ms)
        return pb.TaskResult(
            task_id=task.task_id,
            ok=True,
            result_json=json.dumps(value),
            label=task.label,
            label_miss=outcome.miss,
            load_ms=outcome.load_ms,
            run_ms=run_ms,
            labels_loaded=self.models.cache.ready,
            labels_evicted=outcome.evicted,
            attempt=task.attempt,
            model_version=version,
        )

    # -- lifecycle -----------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe from a signal handler on the loop)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)

    async def run(self) -> int:
        """Start the engine, serve until asked to stop, shut down; the exit code."""
        assert self.engine is not None
        await self.engine.start()
        self.state = WorkerState.RUNNING
        # Task names carry the worker id: many workers can share one loop (benchmark/swarm.py).
        worker_id = self.config.worker_id
        for url in self.links:
            self._start_link(url)
        if self.discovery is not None:
            self._spawn(self.discovery.run(), f"dispatcher-discovery-{worker_id}")
        stop = asyncio.create_task(self._stop.wait(), name=f"stop-wait-{worker_id}")
        link_failed = asyncio.create_task(
            self._link_failed.wait(), name=f"link-failed-wait-{worker_id}"
        )
        try:
            await asyncio.wait({link_failed, stop}, return_when=asyncio.FIRST_COMPLETED)
            failed = self._link_failed.is_set()
            if failed:
                log.error("dispatcher connection failed: %s", self._link_error)
            await self.shutdown()
        finally:
            # Normally only `stop` is left. When run() itself is cancelled (a swarm past its
            # deadline), nothing may outlive it: the link and task jobs would run on unowned.
            jobs = [p.job for p in self._pending.values() if p.job is not None]
            links = list(self._link_jobs.values())
            leftovers = [*links, stop, link_failed, *self._background, *jobs, *self.models.jobs]
            for job in leftovers:
                job.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
        return 1 if failed else 0

    async def shutdown(self) -> None:
        """The fixed shutdown sequence of the module docstring, on every dispatcher link."""
        assert self.engine is not None
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        self.state = WorkerState.DRAINING
        returned: dict[str, list[str]] = {url: [] for url in self.links}
        for tid in [tid for tid, p in self._pending.items() if not p.started]:
            pending = self._pending.pop(tid)
            if pending.job is not None:
                pending.job.cancel()
            for link, _ in pending.recipients():
                returned.setdefault(link.url, []).append(tid)
        for url, link in self.links.items():  # each dispatcher gets back its own tasks
            goodbye = pb.Goodbye(reason="worker shutting down", returned_task_ids=returned[url])
            link.send(pb.WorkerMessage(goodbye=goodbye))
        running = [p.job for p in self._pending.values() if p.job is not None]
        if running:
            log.info("waiting for %d running task(s)", len(running))
            _, late = await asyncio.wait(running, timeout=max(0.1, deadline - time.monotonic()))
            for job in late:
                job.cancel()
        flush_s = max(0.1, min(5.0, deadline - time.monotonic()))
        await asyncio.gather(*(_flush(link, flush_s) for link in self.links.values()))
        await asyncio.gather(
            *(link.close(1001, "worker shutting down") for link in self.links.values())
        )
        for job in self._link_jobs.values():
            job.cancel()
        await asyncio.gather(*self._link_jobs.values(), return_exceptions=True)
        for background in list(self._background):
            background.cancel()
        try:
            await asyncio.wait_for(self.models.unload_all(), max(0.1, deadline - time.monotonic()))
        except (TimeoutError, WorkerError) as exc:
            log.warning("unloading at shutdown failed: %s", exc)
        await self.engine.stop()
        self.state = WorkerState.STOPPED
        log.info("worker %s stopped after %d task(s)", self.config.worker_id, self.tasks_run)


async def _flush(link: DispatcherConnection, timeout: float) -> None:
    """Send what is queued for one dispatcher before closing; say so when it cannot be."""
    if link.opened.is_set():
        if not await link.flush(timeout):
            log.error("%s: %d message(s) could not be sent before exit", link.url, link.pending)
    elif link.pending:
        log.error("%s unreachable: %d message(s) not sent", link.url, link.pending)


async def serve(config: Config) -> int:
    """Run a worker with signal handlers installed (the CLI's entry point)."""
    worker = Worker(config)
    worker.install_signal_handlers()
    async with serving_probes(worker):  # /livez, /readyz, /metrics with --http-port
        return await worker.run()
