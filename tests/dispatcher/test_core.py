"""The sans-I/O core on its own: virtual time, recording links, no sockets and no event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from benchmark.simulation import VirtualClock, VirtualTimers
from dispatcher.admission import Admission
from dispatcher.config import Config
from dispatcher.core import Core
from dispatcher.errors import (
    AttemptsExhausted,
    CallerBusy,
    DeadlineExceeded,
    DispatcherError,
    DuplicateTask,
    NoWorkers,
    QueueFull,
    ShuttingDown,
    TaskFailed,
    all_error_classes,
)
from dispatcher.recovery import REJOIN_SETTLE_S
from dispatcher.stats import Stats
from dispatcher.tasks import TaskRecord, TaskState
from proto import smartrouting_pb2 as pb


@dataclass
class RecordingLink:
    """A worker link that keeps every frame the core sends."""

    frames: list[pb.DispatcherMessage] = field(default_factory=list)

    def send(self, message: pb.DispatcherMessage) -> None:
        self.frames.append(message)

    async def close(self, code: int, reason: str) -> None:
        return None

    def tasks(self) -> list[pb.Task]:
        return [f.task for f in self.frames if f.WhichOneof("body") == "task"]

    def cancels(self) -> list[str]:
        return [f.cancel.task_id for f in self.frames if f.WhichOneof("body") == "cancel"]


@dataclass
class Harness:
    core: Core
    admission: Admission
    stats: Stats
    clock: VirtualClock
    timers: VirtualTimers
    links: dict[str, RecordingLink] = field(default_factory=dict)

    def join(
        self, worker_id: str, labels: tuple[str, ...] = (), slots: int = 1, capacity: int = 2
    ) -> RecordingLink:
        link = RecordingLink()
        hello = pb.Hello(worker_id=worker_id, capacity=capacity, slots=slots, labels_loaded=labels)
        self.core.worker_joined(hello, link)
        self.links[worker_id] = link
        return link

    def submit(self, label: str, task_id: str | None = None, **kw: object) -> TaskRecord:
        task = self.admission.admit("t", label, "{}", task_id, **kw)  # type: ignore[arg-type]
        self.core.accept(task)
        return task

    def answer(self, worker_id: str, task_id: str, ok: bool = True, **kw: object) -> None:
        result = pb.TaskResult(task_id=task_id, ok=ok, **kw)  # type: ignore[arg-type]
        self.core.worker_result(worker_id, result)

    def advance(self, seconds: float) -> None:
        until = self.clock.now + seconds
        self.timers.run(until=until)
        self.clock.now = until


def harness(**config: object) -> Harness:
    clock = VirtualClock()
    timers = VirtualTimers(clock)
    core = Core(Config(**config), clock, timers)  # type: ignore[arg-type]
    stats = Stats()
    admission = Admission(core, rejected=stats.task_rejected)
    core.observers.extend([stats, admission])
    return Harness(core, admission, stats, clock, timers)


def test_a_task_goes_to_the_idle_holder_and_completes() -> None:
    """Dispatch to the holder; its result completes the task with the worker's timings."""
    h = harness()
    h.join("w1", ("b",))
    link = h.join("w2", ("a",))
    task = h.submit("a")
    assert [t.task_id for t in link.tasks()] == [task.task_id] and task.worker_id == "w2"
    h.clock.now = 0.25
    h.answer("w2", task.task_id, result_json='{"x": 1}', run_ms=5.0, labels_loaded=["a"])
    assert task.state is TaskState.COMPLETED and task.result == {"x": 1}
    assert task.timings_ms["total"] == 250.0 and task.timings_ms["run"] == 5.0
    assert h.stats.counters.completed == 1 and h.stats.counters.hits == 1
    assert not h.core.running


def test_a_held_task_goes_back_to_its_worker_even_when_that_worker_is_busy() -> None:
    """A claimed task whose worker is busy (and does not hold the label any more) is still sent
    back to that worker, not placed elsewhere: the worker answers a re-send from its one run,
    so another worker would only run it a second time."""
    h = harness()
    link = h.join("w1", ("b",), slots=1)
    h.join("w2", ("a",), slots=1)
    busy = h.submit("b")
    assert busy.worker_id == "w1"
    task = h.admission.admit("t", "a", "{}", "claimed")
    task.restored, task.worker_id = True, "w1"
    h.core.hold(task)
    h.advance(REJOIN_SETTLE_S * 1.1)
    assert [t.task_id for t in link.tasks()] == [busy.task_id, "claimed"]
    assert task.worker_id == "w1" and task.state is TaskState.RUNNING


