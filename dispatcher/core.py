"""The dispatcher core: applies routing decisions to tasks and workers.

All state lives on one event loop and every method here that mutates it is synchronous, so no
locks are needed: a decision and its application happen without an `await` in between. Sending
a frame only queues it on the worker's link (see `dispatcher.workers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from dispatcher.config import Config
from dispatcher.errors import (
    AttemptsExhausted,
    DeadlineExceeded,
    DispatcherError,
    DuplicateTask,
    NoWorkers,
    QueueFull,
    ShuttingDown,
    TaskFailed,
)
from dispatcher.estimates import LabelEstimates
from dispatcher.limits import CallerLimits
from dispatcher.metrics import Metrics
from dispatcher.registry import Registry, WorkerRecord, WorkerState
from dispatcher.routing import Dispatch, Enqueue, Reason, make_policy
from dispatcher.store import TaskStore
from dispatcher.tasks import ResultStore, TaskQueue, TaskRecord, TaskState
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher")

GOING_AWAY_CLOSE_CODE = 1001


class WorkerLink(Protocol):
    """The sending side of one worker connection."""

    def send(self, message: pb.DispatcherMessage) -> None:
        """Queue a frame for the worker (never blocks)."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection."""


@dataclass
class LabelStats:
    """Per-label totals for /stats."""

    completed: int = 0
    misses: int = 0
    load_ms_total: float = 0.0
    run_ms_total: float = 0.0


