"""The dispatcher core: applies routing decisions to tasks and workers. Sans-I/O.

One reason to change: how a decision of the policy (`dispatcher.routing`) becomes a task sent,
queued, re-dispatched, answered or timed out. Time comes from a `Clock`, delays go through
`Timers`, frames leave through one `WorkerLink` per worker, and what happened is told to
`CoreObserver`s (docs/architecture.md §3). Every method is synchronous, so a decision and its
application happen without an `await` in between and no locks are needed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable

from dispatcher.cold_wait import MIN_PAID_SHARE, ColdWaitPayoff
from dispatcher.config import Config
from dispatcher.demand import DemandModel
from dispatcher.errors import (
    AttemptsExhausted,
    DeadlineExceeded,
    DispatcherError,
    NoWorkers,
    ShuttingDown,
    TaskFailed,
)
from dispatcher.estimates import LabelEstimates
from dispatcher.health import WorkerHealth
from dispatcher.interfaces import Cancellable, Clock, CoreObserver, Timers, WorkerLink
from dispatcher.recovery import HOLD_GRACE_S, REJOIN_SETTLE_S, HeldTasks, claim_restored
from dispatcher.registry import Registry, WorkerRecord, WorkerState
from dispatcher.routing import UNPAID_COLD_HOLDS, Decision, Dispatch, Reason, make_policy
from dispatcher.tasks import ResultStore, TaskQueue, TaskRecord, TaskState
from dispatcher.worker_input import parse_result_json
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher")

#: Forget labels nobody asks for any more once every this many arrivals.
DEMAND_PRUNE_EVERY = 4096

GOING_AWAY_CLOSE_CODE = 1001


class Core:
    """Tasks in, decisions applied, results out."""

    def __init__(
        self, config: Config, clock: Clock, timers: Timers, observers: Iterable[CoreObserver] = ()
    ) -> None:
        self.config = config
        self.clock = clock
        self.timers = timers
        self.observers = list(observers)
        self.registry = Registry()
        self.queue = TaskQueue()
        self.results = ResultStore(config.result_ttl_s, config.max_results, config.max_result_bytes)
        self.estimates = LabelEstimates()
        self.demand = DemandModel(config.demand_time_constant_s, config.target_utilisation)
        # Not adaptive: a share of 0 always counts as paying, so every cold task is held.
        self.cold_payoff = ColdWaitPayoff(
            min_paid_share=MIN_PAID_SHARE if config.cold_wait_adaptive else 0.0
        )
        self.policy = make_policy(
            config.policy,
            self.registry,
            self.queue,
            self.estimates,
            random.Random(config.seed),
            config.starvation_factor,
            self.demand,
            config.max_preload_share,
            config.cold_wait_ms / 1000.0,
            self.cold_payoff,
        )
        self.links: dict[str, WorkerLink] = {}
        self.running: dict[str, TaskRecord] = {}
        #: Restored tasks waiting for the worker that ran them before a restart (§3.5).
        self.held = HeldTasks()
        self.accepting = True
        self._deadlines: dict[str, Cancellable] = {}
        self.health = WorkerHealth(
            config,
            self.registry,
            self.estimates,
            clock,
            timers,
            self.observers,
            on_timed_out=self._timed_out,
            on_resumed=lambda worker_id: self._fill(worker_id, self.clock.monotonic()),
        )
        #: Workers loading a preload: worker id -> label (until their next LabelsChanged).
        self._preloads: dict[str, str] = {}
        #: Task id -> the worker sent Cancel for it; the id stays on that worker until it
        #: answers or `cancel_grace_s` passes (see `cancel_pending`).
        self._cancelling: dict[str, str] = {}
        self._arrivals = 0

    # ---- tasks --------------------------------------------------------------------------

    def accept(self, task: TaskRecord) -> None:
        """Take an admitted task: start its deadline clock and route it."""
        now = self.clock.monotonic()
        self.results.add(task)
        self._deadlines[task.task_id] = self.timers.call_later(
            max(0.0, task.deadline - now), self._on_deadline, task
        )
        for o in self.observers:
            o.task_accepted(task)
        if not self.accepting:
            self.fail(task, ShuttingDown("the dispatcher is shutting down", retry_after_s=1.0))
            return
        self._record_demand(task.label, now)
        self._apply(task, self.policy.place(task, now), front=False)
        self._watch_for_no_worker(task, now)
        if self.config.preload:
            self._preload(task.label, now)

    def _watch_for_no_worker(self, task: TaskRecord, now: float) -> None:
        """With no worker connected, answer 503 after `no_worker_grace_s` rather than at the
        deadline (docs/architecture.md §3.7). Restored tasks wait: after a restart their
        workers need a moment to come back."""
        grace = self.config.no_worker_grace_s
        if self.registry.workers or task.restored or task.state is not TaskState.QUEUED:
            return
        if 0 < grace and now + grace < task.deadline:
            self.timers.call_later(grace, self._on_no_worker_grace, task)

    def _on_no_worker_grace(self, task: TaskRecord) -> None:
        if task.state is TaskState.QUEUED and not self.registry.workers:
            grace = self.config.no_worker_grace_s
            error = NoWorkers(
                f"no worker connected within {grace:g}s", retry_after_s=self.config.retry_after_s
            )
            self.fail(task, error)

    def hold(self, task: TaskRecord, grace_s: float = HOLD_GRACE_S) -> None:
        """Take a restored task that `task.worker_id` was running when the old dispatcher died
        (docs/architecture.md §3.5): dispatched to nobody while that worker may still report
        it, queued again after `grace_s` if it has not."""
        self.results.add(task)
        self._deadlines[task.task_id] = self.timers.call_later(
            max(0.0, task.deadline - self.clock.monotonic()), self._on_deadline, task
        )
        self.held.hold(task)
        for o in self.observers:
            o.task_accepted(task)
        if task.worker_id in self.registry.workers:
            # Claimed from a dead peer (§3.5.1): its worker is already linked here and will not
            # rejoin; a result it kept is on its link to the dead dispatcher, never sent here.
            grace_s = REJOIN_SETTLE_S
        self.timers.call_later(grace_s, self._end_hold, task.task_id)

    def keep_finished(self, task: TaskRecord) -> None:
        """Keep an already finished task readable until its retention ends (after a restart)."""
        self.results.add(task)
        self.results.finished(task, task.finished_at)

    def fail(self, task: TaskRecord, error: DispatcherError) -> None:
        """Answer a task with an error, wherever it is."""
        self.queue.remove(task.task_id)
        self.running.pop(task.task_id, None)
        self.held.release(task.task_id)
        if task.task_id not in self.results:
            self.results.add(task)
        task.error = error
        self._finish(task, TaskState.FAILED)

    def cancel(self, task_id: str, error: DispatcherError) -> TaskRecord | None:
        """Answer a queued or running task with `error` now; a running one's worker is sent
        Cancel (its slot is freed when it answers, or after the grace). Returns the task
        (unchanged when it had already finished), None when no task has this id."""
        task = self.results.get(task_id)
        if task is None or task.state.finished:
            return task
        if task.state is TaskState.RUNNING:
            self._send_cancel(task, error.code)
        self.fail(task, error)
        return task

    def cancel_pending(self, task_id: str) -> str | None:
        """The worker still running a cancelled task with this id, or None. A failed task's
        id may be submitted again (admission), but not while its old run holds the id on a
        worker: the worker and the registry know a task by its id, so the new run would
        collide with the old one there."""
        worker_id = self._cancelling.get(task_id)
        if worker_id is None:
            return None
        record = self.registry.workers.get(worker_id)
        if record is None or task_id not in record.in_flight:
            del self._cancelling[task_id]  # answered meanwhile
            return None
        return worker_id

    # ---- workers ------------------------------------------------------------------------

    def worker_joined(self, hello: pb.Hello, link: WorkerLink) -> WorkerRecord:
        """Register a worker after its Hello and give it queued work."""
        now = self.clock.monotonic()
        record = WorkerRecord.from_hello(hello, now)
        self.registry.add(record, hello.labels_loaded, now)
        self.links[record.worker_id] = link
        for label, cost in hello.label_costs.items():
            self.estimates.seed(label, cost.load_ms, cost.run_ms)
        for o in self.observers:
            o.worker_joined(record)
        # Tasks held for this worker since a restart: its buffered results follow its Hello.
        for task_id in self.held.of_worker(record.worker_id):
            self.timers.call_later(REJOIN_SETTLE_S, self._end_hold, task_id)
        self._fill(record.worker_id, now)
        return record

    def worker_left(self, worker_id: str) -> None:
        """A worker's connection ended: drop its labels, re-dispatch its running tasks."""
        self.links.pop(worker_id, None)
        self._preloads.pop(worker_id, None)
        if worker_id not in self.registry:
            return
        record = self.registry.remove(worker_id)
        for o in self.observers:
            o.worker_left(record)
        for task_id in list(record.in_flight):
            task = self.running.get(task_id)
            if task is not None and task.worker_id == worker_id:
                self._redispatch(task, count_attempt=True)
        self._fill_all_idle()

    def worker_result(self, worker_id: str, result: pb.TaskResult) -> None:
        """A TaskResult arrived: update labels and estimates, answer the caller, refill."""
        now = self.clock.monotonic()
        label = self.registry.finish(worker_id, result.task_id)
        busy = result.error_code == pb.BUSY and not result.ok
        # BUSY: its slots are taken by other dispatchers' tasks, full until it reports again;
        # any other answer freed a slot there.
        self.registry.set_saturated(worker_id, busy)
        if worker_id in self.registry:
            self.registry.set_labels(worker_id, result.labels_loaded, now=now)
        task = self.running.get(result.task_id)
        if label is not None and not busy:
            for o in self.observers:
                o.result_observed(self.registry.workers.get(worker_id), label, result)
            if result.ok:
                mine = task is not None and task.worker_id == worker_id
                self.estimates.observe_result(
                    label,
                    label_miss=result.label_miss,
                    load_ms=result.load_ms,
                    run_ms=result.run_ms,
                    turnaround_ms=(now - task.dispatched_at) * 1000.0 if task and mine else None,
                )
        if task is None and result.task_id in self.held:
            # The worker a restored task was held for reports it (from its outbox, or it was
            # still running there): that run answers the task; another worker's is late.
            task = self.held.claim(worker_id, result.task_id)
            if task is not None:
                task.dispatched_at = task.enqueued_at
                self.running[task.task_id] = task
        elif task is None and result.ok:
            task = claim_restored(self.results, self.queue, self.running, worker_id, result.task_id)
        if task is None or task.worker_id != worker_id or task.state is not TaskState.RUNNING:
            # A late answer (deadline passed, or the task moved to another worker): the task
            # ran here as well as elsewhere, or after its caller was answered.
            for o in self.observers:
                o.late_result(worker_id, result.task_id)
        elif busy:
            # Not run, so no attempt, and not the worker's fault: no health strike (§6.6).
            self._redispatch(task, count_attempt=False)
        elif result.error_code == pb.WORKER_SHUTTING_DOWN and not result.ok:
            # It will not run tasks any more: no new ones for it, and this one goes elsewhere.
            if worker_id in self.registry:
                self.registry.set_state(worker_id, WorkerState.DRAINING)
            task.excluded.add(worker_id)
            self._redispatch(task, count_attempt=False)
        else:
            del self.running[task.task_id]
            task.record_run(result, now)
            self.health.judge(worker_id, result)
            if result.ok:
                self._complete(task, result)
            elif result.error_code == pb.DEADLINE_EXCEEDED:
                # The worker saw the deadline pass first: the same answer as our own timer.
                task.error = DeadlineExceeded(
                    f"the worker saw the deadline pass: {result.error_message}"
                )
                self._finish(task, TaskState.FAILED)
            else:
                task.error = TaskFailed(pb.ErrorCode.Name(result.error_code), result.error_message)
                self._finish(task, TaskState.FAILED)
        self._fill(worker_id, now)

    def worker_labels_changed(self, worker_id: str, change: pb.LabelsChanged) -> None:
        """The worker's labels changed outside a task (full state)."""
        now = self.clock.monotonic()
        self._preloads.pop(worker_id, None)
        self.registry.set_labels(worker_id, change.labels_loaded, set(change.labels_loading), now)
        self._fill(worker_id, now)
        self._fill_all_idle()

    def worker_occupancy(self, worker_id: str, report: pb.Occupancy) -> None:
        """The worker's load changed by another dispatcher's task (docs/architecture.md §6.6):
        take the slots those tasks use and the labels it holds; O(its capacity), so it can
        follow every task start and end of every dispatcher."""
        if worker_id not in self.registry:
            return
        now = self.clock.monotonic()
        self.registry.set_labels(worker_id, report.labels_loaded, report.labels_loading, now)
        self.registry.set_busy_elsewhere(worker_id, report.slots_in_use_elsewhere)
        self._fill(worker_id, now)

    def worker_goodbye(self, worker_id: str, goodbye: pb.Goodbye) -> None:
        """The worker is leaving: no new tasks for it; re-dispatch the tasks it returns."""
        if worker_id not in self.registry:
            return
        self.registry.set_state(worker_id, WorkerState.DRAINING)
        for task_id in goodbye.returned_task_ids:
            self.registry.finish(worker_id, task_id)
            task = self.running.get(task_id)
            if task is not None and task.worker_id == worker_id:
                task.excluded.add(worker_id)
                self._redispatch(task, count_attempt=False)

    # ---- shutdown (the runtime sequences these: docs/architecture.md §3.4) --------------

    def stop_accepting(self) -> None:
        """Take no new task and answer every queued one 503."""
        self.accepting = False
        for task in self.queue.drain() + self.held.drain():
            self.fail(task, ShuttingDown("the dispatcher is shutting down"))

    def fail_running(self) -> None:
        """Answer every task still running 503 (the shutdown's bound passed)."""
        for task in list(self.running.values()):
            self.fail(task, ShuttingDown("the dispatcher shut down before the task ended"))

    # ---- applying decisions -------------------------------------------------------------

    def _record_demand(self, label: str, now: float) -> None:
        self.demand.record(label, now)
        self._arrivals += 1
        if self._arrivals % DEMAND_PRUNE_EVERY == 0:
            self.demand.prune(now, keep=self.registry.held_labels() | set(self.queue.labels()))

    def _preload(self, label: str, now: float) -> None:
        decision = self.policy.preload(label, now, len(self._preloads))
        if decision is None:
            return
        self.registry.preload(decision.worker_id, decision.label, decision.evict, now)
        self._preloads[decision.worker_id] = decision.label
        frame = pb.Preload(label=decision.label, evict_hint=list(decision.evict))
        self.links[decision.worker_id].send(pb.DispatcherMessage(preload=frame))
        for o in self.observers:
            o.preload_sent(decision)

    def _apply(self, task: TaskRecord, decision: Decision, front: bool) -> None:
        if isinstance(decision, Dispatch):
            self._dispatch(task, decision)
            return
        task.state = TaskState.QUEUED
        self.queue.push(task, front=front)
        if decision.reason is Reason.COLD_WAIT:
            task.cold_held = True
            self.cold_payoff.held()
        if decision.recheck_after_s is not None:
            self.timers.call_later(decision.recheck_after_s, self._rescue)
        now = self.clock.monotonic()
        for o in self.observers:
            o.task_routed(task, decision, now)

    def _dispatch(self, task: TaskRecord, decision: Dispatch) -> None:
        link = self.links.get(decision.worker_id)
        if link is None:  # cannot happen: the registry and links change together
            raise RuntimeError(f"no link for worker {decision.worker_id!r}")
        now = self.clock.monotonic()
        self.queue.remove(task.task_id)
        if task.cold_held:
            task.cold_held = False
            self.cold_payoff.record(paid=decision.reason not in UNPAID_COLD_HOLDS)
        task.state = TaskState.RUNNING
        task.attempt += 1
        task.worker_id = decision.worker_id
        task.dispatched_at = now
        self.registry.assign(decision.worker_id, task.task_id, task.label, decision.evict, now)
        self.running[task.task_id] = task
        link.send(pb.DispatcherMessage(task=task.to_frame(decision.evict)))
        self.health.watch(task, decision.miss)
        for o in self.observers:
            o.task_routed(task, decision, now)

    def _take(self, decision: Dispatch | None) -> bool:
        """Dispatch a queued task the policy chose; False when it chose none."""
        if decision is None:
            return False
        task = self.results.get(decision.task_id)
        assert task is not None, decision
        self._dispatch(task, decision)
        return True

    def _fill(self, worker_id: str, now: float) -> None:
        """Give a worker queued tasks while it has free slots."""
        while self._take(self.policy.next_for(worker_id, now)):
            pass

    def _fill_all_idle(self) -> None:
        """After a rare event (a worker left, labels changed) let every idle worker look."""
        now = self.clock.monotonic()
        for worker_id in self.registry.idle:
            if not self.queue:
                return
            self._fill(worker_id, now)

    def _rescue(self) -> None:
        while self._take(self.policy.rescue(self.clock.monotonic())):
            pass

    def _end_hold(self, task_id: str) -> None:
        """A held task's worker did not report it within the grace: queue it again."""
        task = self.held.release(task_id)
        if task is None:
            return
        log.info("task %s: worker %s did not report it; sent again", task_id, task.worker_id)
        holder = self.registry.workers.get(task.worker_id or "")
        task.worker_id = None
        task.state = TaskState.QUEUED
        if not self.accepting:
            self.fail(task, ShuttingDown("the dispatcher is shutting down"))
            return
        if holder is not None and holder.state is WorkerState.READY:
            # Back to the worker that may still be running it, busy or not: a worker answers a
            # task id it runs or ran from that run, without a slot (docs/architecture.md §6.6);
            # one it never got it runs, or answers BUSY when full (re-placed, no attempt).
            # Elsewhere, the task would run twice.
            miss = task.label not in holder.labels
            decision: Decision = Dispatch(task_id, holder.worker_id, Reason.IDLE_HOLDER, miss)
        else:
            decision = self.policy.place(task, self.clock.monotonic())
        self._apply(task, decision, front=True)

    def _redispatch(self, task: TaskRecord, count_attempt: bool) -> None:
        """Send a task whose worker left (or handed it back) elsewhere, oldest first."""
        self.running.pop(task.task_id, None)
        self.health.forget(task.task_id)
        if count_attempt and task.attempt >= self.config.max_attempts:
            detail = f"task {task.task_id!r} lost its worker {task.attempt} times"
            self.fail(task, AttemptsExhausted(detail))
            return
        if not count_attempt:
            task.attempt = max(0, task.attempt - 1)
        if not self.accepting:
            self.fail(task, ShuttingDown("the dispatcher is shutting down"))
            return
        task.worker_id = None
        for o in self.observers:
            o.task_redispatched(task)
        self._apply(task, self.policy.place(task, self.clock.monotonic()), front=True)

    # ---- outcomes -----------------------------------------------------------------------

    def _complete(self, task: TaskRecord, result: pb.TaskResult) -> None:
        try:
            task.result = parse_result_json(result.result_json)
        except ValueError as exc:  # NaN, Infinity or garbage: the worker failed, say so
            task.error = TaskFailed("INFERENCE_FAILED", f"the worker's result is not JSON: {exc}")
            self._finish(task, TaskState.FAILED)
            return
        self._finish(task, TaskState.COMPLETED)

    def _finish(self, task: TaskRecord, state: TaskState) -> None:
        now = self.clock.monotonic()
        task.state = state
        task.finished_at = now
        handle = self._deadlines.pop(task.task_id, None)
        if handle is not None:
            handle.cancel()
        self.health.forget(task.task_id)
        self.results.finished(task, now)
        for o in self.observers:
            o.task_finished(task, now)

    def _on_deadline(self, task: TaskRecord) -> None:
        self._deadlines.pop(task.task_id, None)
        if task.state.finished:
            return
        if task.state is TaskState.RUNNING:
            self._send_cancel(task, "deadline exceeded")
        waited = self.clock.monotonic() - task.submitted_at
        self.fail(task, DeadlineExceeded(f"no answer within {waited:.3f}s"))

    def _timed_out(self, task: TaskRecord, worker_id: str) -> None:
        """Its worker has not answered in many times the expected time: try elsewhere."""
        log.warning("task %s: no answer from %s in time; re-dispatched", task.task_id, worker_id)
        self._send_cancel(task, "soft timeout: re-dispatched")
        task.excluded.add(worker_id)
        self._redispatch(task, count_attempt=True)

    def reload(self, label: str, version: str) -> list[str]:
        """A new version of `label` was published (or rolled back to): tell every worker
        holding it to load that version (`Reload`); the ids of the workers told."""
        told = []
        for worker_id in sorted(self.registry.holders(label)):
            link = self.links.get(worker_id)
            if link is not None:
                link.send(pb.DispatcherMessage(reload=pb.Reload(label=label, version=version)))
                told.append(worker_id)
        return told

    def unload(self, label: str) -> list[str]:
        """`label` is being deleted: tell every worker holding it to unload it (`Unload`; the
        worker lets tasks running on it finish first); the ids of the workers told."""
        told = []
        for worker_id in sorted(self.registry.holders(label)):
            link = self.links.get(worker_id)
            if link is not None:
                link.send(pb.DispatcherMessage(unload=pb.Unload(label=label)))
                told.append(worker_id)
        return told

    def _send_cancel(self, task: TaskRecord, reason: str) -> None:
        worker_id = task.worker_id or ""
        link = self.links.get(worker_id)
        if link is None:
            return
        link.send(pb.DispatcherMessage(cancel=pb.Cancel(task_id=task.task_id, reason=reason)))
        self._cancelling[task.task_id] = worker_id
        # The slot stays taken until the worker answers, but not forever.
        self.timers.call_later(
            self.config.cancel_grace_s, self._release_slot, worker_id, task.task_id
        )

    def _release_slot(self, worker_id: str, task_id: str) -> None:
        """Free a slot whose cancelled task the worker never answered."""
        if self._cancelling.get(task_id) == worker_id:
            del self._cancelling[task_id]
        record = self.registry.workers.get(worker_id)
        if record is None or task_id not in record.in_flight:
            return
        log.warning("worker %s never answered cancelled task %s; slot freed", worker_id, task_id)
        self.registry.finish(worker_id, task_id)
        self._fill(worker_id, self.clock.monotonic())