def test_a_failed_id_is_refused_while_its_cancelled_run_is_still_on_the_worker() -> None:
    """Reusing a failed task's id is allowed, but not while its old run holds the id on a
    worker (it would collide there): 409 with Retry-After, then accepted once the worker
    answered the Cancel, and it may run on that same worker."""
    h = harness(cancel_grace_s=5.0)
    link = h.join("w1", ("a",), slots=2)
    first = h.submit("a", task_id="same", timeout_s=1.0)
    h.advance(1.0)
    assert first.state is TaskState.FAILED and link.cancels() == ["same"]
    assert h.core.cancel_pending("same") == "w1"
    with pytest.raises(DuplicateTask) as refused:
        h.submit("a", task_id="same", timeout_s=60.0)
    assert refused.value.retry_after_s == 5.0
    h.answer("w1", "same", ok=False, error_code=pb.DEADLINE_EXCEEDED, labels_loaded=["a"])
    assert h.core.cancel_pending("same") is None
    again = h.submit("a", task_id="same", timeout_s=60.0)
    assert again.state is TaskState.RUNNING and again.worker_id == "w1"


def test_a_failed_id_is_free_again_when_the_cancel_grace_frees_the_slot() -> None:
    """A worker that never answers the Cancel: the id is free once the grace frees its slot."""
    h = harness(cancel_grace_s=2.0)
    h.join("w1", ("a",))
    h.submit("a", task_id="same", timeout_s=1.0)
    h.advance(1.0)
    with pytest.raises(DuplicateTask):
        h.submit("a", task_id="same")
    h.advance(2.0)
    assert h.core.cancel_pending("same") is None
    assert h.submit("a", task_id="same").state is TaskState.RUNNING


def test_deadline_of_a_running_task_cancels_it_and_frees_the_slot_after_the_grace() -> None:
    """504 at the deadline, Cancel to the worker, slot freed when the worker never answers."""
    h = harness(cancel_grace_s=2.0)
    link = h.join("w1", ("a",))
    first = h.submit("a", timeout_s=1.0)
    second = h.submit("a", timeout_s=60.0)
    h.advance(1.0)
    assert first.state is TaskState.FAILED and isinstance(first.error, DeadlineExceeded)
    assert link.cancels() == [first.task_id]
    assert second.state is TaskState.QUEUED  # the slot is still taken
    h.advance(2.0)
    assert second.state is TaskState.RUNNING and second.worker_id == "w1"


def test_deadline_of_a_queued_task_takes_it_out_of_the_queue() -> None:
    """A queued task that times out leaves the queue; nothing is sent."""
    h = harness()
    task = h.submit("a", timeout_s=0.5)
    h.advance(0.5)
    assert task.state is TaskState.FAILED and not h.core.queue


def test_a_worker_leaving_sends_its_task_elsewhere_then_gives_up() -> None:
    """Re-dispatch on disconnect, counted; after max_attempts the task fails 503."""
    h = harness(max_attempts=2)
    h.join("w1", ("a",))
    task = h.submit("a")
    h.join("w2", ("a",))
    h.core.worker_left("w1")
    assert task.worker_id == "w2" and task.attempt == 2
    assert h.stats.counters.redispatched == 1
    h.core.worker_left("w2")
    assert task.state is TaskState.FAILED and isinstance(task.error, AttemptsExhausted)


def test_a_task_handed_back_at_shutdown_does_not_use_up_an_attempt() -> None:
    """WORKER_SHUTTING_DOWN and Goodbye's returned tasks re-dispatch without counting."""
    h = harness(max_attempts=1)
    h.join("w1", ("a",))
    task = h.submit("a")
    h.join("w2", ("a",))
    h.answer("w1", task.task_id, ok=False, error_code=pb.WORKER_SHUTTING_DOWN)
    assert task.worker_id == "w2" and task.state is TaskState.RUNNING
    h.core.worker_goodbye("w2", pb.Goodbye(returned_task_ids=[task.task_id]))
    # Both are draining now: the task waits for a worker that takes tasks, attempts intact.
    assert task.state is TaskState.QUEUED and task.attempt == 0
    h.join("w3", ("a",))
    assert task.worker_id == "w3" and task.attempt == 1


