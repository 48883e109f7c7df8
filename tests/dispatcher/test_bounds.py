"""Bounded memory, sans-I/O: parameters kept only while a worker may need them, results bounded
by count and bytes, parameter bytes budgeted per caller (docs/reliability.md)."""

from __future__ import annotations

import pytest

from dispatcher.admission import ByteBudget
from dispatcher.errors import CallerBusy, QueueFull, TaskIdConflict
from dispatcher.tasks import RECORD_BYTES, ResultStore, TaskRecord, TaskState, parameters_digest
from tests.dispatcher.test_core import harness


def _done(task_id: str, answer_bytes: int = 0) -> TaskRecord:
    task = TaskRecord(task_id, "t", "a", '{"n": 1}', 0.0, 10.0, 0)
    task.state, task.answer_bytes = TaskState.COMPLETED, answer_bytes
    return task


def test_parameters_are_kept_for_a_redispatch_and_dropped_at_the_finish() -> None:
    """A task whose worker left is sent again with its parameters; once it finished they are
    gone, and a retry with the same parameters (written differently) is still recognised."""
    h = harness()
    first = h.join("w1", ("a",))
    task = h.admission.admit("t", "a", '{"pad": "xyz", "n": 1}', "big")
    h.core.accept(task)
    h.core.worker_left("w1")
    second = h.join("w2", ("a",))
    assert second.tasks()[0].parameters_json == '{"pad": "xyz", "n": 1}'
    assert first.tasks()[0].parameters_json == '{"pad": "xyz", "n": 1}'
    h.answer("w2", "big", result_json='{"x": 1}', labels_loaded=["a"])
    assert task.state is TaskState.COMPLETED and task.parameters_json == ""
    assert h.admission.retried("big", "t", "a", '{"n":1,"pad":"xyz"}') is task
    with pytest.raises(TaskIdConflict):
        h.admission.retried("big", "t", "a", '{"n": 2, "pad": "xyz"}')


def test_the_digest_ignores_formatting_only() -> None:
    """Key order and spacing do not change the digest; values and non-JSON text do."""
    assert parameters_digest('{"a": 1, "b": [1, 2]}') == parameters_digest('{"b":[1,2],"a":1}')
    assert parameters_digest('{"a": 1}') != parameters_digest('{"a": 2}')
    assert parameters_digest("not json") != parameters_digest('"not json"')


def test_results_are_bounded_by_count_oldest_first() -> None:
    """Past max_results the oldest finished task goes; live ones are never dropped."""
    store = ResultStore(ttl_s=600, max_results=2)
    live = TaskRecord("live", "t", "a", "{}", 0.0, 10.0, 0)
    store.add(live)
    for i, task_id in enumerate(("r1", "r2", "r3")):
        task = _done(task_id)
        store.add(task)
        store.finished(task, now=float(i))
    assert ["r1" in store, "r2" in store, "r3" in store, "live" in store] == [
        False,
        True,
        True,
        True,
    ]
    assert store.finished_count == 2


def test_results_are_bounded_by_bytes_oldest_first() -> None:
    """Past max_bytes the oldest finished answers go until the rest fit; the newest stays
    even when it alone is larger."""
    store = ResultStore(ttl_s=600, max_bytes=3 * (1000 + RECORD_BYTES))
    for i in range(4):
        task = _done(f"r{i}", answer_bytes=1000)
        store.add(task)
        store.finished(task, now=float(i))
    assert [f"r{i}" in store for i in range(4)] == [False, True, True, True]
    huge = _done("huge", answer_bytes=10**9)
    store.add(huge)
    store.finished(huge, now=9.0)
    assert "huge" in store and store.finished_count == 1
    assert store.finished_bytes == 10**9 + RECORD_BYTES
    assert store.expire(now=700.0) == 1 and store.finished_bytes == 0


def test_byte_budget_refuses_past_either_cap_and_frees_on_release() -> None:
    """429 per caller (CallerBusy) and in all (QueueFull); a release frees the bytes."""
    budget = ByteBudget(total_limit=100, caller_limit=60, retry_after_s=2.0)
    budget.check("a", 60)
    budget.charge("t1", "a", 60)
    with pytest.raises(CallerBusy) as busy:
        budget.check("a", 1)
    assert busy.value.retry_after_s == 2.0
    budget.charge("t2", "b", 40)
    with pytest.raises(QueueFull):
        budget.check("c", 1)
    budget.release("t1")
    budget.check("a", 60)
    assert (budget.total, budget.by_caller) == (40, {"b": 40})


def test_admission_releases_the_bytes_when_the_task_finishes() -> None:
    """The budget follows the task: charged at admission, free once it is answered."""
    h = harness(max_caller_bytes=30)
    h.join("w1", ("a",))
    task = h.admission.admit("t", "a", '{"pad": "' + "x" * 15 + '"}', "p1", caller="c")
    h.core.accept(task)
    with pytest.raises(CallerBusy):
        h.admission.admit("t", "a", '{"pad": "' + "x" * 15 + '"}', "p2", caller="c")
    h.answer("w1", "p1", result_json="{}", labels_loaded=["a"])
    assert h.admission.budget.total == 0
    assert h.admission.admit("t", "a", "{}", "p3", caller="c").task_id == "p3"