@dataclass
class Counters:
    """Totals for /stats."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    redispatched: int = 0
    late_results: int = 0
    hits: int = 0
    misses: int = 0
    load_ms_total: float = 0.0
    run_ms_total: float = 0.0
    per_label: dict[str, LabelStats] = field(default_factory=dict)


class Dispatcher:
    """Tasks in, decisions applied, results out."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.dispatcher_id = uuid.uuid4().hex[:12]
        self.registry = Registry()
        self.queue = TaskQueue()
        self.results = ResultStore(ttl_s=config.result_ttl_s)
        self.estimates = LabelEstimates()
        self.policy = make_policy(
            config.policy,
            self.registry,
            self.queue,
            self.estimates,
            random.Random(config.seed),
            config.starvation_factor,
        )
        self.metrics = metrics or Metrics()
        self.counters = Counters()
        self.links: dict[str, WorkerLink] = {}
        self.callers = CallerLimits(config.max_tasks_per_caller, config.retry_after_s)
        self.store = TaskStore(config.state_db) if config.state_db else None
        self.running: dict[str, TaskRecord] = {}
        self.accepting = True
        self.started_at = time.monotonic()
        self._all_done = asyncio.Event()
        self._all_done.set()

    # ---- callers ------------------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        label: str,
        parameters_json: str,
        task_id: str | None = None,
        timeout_s: float | None = None,
        caller: str | None = None,
        persist: bool = False,
    ) -> TaskRecord:
        """Accept a task and route it; raises a `DispatcherError` when it cannot be accepted.

        `caller` counts the task against `max_tasks_per_caller`; `persist` writes it to the
        state database (when one is configured) before this returns.
        """
        if not self.accepting:
            raise ShuttingDown("the dispatcher is shutting down", retry_after_s=1.0)
        task_id = task_id or uuid.uuid4().hex
        if self.results.live(task_id):
            raise DuplicateTask(f"task {task_id!r} is already queued or running")
        if self.config.reject_without_workers and not self.registry.workers:
            raise NoWorkers("no worker is connected", retry_after_s=self.config.retry_after_s)
        if len(self.queue) >= self.config.max_queue:
            self.metrics.tasks.labels(label, "rejected").inc()
            raise QueueFull(
                f"{len(self.queue)} tasks are queued (limit {self.config.max_queue})",
                retry_after_s=self.config.retry_after_s,
            )
        now = time.monotonic()
        timeout = self.config.task_timeout_s if timeout_s is None else timeout_s
        task = TaskRecord(
            task_id=task_id,
            task_type=task_type,
            label=label,
            parameters_json=parameters_json,
            submitted_at=now,
            deadline=now + timeout,
            deadline_unix_ms=int((time.time() + timeout) * 1000),
            enqueued_at=now,
        )
        task.caller = self.callers.admit(caller)
        if persist and self.store is not None:
            # Written before the caller hears "accepted": a crash after this loses nothing.
            try:
                self.store.add(task_id, task_type, label, parameters_json, task.deadline_unix_ms)
            except DispatcherError:
                if task.caller is not None:
                    self.callers.release(task.caller)
                raise
            task.persisted = True
        self._accept(task, timeout, now)
        return task

    def _accept(self, task: TaskRecord, timeout: float, now: float) -> None:
        """Start the deadline clock of an accepted task and route it."""
        loop = asyncio.get_running_loop()
        task.deadline_handle = loop.call_later(timeout, self._on_deadline, task)
        self.results.add(task)
        self.counters.submitted += 1
        self._route(task, now)

    async def wait(self, task: TaskRecord) -> TaskRecord:
        """Wait for a task's answer (the deadline timer guarantees one)."""
        await task.done.wait()
        return task

    # ---- workers ------------------------------------------------------------------------

    def worker_joined(self, hello: pb.Hello, link: WorkerLink) -> WorkerRecord:
        """Register a worker after its Hello and give it queued work."""
        now = time.monotonic()
        record = WorkerRecord(
            worker_id=hello.worker_id,
            capacity=hello.capacity or 1,
            slots=hello.slots or 1,
            engine=hello.engine,
            device=hello.device,
            task_types=tuple(hello.task_types),
            connected_at=now,
        )
        self.registry.add(record, hello.labels_loaded, now)
        self.links[record.worker_id] = link
        for label, cost in hello.label_costs.items():
            self.estimates.seed(label, cost.load_ms, cost.run_ms)
        self.metrics.workers_connected.set(len(self.registry))
        log.info(
            "worker %s joined: capacity %d slots %d labels %s",
            record.worker_id,
            record.capacity,
            record.slots,
            list(hello.labels_loaded),
        )
        self._fill(record.worker_id, now)
        return record

    def worker_left(self, worker_id: str) -> None:
        """A worker's connection ended: drop its labels, re-dispatch its running tasks."""
        self.links.pop(worker_id, None)
        if worker_id not in self.registry:
            return
        record = self.registry.remove(worker_id)
        self.metrics.workers_connected.set(len(self.registry))
        log.info("worker %s left with %d tasks running", worker_id, len(record.in_flight))
        for task_id in list(record.in_flight):
            task = self.running.get(task_id)
            if task is not None and task.worker_id == worker_id:
                self._redispatch(task, count_attempt=True)
        self._fill_all_idle()

    def worker_result(self, worker_id: str, result: pb.TaskResult) -> None:
        """A TaskResult arrived: update labels and estimates, answer the caller, refill."""
        now = time.monotonic()
        label = self.registry.finish(worker_id, result.task_id)
        if worker_id in self.registry:
            self.registry.set_labels(worker_id, result.labels_loaded, now=now)
        task = self.running.get(result.task_id)
        if label is not None:
            # The time a holder stays busy, as this dispatcher sees it: the worker's run time,
            # or the whole round trip minus the load when that is longer (network, queueing).
            busy_ms = result.run_ms
            if task is not None and task.worker_id == worker_id:
                turnaround_ms = (now - task.dispatched_at) * 1000.0
                busy_ms = max(busy_ms, turnaround_ms - (result.load_ms if result.label_miss else 0))
            self._observe(worker_id, label, result, busy_ms)
        if (
            task is not None
            and task.restored
            and task.state is TaskState.QUEUED
            and result.ok
            and self.queue.remove(task.task_id) is not None
        ):
            # A task queued again after a restart whose first run a worker reports now (its
            # outbox kept the result across the reconnect): take it, do not run it twice.
            task.worker_id = worker_id
            task.dispatched_at = task.enqueued_at
            self.running[task.task_id] = task
            task.state = TaskState.RUNNING
        task = self.running.get(result.task_id)
        if task is None or task.worker_id != worker_id or task.state is not TaskState.RUNNING:
            # A late answer (deadline passed, or the task moved to another worker): the task
            # ran here as well as elsewhere, or after its caller was answered.
            self.counters.late_results += 1
            self.metrics.late_results.inc()
            self._fill(worker_id, now)
            return
        del self.running[task.task_id]
        task.label_miss = result.label_miss
        task.timings_ms = {
            "queue": round((task.dispatched_at - task.enqueued_at) * 1000 + result.queue_ms, 3),
            "load": round(result.load_ms, 3),
            "run": round(result.run_ms, 3),
            "total": round((now - task.submitted_at) * 1000, 3),
        }
        if result.ok:
            try:
                task.result = json.loads(result.result_json) if result.result_json else None
            except json.JSONDecodeError:
                task.result = result.result_json
            self._finish(task, TaskState.COMPLETED, now)
        elif result.error_code == pb.WORKER_SHUTTING_DOWN:
            self._redispatch(task, count_attempt=False)
        else:
            code = pb.ErrorCode.Name(result.error_code)
            self._fail(task, TaskFailed(code, result.error_message), now)
        self._fill(worker_id, now)

    def worker_labels_changed(self, worker_id: str, change: pb.LabelsChanged) -> None:
        """The worker's labels changed outside a task (full state)."""
        now = time.monotonic()
        loading = set(change.labels_loading)
        self.registry.set_labels(worker_id, change.labels_loaded, loading, now=now)
        self._fill(worker_id, now)
        self._fill_all_idle()

    def worker_goodbye(self, worker_id: str, goodbye: pb.Goodbye) -> None:
        """The worker is leaving: no new tasks for it; re-dispatch the tasks it returns."""
        if worker_id not in self.registry:
            return
        self.registry.set_state(worker_id, WorkerState.DRAINING)
        for task_id in goodbye.returned_task_ids:
            self.registry.finish(worker_id, task_id)
            task = self.running.get(task_id)
            if task is not None and task.worker_id == worker_id:
                self._redispatch(task, count_attempt=False)

    # ---- shutdown -----------------------------------------------------------------------

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting, answer queued callers 503, let running tasks finish (bounded),
        then tell workers to drain and close their sockets with 1001."""
        if not self.accepting and not self.links and not self.running:
            return
        self.accepting = False
        now = time.monotonic()
        for task in self.queue.drain():
            self._fail(task, ShuttingDown("the dispatcher is shutting down"), now)
        self._update_gauges()
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout)
        except TimeoutError:
            log.warning("%d tasks still running at shutdown", len(self.running))
        now = time.monotonic()
        for task in list(self.running.values()):
            self.running.pop(task.task_id, None)
            self._fail(task, ShuttingDown("the dispatcher shut down before the task ended"), now)
        drain = pb.DispatcherMessage(drain=pb.Drain(reason="dispatcher shutting down"))
        links = list(self.links.items())
        for _, link in links:
            link.send(drain)
        await asyncio.gather(
            *(link.close(GOING_AWAY_CLOSE_CODE, "dispatcher shutting down") for _, link in links),
            return_exceptions=True,
        )
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- applying decisions -------------------------------------------------------------

    def _route(self, task: TaskRecord, now: float) -> None:
        decision = self.policy.place(task, now)
        if isinstance(decision, Dispatch):
            self._dispatch(task, decision, now)
            return
        self._enqueue(task, decision, front=False)

    def _enqueue(self, task: TaskRecord, decision: Enqueue, front: bool) -> None:
        task.state = TaskState.QUEUED
        self.queue.push(task, front=front)
        self.metrics.decisions.labels(decision.reason.value).inc()
        self._update_gauges()
        if decision.reason is Reason.WAIT_FOR_HOLDER:
            # Starvation guard: re-check once the task has waited as long as a load takes.
            factor = self.config.starvation_factor
            delay = factor * self.estimates.load_ms(task.label) / 1000.0 + 0.001
            asyncio.get_running_loop().call_later(delay, self._rescue)

    def _dispatch(self, task: TaskRecord, decision: Dispatch, now: float) -> None:
        link = self.links.get(decision.worker_id)
        if link is None:  # cannot happen: the registry and links change together
            raise RuntimeError(f"no link for worker {decision.worker_id!r}")
        self.queue.remove(task.task_id)
        task.state = TaskState.RUNNING
        task.attempt += 1
        task.worker_id = decision.worker_id
        task.dispatched_at = now
        self.registry.assign(decision.worker_id, task.task_id, task.label, decision.evict, now)
        self.running[task.task_id] = task
        self._all_done.clear()
        link.send(
            pb.DispatcherMessage(
                task=pb.Task(
                    task_id=task.task_id,
                    task_type=task.task_type,
                    label=task.label,
                    parameters_json=task.parameters_json,
                    deadline_unix_ms=task.deadline_unix_ms,
                    evict_hint=list(decision.evict),
                    attempt=task.attempt,
                )
            )
        )
        self.metrics.decisions.labels(decision.reason.value).inc()
        self.metrics.dispatch_latency.observe(now - task.submitted_at)
        self._update_gauges()

    def _fill(self, worker_id: str, now: float) -> None:
        """Give a worker queued tasks while it has free slots."""
        while True:
            decision = self.policy.next_for(worker_id, now)
            if decision is None:
                return
            task = self.results.get(decision.task_id)
            assert task is not None
            self._dispatch(task, decision, now)

    def _fill_all_idle(self) -> None:
        """After a rare event (a worker left, labels changed) let every idle worker look."""
        now = time.monotonic()
        for worker_id in self.registry.idle:
            if not self.queue:
                return
            self._fill(worker_id, now)

    def _rescue(self) -> None:
        now = time.monotonic()
        while (decision := self.policy.rescue(now)) is not None:
            task = self.results.get(decision.task_id)
            assert task is not None
            self._dispatch(task, decision, now)

    def _redispatch(self, task: TaskRecord, count_attempt: bool) -> None:
        """Send a task whose worker left (or handed it back) elsewhere, oldest first."""
        self.running.pop(task.task_id, None)
        if not self.running:
            self._all_done.set()
        now = time.monotonic()
        if count_attempt and task.attempt >= self.config.max_attempts:
            detail = f"task {task.task_id!r} lost its worker {task.attempt} times"
            self._fail(task, AttemptsExhausted(detail), now)
            return
        if not count_attempt:
            task.attempt = max(0, task.attempt - 1)
        if not self.accepting:
            self._fail(task, ShuttingDown("the dispatcher is shutting down"), now)
            return
        self.counters.redispatched += 1
        self.metrics.redispatches.inc()
        task.worker_id = None
        decision = self.policy.place(task, now)
        if isinstance(decision, Dispatch):
            self._dispatch(task, decision, now)
        else:
            self._enqueue(task, decision, front=True)

    # ---- outcomes -----------------------------------------------------------------------

    def _observe(self, worker_id: str, label: str, result: pb.TaskResult, busy_ms: float) -> None:
        c = self.counters
        per_label = c.per_label.setdefault(label, LabelStats())
        record = self.registry.workers.get(worker_id)
        if result.label_miss:
            c.misses += 1
            per_label.misses += 1
            self.metrics.label_misses.labels(label).inc()
            self.metrics.model_loads.labels(label).inc()
            if record is not None:
                record.misses += 1
        else:
            c.hits += 1
            self.metrics.label_hits.labels(label).inc()
        if result.ok:
            c.load_ms_total += result.load_ms
            c.run_ms_total += result.run_ms
            per_label.completed += 1
            per_label.load_ms_total += result.load_ms if result.label_miss else 0.0
            per_label.run_ms_total += result.run_ms
            if record is not None:
                record.completed += 1
            self.estimates.observe(
                label, load_ms=result.load_ms if result.label_miss else None, run_ms=busy_ms
            )

    def _finish(self, task: TaskRecord, state: TaskState, now: float) -> None:
        task.state = state
        task.finished_at = now
        if task.deadline_handle is not None:
            task.deadline_handle.cancel()
        self.results.finished(task, now)
        if task.caller is not None:
            self.callers.release(task.caller)
            task.caller = None
        if task.persisted and self.store is not None:
            try:
                self.store.finish(task.task_id, state.value, task.answer_json())
                if self.store.writes % 1000 == 0:
                    self.store.expire(self.config.result_ttl_s)
            except DispatcherError as exc:  # the answer still reaches a waiting caller
                log.error("could not record task %s: %s", task.task_id, exc)
        if state is TaskState.COMPLETED:
            self.counters.completed += 1
            self.metrics.tasks.labels(task.label, "completed").inc()
        self.metrics.task_latency.observe(now - task.submitted_at)
        if not self.running:
            self._all_done.set()
        self._update_gauges()
        task.done.set()

    def accept_restored(self, task: TaskRecord, remaining_s: float) -> None:
        """Queue a task read back from the state database (see `dispatcher.recovery`)."""
        self._accept(task, remaining_s, time.monotonic())

    def fail_restored(self, task: TaskRecord, exc: DispatcherError) -> None:
        """Answer a task read back from the state database with an error."""
        self.results.add(task)
        self._fail(task, exc, time.monotonic())

    def _fail(self, task: TaskRecord, exc: DispatcherError, now: float) -> None:
        if isinstance(exc, ShuttingDown) and task.persisted:
            # Stays "queued" in the state database: the next start runs it.
            task.persisted = False
        task.error = (exc.http_status, exc.to_json())
        self.counters.failed += 1
        self.metrics.tasks.labels(task.label, exc.code).inc()
        self._finish(task, TaskState.FAILED, now)

    def _on_deadline(self, task: TaskRecord) -> None:
        if task.state.finished:
            return
        now = time.monotonic()
        if task.state is TaskState.QUEUED:
            self.queue.remove(task.task_id)
        elif task.state is TaskState.RUNNING:
            self.running.pop(task.task_id, None)
            worker_id = task.worker_id or ""
            link = self.links.get(worker_id)
            if link is not None:
                link.send(
                    pb.DispatcherMessage(
                        cancel=pb.Cancel(task_id=task.task_id, reason="deadline exceeded")
                    )
                )
                # The slot stays taken until the worker answers, but not forever.
                asyncio.get_running_loop().call_later(
                    self.config.cancel_grace_s, self._release_slot, worker_id, task.task_id
                )
        waited = now - task.submitted_at
        self._fail(task, DeadlineExceeded(f"no answer within {waited:.3f}s"), now)

    def _release_slot(self, worker_id: str, task_id: str) -> None:
        """Free a slot whose cancelled task the worker never answered."""
        record = self.registry.workers.get(worker_id)
        if record is None or task_id not in record.in_flight:
            return
        log.warning("worker %s never answered cancelled task %s; slot freed", worker_id, task_id)
        self.registry.finish(worker_id, task_id)
        self._fill(worker_id, time.monotonic())

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self.queue))
        self.metrics.in_flight.set(len(self.running))