def test_a_worker_error_fails_the_task_with_the_status_of_its_code() -> None:
    """MODEL_NOT_FOUND becomes 404 task_failed naming the worker's code."""
    h = harness()
    h.join("w1", ("a",))
    task = h.submit("a")
    h.answer("w1", task.task_id, ok=False, error_code=pb.MODEL_NOT_FOUND, error_message="no")
    assert isinstance(task.error, TaskFailed) and task.error.http_status == 404
    assert task.error.to_json()["detail"] == {"code": "MODEL_NOT_FOUND", "message": "no"}


def test_a_result_for_a_task_already_answered_is_counted_late() -> None:
    """The task timed out; the worker's answer after that is a late result, not a second one."""
    h = harness()
    h.join("w1", ("a",))
    task = h.submit("a", timeout_s=0.1)
    h.advance(0.1)
    h.answer("w1", task.task_id, run_ms=1.0)
    assert task.state is TaskState.FAILED and h.stats.counters.late_results == 1


def test_waiting_for_a_busy_holder_is_rechecked_after_the_patience() -> None:
    """A task waiting for a busy holder is loaded elsewhere once it starves (the decision's
    re-check time, not a formula of the core's own)."""
    h = harness()
    h.join("w1", ("a",))
    h.submit("a")
    idle = h.join("w2", ("b",))
    waiting = h.submit("a")
    assert waiting.state is TaskState.QUEUED and not idle.tasks()
    h.advance(2.1)  # the default load estimate is 1 s; the starvation factor 2
    assert waiting.worker_id == "w2" and idle.tasks()[0].task_id == waiting.task_id


def test_stop_accepting_answers_queued_tasks_and_refuses_new_ones() -> None:
    """Shutdown step one: queued callers get 503 shutting_down; admission refuses."""
    h = harness()
    task = h.submit("a")
    h.core.stop_accepting()
    assert isinstance(task.error, ShuttingDown) and task.state is TaskState.FAILED
    with pytest.raises(ShuttingDown):
        h.submit("a")


def test_fail_running_answers_every_running_task() -> None:
    """Shutdown step two: running tasks past the bound are answered 503."""
    h = harness()
    h.join("w1", ("a",))
    task = h.submit("a")
    h.core.fail_running()
    assert isinstance(task.error, ShuttingDown) and not h.core.running


def test_a_restored_task_takes_a_buffered_result_instead_of_running_again() -> None:
    """After a restart, a worker's buffered result completes the re-queued task once."""
    h = harness()
    h.join("w1", ("b",))
    h.submit("b")  # keeps the only worker busy, so the restored task stays queued
    task = h.admission.admit("t", "a", "{}", "kept")
    task.restored = True
    h.core.accept(task)
    assert task.state is TaskState.QUEUED
    h.answer("w1", "kept", result_json="7", labels_loaded=["a", "b"])
    assert task.state is TaskState.COMPLETED and task.result == 7
    assert not h.core.queue and h.stats.counters.late_results == 0


def test_a_task_claimed_for_a_worker_already_linked_is_sent_again_after_the_settle() -> None:
    """A task claimed from a dead peer (shared store) and held for a worker linked here too:
    that worker will not rejoin, so the hold ends after REJOIN_SETTLE_S, not HOLD_GRACE_S."""
    h = harness()
    link = h.join("w1", ("a",))
    task = h.admission.admit("t", "a", "{}", "claimed")
    task.restored, task.worker_id = True, "w1"
    h.core.hold(task)
    h.advance(REJOIN_SETTLE_S * 0.9)
    assert link.tasks() == []
    h.advance(REJOIN_SETTLE_S * 0.2)
    assert [t.task_id for t in link.tasks()] == ["claimed"]


