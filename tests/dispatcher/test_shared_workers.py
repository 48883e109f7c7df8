"""The core with workers shared by several dispatchers: BUSY and occupancy reports.

Virtual time and recording links (tests/dispatcher/test_core.py's harness); the real
dispatchers and workers are in tests/worker/test_multi_dispatcher.py and tests/faults/test_busy.py.
"""

from __future__ import annotations

from dispatcher.registry import WorkerState
from dispatcher.tasks import TaskState
from proto import smartrouting_pb2 as pb
from tests.dispatcher.test_core import RecordingLink, harness


def busy(task_id: str, attempt: int = 1) -> pb.TaskResult:
    return pb.TaskResult(task_id=task_id, ok=False, error_code=pb.BUSY, attempt=attempt)


def test_busy_re_places_the_task_without_an_attempt_or_a_strike() -> None:
    """A BUSY answer sends the task to another worker with its attempt unchanged; the busy
    worker counts as full (not idle) and its breaker is not fed, however often it says BUSY."""
    h = harness(breaker_failures=1)
    h.join("w1", ("a",))
    w2 = h.join("w2", ("b",))
    task = h.submit("a")
    assert (task.worker_id, task.attempt) == ("w1", 1)
    h.core.worker_result("w1", busy(task.task_id))
    assert (task.worker_id, task.attempt, task.state) == ("w2", 1, TaskState.RUNNING)
    assert [t.task_id for t in w2.tasks()] == [task.task_id]
    record = h.core.registry.get("w1")
    assert (record.state, record.failures, record.free_slots) == (WorkerState.READY, 0, 0)
    assert "w1" not in h.core.registry.idle
    h.answer("w2", task.task_id, labels_loaded=["a", "b"])
    assert task.state is TaskState.COMPLETED and task.attempt == 1


def test_a_task_every_worker_refuses_waits_in_front_until_a_slot_is_reported_free() -> None:
    """All workers BUSY: the task is queued at the front, still on attempt 0 (not run); the
    next occupancy report with a free slot gives it to that worker."""
    h = harness()
    w1 = h.join("w1", ("a",))
    task = h.submit("a")
    h.core.worker_result("w1", busy(task.task_id))
    later = h.submit("a")
    assert task.state is TaskState.QUEUED and task.attempt == 0
    assert h.core.queue.oldest() is task and later.state is TaskState.QUEUED
    report = pb.Occupancy(slots_in_use=0, slots_in_use_elsewhere=0, slots=1, labels_loaded=["a"])
    h.core.worker_occupancy("w1", report)
    assert (task.state, task.worker_id, task.attempt) == (TaskState.RUNNING, "w1", 1)
    assert [t.task_id for t in w1.tasks()] == [task.task_id] * 2
    assert later.state is TaskState.QUEUED  # one slot: the older task went first


def test_free_slots_combine_the_report_with_the_tasks_sent_since() -> None:
    """Free slots = slots - our tasks in flight - the slots the worker reported taken by the
    other dispatchers: our own tasks are never counted twice."""
    h = harness()
    h.join("w1", ("a",), slots=4)
    record = h.core.registry.get("w1")
    h.core.worker_occupancy("w1", pb.Occupancy(slots_in_use_elsewhere=2, labels_loaded=["a"]))
    assert record.free_slots == 2
    first = h.submit("a")
    assert first.worker_id == "w1" and record.free_slots == 1
    second = h.submit("a")
    assert second.worker_id == "w1" and record.free_slots == 0
    assert h.submit("a").state is TaskState.QUEUED  # full: 2 ours + 2 elsewhere
    # The others' tasks ended: the queued task goes out at once.
    h.core.worker_occupancy("w1", pb.Occupancy(slots_in_use_elsewhere=0, labels_loaded=["a"]))
    assert len(record.in_flight) == 3 and record.free_slots == 1
    # A report beyond the slots is clamped, not trusted.
    h.core.worker_occupancy("w1", pb.Occupancy(slots_in_use_elsewhere=10**6))
    assert record.busy_elsewhere == 4 and record.free_slots == 0


def test_occupancy_labels_update_the_holders() -> None:
    """The labels of an occupancy report replace the worker's (another dispatcher's task
    loaded one and evicted another), so routing here sees them."""
    h = harness()
    h.join("w1", ("a",), capacity=2)
    h.core.worker_occupancy("w1", pb.Occupancy(labels_loaded=["b"], labels_loading=["c"]))
    assert h.core.registry.holders("a") == set()
    assert h.core.registry.holders("b") == {"w1"} and h.core.registry.holders("c") == {"w1"}


def test_a_result_after_busy_frees_the_worker_again() -> None:
    """Full after BUSY until the worker shows a freed slot: a result of one of our tasks does."""
    h = harness()
    h.join("w1", ("a",), slots=2)
    first = h.submit("a")
    second = h.submit("a")
    h.core.worker_result("w1", busy(second.task_id))
    record = h.core.registry.get("w1")
    assert record.free_slots == 0 and second.state is TaskState.QUEUED
    h.answer("w1", first.task_id, labels_loaded=["a"])
    assert first.state is TaskState.COMPLETED
    assert second.state is TaskState.RUNNING and second.worker_id == "w1"


def test_hello_carries_the_slots_taken_elsewhere() -> None:
    """A worker joining while busy with another dispatcher's tasks has fewer free slots."""
    h = harness()
    hello = pb.Hello(worker_id="w1", capacity=2, slots=3, slots_in_use_elsewhere=2)
    h.core.worker_joined(hello, RecordingLink())
    assert h.core.registry.get("w1").free_slots == 1
