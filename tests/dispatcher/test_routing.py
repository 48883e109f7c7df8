"""Table-driven tests of the pure routing policies: state in, decision out, no sockets."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.routing import (
    Dispatch,
    Enqueue,
    RandomPolicy,
    Reason,
    RoutedPolicy,
    make_policy,
)
from dispatcher.tasks import TaskQueue, TaskRecord

NOW = 100.0


@dataclass
class W:
    """A worker in a table row: labels with their last-use time, busy or idle."""

    wid: str
    labels: dict[str, float] = field(default_factory=dict)
    capacity: int = 2
    busy: bool = False
    slots: int = 1


def make_task(task_id: str, label: str, age_s: float = 0.0) -> TaskRecord:
    at = NOW - age_s
    return TaskRecord(task_id, "sample_task", label, "{}", at, at + 300, 0, enqueued_at=at)


def build(
    workers: list[W],
    queued: list[tuple[str, str, float]] = (),  # type: ignore[assignment]
    load_ms: float = 1000.0,
    run_ms: float = 50.0,
) -> tuple[Registry, TaskQueue, LabelEstimates]:
    registry = Registry()
    for w in workers:
        registry.add(WorkerRecord(w.wid, capacity=w.capacity, slots=w.slots))
        for label, used in w.labels.items():
            registry.assign(w.wid, f"seed-{w.wid}-{label}", label, now=used)
            registry.finish(w.wid, f"seed-{w.wid}-{label}")
        registry.set_labels(w.wid, list(w.labels))
        if w.busy:  # one running task per slot, on the worker's labels in turn
            names = list(w.labels) or ["zzz"]
            for i in range(w.slots):
                registry.assign(w.wid, f"busy-{w.wid}-{i}", names[i % len(names)], now=NOW)
    queue = TaskQueue()
    for task_id, label, age in queued:
        queue.push(make_task(task_id, label, age))
    estimates = LabelEstimates(default_load_ms=load_ms, default_run_ms=run_ms)
    return registry, queue, estimates


def routed(*args, **kwargs) -> RoutedPolicy:  # type: ignore[no-untyped-def]
    registry, queue, estimates = build(*args, **kwargs)
    return RoutedPolicy(registry, queue, estimates)


PLACE_CASES = [
    pytest.param(
        [W("w1", {"a": 1}), W("w2", {})],
        {},
        "a",
        Dispatch("new", "w1", Reason.IDLE_HOLDER, miss=False),
        id="idle-holder",
    ),
    pytest.param(
        [W("w1", {"a": 1}, busy=True), W("w2", {})],
        {},
        "a",
        # Re-checked just after the starvation patience: 2 x the 1,000 ms load of `build`.
        Enqueue(Reason.WAIT_FOR_HOLDER, recheck_after_s=2.001),
        id="holder-busy-wait-is-cheaper",
    ),
    pytest.param(
        [W("w1", {"a": 1}, busy=True), W("w2", {})],
        {"load_ms": 300, "run_ms": 800},
        "a",
        Dispatch("new", "w2", Reason.LOAD_FREE_SLOT, miss=True),
        id="holder-busy-load-is-cheaper",
    ),
    pytest.param(
        [W("w1", {"a": 1}, busy=True), W("w2", {})],
        {"queued": [(f"q{i}", "a", 0.0) for i in range(25)]},
        "a",
        Dispatch("new", "w2", Reason.LOAD_FREE_SLOT, miss=True),
        id="holder-busy-long-queue-load-elsewhere",
    ),
    pytest.param(
        [W("w1", {"a": 1, "b": 2}), W("w2", {"c": 3})],
        {},
        "d",
        Dispatch("new", "w2", Reason.LOAD_FREE_SLOT, miss=True),
        id="free-slot-preferred",
    ),
    pytest.param(
        [W("w1", {"a": 10, "b": 5})],
        {},
        "c",
        Dispatch("new", "w1", Reason.LOAD_EVICT, miss=True, evict=("b",)),
        id="evict-lru",
    ),
    pytest.param(
        [W("w1", {"a": 10, "b": 5}, busy=False)],
        {"queued": [("q", "b", 0.0)]},
        "c",
        Dispatch("new", "w1", Reason.LOAD_EVICT, miss=True, evict=("a",)),
        id="evict-label-without-demand-before-lru",
    ),
    pytest.param(
        [W("w1", {"a": 10, "b": 20}), W("w2", {"c": 5, "d": 30})],
        {},
        "e",
        Dispatch("new", "w2", Reason.LOAD_EVICT, miss=True, evict=("c",)),
        id="evict-least-useful-across-workers",
    ),
    pytest.param(
        [W("w1", {"a": 1}, busy=True), W("w2", {"b": 1}, busy=True)],
        {},
        "c",
        Enqueue(Reason.NO_IDLE_WORKER),
        id="no-idle-worker-queue",
    ),
    pytest.param([], {}, "a", Enqueue(Reason.NO_IDLE_WORKER), id="no-worker-at-all"),
    pytest.param(
        [W("w1", {"a": 1, "b": 2}, busy=True, slots=2)],
        {},
        "c",
        Enqueue(Reason.NO_IDLE_WORKER),
        id="never-evict-a-label-in-use",
    ),
]


@pytest.mark.parametrize(("workers", "state", "label", "expected"), PLACE_CASES)
def test_routed_place(workers, state, label, expected) -> None:
    """Each branch of the routed policy's decision for a new task."""
    policy = routed(workers, **state)
    assert policy.place(make_task("new", label), NOW) == expected