@pytest.mark.parametrize(
    ("config", "setup", "error"),
    [
        ({"reject_without_workers": True}, [], NoWorkers),
        ({"max_queue": 1}, ["queued"], QueueFull),
        ({"max_tasks_per_caller": 1}, ["mine"], CallerBusy),
        ({}, ["same"], DuplicateTask),
    ],
)
def test_admission_refusals(config: dict[str, object], setup: list[str], error: type) -> None:
    """Each admission check refuses with its error and leaves nothing behind."""
    h = harness(**config)
    for task_id in setup:
        h.submit("a", task_id=task_id if task_id == "same" else None, caller="c")
    queued = len(h.core.queue)
    with pytest.raises(error):
        h.submit("a", task_id="same" if setup == ["same"] else None, caller="c")
    assert len(h.core.queue) == queued


def test_a_callers_count_is_released_when_its_task_finishes() -> None:
    """Per-caller limit: the slot comes back with the answer."""
    h = harness(max_tasks_per_caller=1)
    h.join("w1", ("a",))
    task = h.submit("a", caller="c")
    h.answer("w1", task.task_id)
    h.submit("a", caller="c")  # admitted again


def test_queue_full_is_counted_as_rejected() -> None:
    """A refused task is a `rejected` outcome in the metrics."""
    h = harness(max_queue=1)
    h.submit("a")
    with pytest.raises(QueueFull):
        h.submit("a")
    assert h.stats.metrics.tasks.labels("a", "rejected")._value.get() == 1


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_survives_the_state_database(cls: type[DispatcherError]) -> None:
    """An error stored as a record comes back as the same class, status, body and retry."""
    if cls is TaskFailed:
        error: DispatcherError = TaskFailed("MODEL_NOT_FOUND", "gone")
    else:
        error = cls.__new__(cls)
        DispatcherError.__init__(error, {"why": cls.__name__}, retry_after_s=3.0)
    back = DispatcherError.from_record(error.to_record())
    assert type(back) is cls
    assert (back.http_status, back.to_json(), back.retry_after_s) == (
        error.http_status,
        error.to_json(),
        error.retry_after_s,
    )


def test_a_deadline_the_worker_sees_first_is_the_same_504() -> None:
    """A worker's DEADLINE_EXCEEDED answers 504 deadline_exceeded, as the core's own timer."""
    h = harness()
    h.join("w1", ("a",))
    task = h.submit("a")
    h.answer("w1", task.task_id, ok=False, error_code=pb.DEADLINE_EXCEEDED, error_message="late")
    assert isinstance(task.error, DeadlineExceeded) and task.error.code == "deadline_exceeded"


def test_cancel_of_a_running_task_tells_its_worker_and_answers_at_once() -> None:
    """Cancel: the worker gets Cancel, the task its error; a queued one just leaves the queue."""
    h = harness()
    link = h.join("w1", ("a",))
    running = h.submit("a")
    queued = h.submit("a")
    gone = ShuttingDown("cancelled by the test")
    assert h.core.cancel(queued.task_id, gone) is queued and not h.core.queue
    assert h.core.cancel(running.task_id, gone) is running
    assert link.cancels() == [running.task_id]
    assert running.error is gone and queued.error is gone
    assert h.core.cancel("nope", gone) is None
    assert h.core.cancel(running.task_id, DeadlineExceeded("later")).error is gone


def test_a_worker_handing_back_every_task_is_not_sent_it_again() -> None:
    """Finding 4 of the hardening issue: a worker answering WORKER_SHUTTING_DOWN to everything
    had the same task bounced back to it ~30,000 times in 5 s. Now it is marked draining and
    the task goes to the healthy idle worker at once."""
    h = harness()
    bouncer = h.join("bouncer", ("a",))
    task = h.submit("a")
    healthy = h.join("healthy", ())
    h.answer("bouncer", task.task_id, ok=False, error_code=pb.WORKER_SHUTTING_DOWN)
    assert task.worker_id == "healthy" and len(bouncer.tasks()) == 1
    assert [t.task_id for t in healthy.tasks()] == [task.task_id]
    assert h.core.registry.get("bouncer").state.value == "draining"


