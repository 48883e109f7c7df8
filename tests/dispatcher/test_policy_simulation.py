"""The policies on the benchmark's reference scenarios, in a discrete-event simulation.

No sockets and no sleeping: simulated time, the real Registry, TaskQueue, LabelEstimates and
policies, and workers modelled as in the simulated engine (load ~270 ms, run ~10 ms, LRU cache
honouring evict hints). Two workers of capacity 2, 2,400 requests from two closed-loop
producers, labels uniform (DESIGN.md section 8).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass, field

import pytest

from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.routing import Dispatch, Enqueue, Reason, make_policy
from dispatcher.tasks import TaskQueue, TaskRecord


@dataclass
class SimWorker:
    capacity: int
    loaded: OrderedDict[str, None] = field(default_factory=OrderedDict)


@dataclass
class Outcome:
    misses: int
    completed: int
    avg_runtime_s: float


def simulate(
    policy_name: str, labels: int, wait_avg: float, wait_sd: float, seed: int = 1
) -> Outcome:
    rng = random.Random(seed)
    trace = random.Random(seed + 1)
    registry, queue, estimates = Registry(), TaskQueue(), LabelEstimates()
    policy = make_policy(policy_name, registry, queue, estimates, random.Random(seed + 2))
    workers = {f"w{i}": SimWorker(capacity=2) for i in range(2)}
    for wid in workers:
        registry.add(WorkerRecord(wid, capacity=2, slots=1))
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    tasks: dict[str, tuple[TaskRecord, int]] = {}
    total, sent, misses, done, busy_s = 2400, 0, 0, 0, 0.0

    def push(at: float, kind: str, payload: object) -> None:
        heapq.heappush(events, (at, next(seq), kind, payload))

    def start(now: float, d: Dispatch) -> None:
        nonlocal misses, busy_s
        task, producer = tasks[d.task_id]
        queue.remove(task.task_id)
        registry.assign(d.worker_id, task.task_id, task.label, d.evict, now)
        w = workers[d.worker_id]
        load = 0.0
        if task.label not in w.loaded:
            misses += 1
            load = max(0.05, rng.gauss(0.270, 0.030))
            while len(w.loaded) >= w.capacity:
                hinted = [h for h in d.evict if h in w.loaded]
                del w.loaded[hinted[0] if hinted else next(iter(w.loaded))]
            w.loaded[task.label] = None
        w.loaded.move_to_end(task.label)
        run = max(0.002, rng.gauss(0.010, 0.002))
        busy_s += load + run
        push(now + load + run, "finish", (d.worker_id, task, producer, load, run))

    def submit(now: float, producer: int) -> None:
        nonlocal sent
        if sent >= total:
            return
        sent += 1
        label = f"label-{trace.randrange(labels)}"
        task = TaskRecord(f"t{sent}", "sample_task", label, "{}", now, now + 300, 0)
        task.enqueued_at = now
        tasks[task.task_id] = (task, producer)
        decision = policy.place(task, now)
        if isinstance(decision, Dispatch):
            start(now, decision)
            return
        assert isinstance(decision, Enqueue)
        queue.push(task)
        if decision.reason is Reason.WAIT_FOR_HOLDER:
            push(now + 2 * estimates.load_ms(label) / 1000 + 0.001, "rescue", None)

    for producer in range(2):
        push(0.0, "submit", producer)
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "submit":
            submit(now, payload)  # type: ignore[arg-type]
        elif kind == "rescue":
            while (d := policy.rescue(now)) is not None:
                start(now, d)
        else:
            wid, task, producer, load, run = payload  # type: ignore[misc]
            registry.finish(wid, task.task_id)
            registry.set_labels(wid, list(workers[wid].loaded), now=now)
            estimates.observe(task.label, load_ms=load * 1000 if load else None, run_ms=run * 1000)
            done += 1
            if sent < total:
                push(now + max(0.1, rng.gauss(wait_avg, wait_sd)), "submit", producer)
            while (d := policy.next_for(wid, now)) is not None:
                start(now, d)
    return Outcome(misses, done, busy_s / done)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_over_capacity_routed_beats_random(seed: int) -> None:
    """5 labels on 4 slots: routed misses about 1 in 5 (target <= 505), random about 3 in 5."""
    routed = simulate("routed", labels=5, wait_avg=2.5, wait_sd=1.0, seed=seed)
    random_ = simulate("random", labels=5, wait_avg=2.5, wait_sd=1.0, seed=seed)
    assert routed.completed == random_.completed == 2400
    assert routed.misses <= 505, routed
    assert random_.misses > 1200, random_
    assert routed.avg_runtime_s < random_.avg_runtime_s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_at_capacity_routed_converges_to_no_misses(seed: int) -> None:
    """4 labels on 4 slots: routed loads each label once (target <= 12 misses)."""
    routed = simulate("routed", labels=4, wait_avg=0.75, wait_sd=1.0, seed=seed)
    random_ = simulate("random", labels=4, wait_avg=0.75, wait_sd=1.0, seed=seed)
    assert routed.completed == 2400
    assert routed.misses <= 12, routed
    assert random_.misses > 900, random_
