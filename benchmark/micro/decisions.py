"""The cost of one routing decision of the pure policy, with many workers registered."""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.routing import RoutedPolicy
from dispatcher.tasks import TaskQueue, TaskRecord


@dataclass
class DecisionResult:
    """Mean cost of one policy decision with `workers` workers in the registry."""

    workers: int
    place_hit_us: float
    place_load_us: float
    next_for_us: float


def realistic_state(workers: int, capacity: int = 2, seed: int = 0) -> RoutedPolicy:
    """A registry of `workers` workers (capacity labels each, half busy), a short queue."""
    rng = random.Random(seed)
    registry = Registry()
    n_labels = max(4, workers // 2)
    for i in range(workers):
        wid = f"w{i}"
        registry.add(WorkerRecord(wid, capacity=capacity, slots=1))
        picks = rng.sample(range(n_labels), capacity)
        for j, pick in enumerate(picks):
            registry.assign(wid, f"seed-{i}-{j}", f"l{pick}", now=rng.random())
            registry.finish(wid, f"seed-{i}-{j}")
        if i % 2:
            registry.assign(wid, f"busy-{i}", f"l{picks[0]}", now=1.0)
    # Five queued tasks waiting for busy holders, none of them held by the first idle worker:
    # the freed worker's slowest path (no hit, every waiting label examined, nothing taken).
    idle = registry.idle.first()
    assert idle is not None
    mine = set(registry.get(idle).labels)
    waiting = [
        lbl
        for i in range(1, workers, 2)
        for lbl in registry.get(f"w{i}").in_flight.values()
        if lbl not in mine
    ]
    queue = TaskQueue()
    for k, waiting_label in enumerate(waiting[:5]):
        queue.push(_task(f"q{k}", waiting_label, enqueued_at=1.5 + k * 0.01))
    return RoutedPolicy(registry, queue, LabelEstimates())


def _task(task_id: str, label: str, enqueued_at: float = 10.0) -> TaskRecord:
    return TaskRecord(task_id, "t", label, "{}", enqueued_at, 1e9, 0, enqueued_at=enqueued_at)


def decision_cost(workers: int, iterations: int) -> DecisionResult:
    """Best-of-5 mean microseconds of place (hit and evict-to-load paths) and next_for."""
    policy = realistic_state(workers)
    registry = policy.registry
    idle = registry.idle.first()
    assert idle is not None
    held = next(iter(registry.get(idle).labels))
    hit_task = _task("hit", held)
    new_task = _task("new", "never-seen")
    now = 2.0

    def best(stmt: Callable[[], object]) -> float:
        runs = timeit.repeat(stmt, number=iterations, repeat=5)
        return round(min(runs) / iterations * 1e6, 3)

    return DecisionResult(
        workers=workers,
        place_hit_us=best(lambda: policy.place(hit_task, now)),
        place_load_us=best(lambda: policy.place(new_task, now)),
        next_for_us=best(lambda: policy.next_for(idle, now)),
    )