def test_a_silent_worker_loses_its_task_after_the_soft_timeout_then_is_suspended() -> None:
    """Finding 4: a worker that accepts tasks and never answers kept them until the deadline
    while a healthy worker sat idle. Now each goes elsewhere after the soft timeout, and three
    in a row suspend the silent worker for the cool-down."""
    h = harness(soft_timeout_min_s=1.0, cancel_grace_s=0.5, breaker_cooldown_s=30.0)
    silent = h.join("silent", ("a0", "a1", "a2"), capacity=4)
    h.join("healthy", (), capacity=4)
    for i in range(3):
        task = h.submit(f"a{i}")
        assert task.worker_id == "silent"  # the only holder
        h.advance(1.0)  # soft timeout: max(1 s, 10 x the expected 50 ms run)
        assert task.worker_id == "healthy" and task.attempt == 2
        assert task.task_id in silent.cancels()
        h.answer("healthy", task.task_id, labels_loaded=[f"a{j}" for j in range(i + 1)])
        assert task.state is TaskState.COMPLETED
        h.advance(0.5)  # the silent worker never answers the Cancel: its slot comes back
    record = h.core.registry.get("silent")
    assert record.state.value == "suspended" and record.failures == 3
    assert h.submit("a0").worker_id == "healthy"
    h.advance(30.0)
    assert record.state.value == "ready"


def test_worker_faults_count_and_a_success_clears_them() -> None:
    """ENGINE_UNAVAILABLE three times in a row suspends; a success in between resets."""
    h = harness(breaker_failures=3)
    h.join("w1", ("a",))
    for code in (pb.ENGINE_UNAVAILABLE, pb.ENGINE_UNAVAILABLE):
        t = h.submit("a")
        h.answer("w1", t.task_id, ok=False, error_code=code, labels_loaded=["a"])
    t = h.submit("a")
    h.answer("w1", t.task_id, labels_loaded=["a"])
    assert h.core.registry.get("w1").failures == 0
    for code in (pb.INTERNAL, pb.INFERENCE_FAILED, pb.ENGINE_UNAVAILABLE):
        t = h.submit("a")
        h.answer("w1", t.task_id, ok=False, error_code=code, labels_loaded=["a"])
    assert h.core.registry.get("w1").state.value == "suspended"
    assert h.stats.metrics.worker_suspensions._value.get() == 1
    # A caller's mistake is not the worker's fault.
    h2 = harness(breaker_failures=1)
    h2.join("w1", ("a",))
    t = h2.submit("a")
    h2.answer("w1", t.task_id, ok=False, error_code=pb.INVALID_PARAMETERS)
    assert h2.core.registry.get("w1").state.value == "ready"


def test_a_result_with_nan_is_the_workers_failure_not_a_500() -> None:
    """Finding 3: result_json with NaN/Infinity is answered INFERENCE_FAILED (502 JSON)."""
    h = harness()
    h.join("w1", ("a",))
    for bad in ('{"x": NaN}', "[Infinity]", "-Infinity"):
        t = h.submit("a")
        h.answer("w1", t.task_id, result_json=bad, labels_loaded=["a"])
        assert isinstance(t.error, TaskFailed)
        assert t.error.to_json()["detail"]["code"] == "INFERENCE_FAILED"


def test_hits_and_misses_count_completed_tasks_only() -> None:
    """A failed task neither hit nor missed (it was counted as a hit before); every load a
    worker reports still counts as a model load."""
    h = harness()
    h.join("w1", ("a",))
    hit = h.submit("a")
    h.answer("w1", hit.task_id, run_ms=2.0, labels_loaded=["a"])
    miss = h.submit("b")
    h.answer("w1", miss.task_id, label_miss=True, load_ms=300.0, labels_loaded=["a", "b"])
    failed = h.submit("c")
    h.answer("w1", failed.task_id, ok=False, error_code=pb.MODEL_NOT_FOUND, label_miss=True)
    c, metrics = h.stats.counters, h.stats.metrics
    assert (c.completed, c.failed, c.hits, c.misses) == (2, 1, 1, 1)
    assert metrics.label_hits.labels("a")._value.get() == 1
    assert metrics.label_misses.labels("b")._value.get() == 1
    assert metrics.label_hits.labels("c")._value.get() == 0
    assert metrics.model_loads.labels("c")._value.get() == 1
    assert c.per_label["b"].load_ms_total == 300.0 and "c" not in c.per_label
    assert b"_created" not in metrics.render()