NEXT_CASES = [
    pytest.param(
        [W("w1", {"a": 1})],
        [("old-x", "x", 0.5), ("a1", "a", 0.2), ("a2", "a", 0.1)],
        "w1",
        Dispatch("a1", "w1", Reason.IDLE_HOLDER, miss=False),
        id="freed-worker-takes-oldest-task-of-a-held-label",
    ),
    pytest.param(
        [W("w1", {"a": 1})],
        [("old-x", "x", 2.5), ("a1", "a", 0.2)],
        "w1",
        Dispatch("old-x", "w1", Reason.STARVATION, miss=True),
        id="starving-task-served-anyway",
    ),
    pytest.param(
        [W("w1", {"a": 1, "b": 2})],
        [("x1", "x", 0.1)],
        "w1",
        Dispatch("x1", "w1", Reason.LOAD_EVICT, miss=True, evict=("a",)),
        id="label-without-holder-loaded-here",
    ),
    pytest.param(
        [W("w1", {"a": 1}), W("w2", {"x": 1}, busy=True)],
        [("x1", "x", 0.1)],
        "w1",
        None,
        id="busy-holder-will-be-sooner-leave-it",
    ),
    pytest.param(
        [W("w1", {"a": 1}), W("w2", {"x": 1}, busy=True)],
        [(f"x{i}", "x", 0.1) for i in range(30)],
        "w1",
        Dispatch("x0", "w1", Reason.LOAD_FREE_SLOT, miss=True),
        id="busy-holder-too-slow-for-its-queue-load-here",
    ),
    pytest.param([W("w1", {"a": 1})], [], "w1", None, id="empty-queue"),
    pytest.param([W("w1", {"a": 1}, busy=True)], [("a1", "a", 0.1)], "w1", None, id="worker-busy"),
]


@pytest.mark.parametrize(("workers", "queued", "worker_id", "expected"), NEXT_CASES)
def test_routed_next_for(workers, queued, worker_id, expected) -> None:
    """Each branch of what a freed worker takes from the queue."""
    policy = routed(workers, queued)
    assert policy.next_for(worker_id, NOW) == expected


@pytest.mark.parametrize(
    ("queued", "expected"),
    [
        pytest.param(
            [("x1", "x", 2.5)], Dispatch("x1", "w2", Reason.STARVATION, miss=True), id="starving"
        ),
        # 1.5 s is longer than one load (1 s) but below the factor of 2: keep waiting.
        pytest.param([("x1", "x", 1.5)], None, id="not-yet-starving"),
        pytest.param([], None, id="empty"),
    ],
)
def test_routed_rescue(queued, expected) -> None:
    """The starvation guard sends a task waiting over 2 loads' time to an idle worker."""
    policy = routed([W("w1", {"x": 1}, busy=True), W("w2", {})], queued)
    assert policy.rescue(NOW) == expected


def test_never_evict_a_label_a_running_task_uses() -> None:
    """A worker with a free slot whose every label is in use cannot take a new label."""
    registry, queue, estimates = build([W("w1", {"a": 1, "b": 2}, slots=3)])
    registry.assign("w1", "r1", "a", now=NOW)
    registry.assign("w1", "r2", "b", now=NOW)
    policy = RoutedPolicy(registry, queue, estimates)
    assert registry.get("w1").is_idle
    assert policy.victim(registry.get("w1"), keep="c") is None
    assert policy.place(make_task("t", "c"), NOW) == Enqueue(Reason.NO_IDLE_WORKER)


def test_wait_threshold_follows_learned_times() -> None:
    """The wait-versus-load choice flips when measured run time exceeds load time."""
    registry, queue, estimates = build([W("w1", {"a": 1}, busy=True), W("w2", {})])
    policy = RoutedPolicy(registry, queue, estimates)
    assert policy.place(make_task("t", "a"), NOW) == Enqueue(
        Reason.WAIT_FOR_HOLDER, recheck_after_s=2 * estimates.load_ms("a") / 1000 + 0.001
    )
    for _ in range(30):
        estimates.observe("a", load_ms=200.0, run_ms=900.0)
    assert policy.place(make_task("t", "a"), NOW) == Dispatch(
        "t", "w2", Reason.LOAD_FREE_SLOT, miss=True
    )


def test_random_policy_fifo_ignores_labels() -> None:
    """Random: a new task goes to a random idle worker; a freed worker takes the oldest task."""
    registry, queue, estimates = build([W("w1", {"a": 1}), W("w2", {"b": 1})])
    policy = RandomPolicy(registry, queue, random.Random(1))
    chosen = {policy.place(make_task(f"t{i}", "a"), NOW).worker_id for i in range(40)}  # type: ignore[union-attr]
    assert chosen == {"w1", "w2"}
    queue.push(make_task("old", "zzz", 1.0))
    queue.push(make_task("new", "a", 0.1))
    assert policy.place(make_task("t", "a"), NOW) == Enqueue(Reason.RANDOM_FIFO)
    assert policy.next_for("w1", NOW) == Dispatch("old", "w1", Reason.RANDOM, miss=True)
    assert policy.rescue(NOW) is None


def test_random_policy_queues_without_idle_worker() -> None:
    """Random: with every worker busy the task joins the FIFO."""
    registry, queue, estimates = build([W("w1", {"a": 1}, busy=True)])
    policy = RandomPolicy(registry, queue, random.Random(1))
    assert policy.place(make_task("t", "a"), NOW) == Enqueue(Reason.RANDOM_FIFO)


def test_make_policy_names() -> None:
    """make_policy builds both policies by name and refuses others."""
    registry, queue, estimates = build([])
    assert make_policy("routed", registry, queue, estimates).name == "routed"
    assert make_policy("random", registry, queue, estimates).name == "random"
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("fastest", registry, queue, estimates)
