"""Demand-aware placement, eviction and preload of the routed policy: tables, no sockets."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dispatcher.cold_wait import ColdWaitPayoff
from dispatcher.demand import DemandModel
from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.routing import (
    COLD_SCAN_LIMIT,
    PLACEMENT_SAMPLE,
    Dispatch,
    Enqueue,
    Preload,
    Reason,
    RoutedPolicy,
)
from dispatcher.tasks import TaskQueue, TaskRecord

NOW = 100.0


def make_task(task_id: str, label: str, cold_held: bool = False) -> TaskRecord:
    return TaskRecord(
        task_id, "t", label, "{}", NOW, NOW + 300, 0, enqueued_at=NOW, cold_held=cold_held
    )


def policy_of(
    workers: dict[str, list[str]],
    demand: dict[str, int] | None = None,
    busy: tuple[str, ...] = (),
    queued: tuple[str, ...] = (),
    capacity: int = 2,
    seed: int = 0,
    cold_wait_s: float = 0.0,
    paying: bool = True,
) -> RoutedPolicy:
    """Workers with their labels; `demand`: arrivals per label at NOW (rate = n / 10 s);
    `busy`: workers running a task of their first label; `queued`: labels with a queued task
    (held by the cold wait, if there is one); `cold_wait_s`: the policy's cold wait (0: off);
    `paying`: whether its holds have been paying (`ColdWaitPayoff`)."""
    registry = Registry()
    for wid, labels in workers.items():
        registry.add(WorkerRecord(wid, capacity=capacity, slots=1), labels, now=1.0)
        if wid in busy:
            registry.assign(wid, f"run-{wid}", labels[0], now=NOW)
    queue = TaskQueue()
    for i, label in enumerate(queued):
        queue.push(make_task(f"q{i}", label, cold_held=cold_wait_s > 0))
    model = DemandModel(time_constant_s=10.0, target_utilisation=0.7)
    for label, arrivals in (demand or {}).items():
        for _ in range(arrivals):
            model.record(label, NOW)
    estimates = LabelEstimates(default_load_ms=300.0, default_run_ms=10.0)
    payoff = ColdWaitPayoff(paid=1.0, unpaid=0.0) if paying else ColdWaitPayoff()
    return RoutedPolicy(
        registry,
        queue,
        estimates,
        demand=model,
        rng=random.Random(seed),
        cold_wait_s=cold_wait_s,
        cold_payoff=payoff,
    )


EVICTION_CASES = [
    pytest.param(
        {"w1": ["hot", "cold"]},
        {"hot": 50, "cold": 1},
        (),
        "cold",
        id="lowest-demand-per-copy-goes",
    ),
    pytest.param(
        {"w1": ["a", "b"], "w2": ["a", "c"], "w3": ["a", "d"]},
        {"a": 5, "b": 1},
        (),
        "a",
        id="surplus-copy-goes-before-a-single-copy-of-a-colder-label",
    ),
    pytest.param(
        {"w1": ["lonely", "other"]},
        {"lonely": 1, "other": 30},
        ("lonely",),
        "other",
        id="last-copy-with-queued-work-kept",
    ),
    pytest.param(
        {"w1": ["never", "asked"]},
        {},
        (),
        "never",
        id="no-demand-anywhere-least-recently-used-first",
    ),
]


@pytest.mark.parametrize(("workers", "demand", "queued", "victim"), EVICTION_CASES)
def test_victim(workers, demand, queued, victim) -> None:
    """Which label w1 evicts to make room for a new one."""
    policy = policy_of(workers, demand, queued=queued)
    record = policy.registry.get("w1")
    if victim == "never":  # equal (zero) costs: the older last use goes
        record.labels["asked"] = 50.0
    assert policy.victim(record, keep="new", now=NOW) == victim


@pytest.mark.parametrize(
    ("history", "victim"),
    [
        pytest.param(
            {"steady": [50.0, 60.0, 70.0, 80.0, 90.0], "burst": [99.0, 99.0]},
            "burst",
            id="a-steady-label-outranks-a-recent-burst",
        ),
        pytest.param(
            {"hot": [90.0 + i * 0.1 for i in range(100)], "cold": [95.0]},
            "cold",
            id="a-hot-label-outranks-a-cold-one",
        ),
    ],
)
def test_eviction_reads_the_long_memory_frequency(
    history: dict[str, list[float]], victim: str
) -> None:
    """The victim is the label with the lowest frequency per copy (`DemandModel.frequency`:
    its share of the recent arrivals, bounded by its silence), not the lowest 10 s rate,
    which would have taken the steady label in the first row."""
    policy = policy_of({"w1": list(history)})
    for at, label in sorted((at, label) for label, times in history.items() for at in times):
        policy.demand.record(label, at)
    assert policy.victim(policy.registry.get("w1"), keep="new", now=NOW) == victim


def test_the_last_copy_of_a_queued_label_is_never_evicted_even_when_nothing_else_can_go() -> None:
    """Both labels are last copies with queued work: the worker cannot take the new label."""
    policy = policy_of({"w1": ["a", "b"]}, queued=("a", "b"))
    assert policy.victim(policy.registry.get("w1"), keep="new", now=NOW) is None


def test_a_new_label_is_not_loaded_beside_the_only_copy_of_a_hot_one() -> None:
    """Same victim cost on both workers; the one whose other label is cold takes the load."""
    policy = policy_of({"w1": ["hot", "x"], "w2": ["cold", "y"]}, {"hot": 100, "cold": 1})
    decision = policy.place(make_task("t", "new"), NOW)
    assert decision == Dispatch("t", "w2", Reason.LOAD_EVICT, miss=True, evict=("y",))


def test_a_free_slot_beside_a_cold_label_beats_one_beside_a_hot_label() -> None:
    """Among workers with room, the load blocks the least demand."""
    policy = policy_of({"w1": ["hot"], "w2": ["cold"]}, {"hot": 100, "cold": 1})
    decision = policy.place(make_task("t", "new"), NOW)
    assert decision == Dispatch("t", "w2", Reason.LOAD_FREE_SLOT, miss=True)


def test_placement_is_an_unbiased_sample_of_idle_workers() -> None:
    """With equal costs everywhere, the chosen worker is spread over all idle workers (the old
    rule always took the head of the idle index)."""
    workers = {f"w{i:03}": [f"l{i}a", f"l{i}b"] for i in range(200)}
    chosen: Counter[str] = Counter()
    for seed in range(400):
        policy = policy_of(workers, seed=seed)
        decision = policy.place(make_task("t", "new"), NOW)
        assert isinstance(decision, Dispatch)
        chosen[decision.worker_id] += 1
    assert len(chosen) > 120  # a head-of-list rule would give a handful
    assert max(chosen.values()) < 15


@pytest.mark.parametrize("workers", [10, 100, 1_000, 10_000])
def test_a_placement_examines_a_bounded_number_of_workers(workers: int) -> None:
    """The decision cost is flat from 10 to 10,000 workers: at most 2 x PLACEMENT_SAMPLE
    workers are costed, whatever the pool size."""
    policy = policy_of({f"w{i}": [f"a{i}", f"b{i}"] for i in range(workers)})
    examined: list[str] = []
    original = policy._placement_cost

    def counting(worker, label, now):  # type: ignore[no-untyped-def]
        examined.append(worker.worker_id)
        return original(worker, label, now)

    policy._placement_cost = counting  # type: ignore[method-assign,assignment]
    policy.place(make_task("t", "new"), NOW)
    assert 1 <= len(examined) <= min(workers, 2 * PLACEMENT_SAMPLE)


def test_preload_fires_when_demand_exceeds_copies() -> None:
    """A label at 50/s with 10 ms runs needs ceil(0.5 / 0.7) = 1... at 150/s it needs 3."""
    policy = policy_of({"w1": ["hot"], "w2": ["cold", "x"], "w3": []}, {"hot": 1500}, busy=("w1",))
    decision = policy.preload("hot", NOW, in_flight=0)
    assert decision == Preload("w3", "hot")


@pytest.mark.parametrize(
    ("demand", "queued", "in_flight", "why"),
    [
        ({"hot": 30}, (), 0, "one copy is enough for 3/s"),
        ({"hot": 1500}, ("q1", "q2", "q3"), 0, "queued tasks may need every idle worker"),
        ({"hot": 1500}, (), 1, "the preload share of idle workers is in use"),
        ({"cold": 1500}, (), 0, "no copy yet: the task that needs it loads it"),
    ],
)
def test_preload_is_bounded(demand, queued, in_flight, why) -> None:
    """No preload when it is not needed or could delay a task."""
    policy = policy_of({"w1": ["hot"], "w2": [], "w3": []}, demand, queued=queued)
    label = next(iter(demand))
    assert policy.preload(label, NOW, in_flight=in_flight) is None, why


def test_preload_never_displaces_a_label_worth_more_than_the_new_copy() -> None:
    """Every idle worker is full of labels hotter per copy than a third copy would be."""
    policy = policy_of(
        {"w1": ["hot"], "w2": ["hot"], "w3": ["b", "c"]},
        {"hot": 400, "b": 300, "c": 300},
        busy=("w1", "w2"),
    )
    assert policy.preload("hot", NOW, in_flight=0) is None


def test_a_holder_with_more_slots_is_worth_waiting_for_longer() -> None:
    """Per-label concurrency: the expected wait divides by the holders' slots, so a busy
    holder with 4 slots keeps a queue 4 times as long before a second copy is loaded."""
    registry = Registry()
    registry.add(WorkerRecord("big", capacity=2, slots=4), ["a"], now=1.0)
    registry.add(WorkerRecord("other", capacity=2, slots=1), [], now=1.0)
    for i in range(4):
        registry.assign("big", f"run{i}", "a", now=NOW)
    queue = TaskQueue()
    estimates = LabelEstimates(default_load_ms=300.0, default_run_ms=100.0)
    policy = RoutedPolicy(registry, queue, estimates)
    assert policy.expected_wait_ms("a", 8) == 200.0  # 100 ms x 8 / 4 slots
    for i in range(11):
        queue.push(make_task(f"q{i}", "a"))
    # 12th in line: 100 x 12 / 4 = 300 ms <= the 300 ms load: wait for the holder.
    assert policy.place(make_task("t", "a"), NOW).reason is Reason.WAIT_FOR_HOLDER
    queue.push(make_task("q11", "a"))
    decision = policy.place(make_task("t2", "a"), NOW)
    assert decision == Dispatch("t2", "other", Reason.LOAD_FREE_SLOT, miss=True)


# ---- the cold wait: a label nobody holds waits for a cheap place ----------------------------

COLD_WAIT_S = 0.5
#: Two labels in demand beside each other, and a new label asked for once.
WARM_WORKER = {"w1": ["hot", "warm"]}
WARM_DEMAND = {"hot": 100, "warm": 50, "new": 1}


@pytest.mark.parametrize(
    ("workers", "demand", "cold_wait_s", "expected"),
    [
        pytest.param(
            WARM_WORKER,
            WARM_DEMAND,
            COLD_WAIT_S,
            Enqueue(Reason.COLD_WAIT, recheck_after_s=COLD_WAIT_S + 0.001),
            id="waits-rather-than-evict-a-label-worth-more",
        ),
        pytest.param(
            WARM_WORKER,
            WARM_DEMAND,
            0.0,
            Dispatch("t", "w1", Reason.LOAD_EVICT, miss=True, evict=("warm",)),
            id="no-cold-wait-evicts-at-once",
        ),
        pytest.param(
            {"w1": ["hot"]},
            WARM_DEMAND,
            COLD_WAIT_S,
            Dispatch("t", "w1", Reason.LOAD_FREE_SLOT, miss=True),
            id="a-free-slot-is-taken-at-once",
        ),
        pytest.param(
            {"w1": ["stale", "unasked"]},
            {"new": 1},
            COLD_WAIT_S,
            Dispatch("t", "w1", Reason.LOAD_EVICT, miss=True, evict=("stale",)),
            id="evicting-a-label-nobody-asks-for-is-taken-at-once",
        ),
        pytest.param(
            WARM_WORKER,
            {"hot": 10, "warm": 5, "new": 400},
            COLD_WAIT_S,
            Dispatch("t", "w1", Reason.LOAD_EVICT, miss=True, evict=("warm",)),
            id="a-label-worth-twice-the-victim-is-loaded-at-once",
        ),
    ],
)
def test_cold_wait_place(workers, demand, cold_wait_s, expected) -> None:
    """Where a task for a label nobody holds goes when it arrives."""
    policy = policy_of(workers, demand, cold_wait_s=cold_wait_s)
    assert policy.place(make_task("t", "new"), NOW) == expected


def test_the_cold_wait_does_not_hold_back_another_copy_of_a_held_label() -> None:
    """A label with a busy holder and a queue too long to wait for is loaded at once, as
    without a cold wait: the wait is for labels nobody holds."""
    policy = policy_of(
        {"w0": ["new"], **WARM_WORKER}, WARM_DEMAND, busy=("w0",), cold_wait_s=COLD_WAIT_S
    )
    for i in range(40):  # 41 x 10 ms for one holder > the 300 ms load
        policy.queue.push(make_task(f"q{i}", "new"))
    decision = policy.place(make_task("t", "new"), NOW)
    assert decision == Dispatch("t", "w1", Reason.LOAD_EVICT, miss=True, evict=("warm",))


@pytest.mark.parametrize(
    ("labels", "cold_wait_s", "loads"),
    [
        pytest.param(["hot", "warm"], COLD_WAIT_S, False, id="waiting-task-skips-a-costly-worker"),
        pytest.param(["hot", "warm"], 0.0, True, id="no-cold-wait-loads-it-there"),
        pytest.param(["stale", "unasked"], COLD_WAIT_S, True, id="a-cheap-worker-takes-it"),
    ],
)
def test_cold_wait_next_for(labels: list[str], cold_wait_s: float, loads: bool) -> None:
    """A worker frees up while a task for a label nobody holds waits."""
    policy = policy_of({"w1": labels}, WARM_DEMAND, queued=("new",), cold_wait_s=cold_wait_s)
    decision = policy.next_for("w1", NOW + 0.1)
    assert (decision is not None) == loads
    if decision is not None:
        assert (decision.task_id, decision.worker_id, decision.miss) == ("q0", "w1", True)


def test_a_queued_task_the_wait_did_not_hold_loads_on_the_first_freed_worker() -> None:
    """Only tasks the cold wait held (`cold_held`) wait for a cheap place: a task of a label
    nobody holds that was queued for another reason (no idle worker, or its holds had stopped
    paying) loads where the first worker frees up, as with no cold wait."""
    policy = policy_of(WARM_WORKER, WARM_DEMAND, cold_wait_s=COLD_WAIT_S)
    policy.queue.push(make_task("q", "new"))
    decision = policy.next_for("w1", NOW + 0.1)
    assert decision is not None
    assert (decision.task_id, decision.worker_id, decision.reason) == ("q", "w1", Reason.LOAD_EVICT)
    assert decision.miss and len(decision.evict) == 1


@pytest.mark.parametrize(
    ("paying", "least", "most"),
    [
        pytest.param(True, 2000, 2000, id="paying-every-cold-task-is-held"),
        pytest.param(False, 20, 70, id="not-paying-only-the-1-in-50-probes-are-held"),
    ],
)
def test_the_cold_wait_holds_only_while_it_pays(paying: bool, least: int, most: int) -> None:
    """Of 2,000 tasks for a label nobody holds, where loading it would evict a label worth
    more: all are held while holds pay; otherwise ~40 probes are, and the rest load at once."""
    policy = policy_of(WARM_WORKER, WARM_DEMAND, cold_wait_s=COLD_WAIT_S, paying=paying)
    decisions = [policy.place(make_task(f"t{i}", "new"), NOW) for i in range(2000)]
    held = sum(1 for d in decisions if isinstance(d, Enqueue) and d.reason is Reason.COLD_WAIT)
    assert least <= held <= most
    loaded = [d for d in decisions if isinstance(d, Dispatch)]
    assert len(loaded) == 2000 - held
    assert all(d.reason is Reason.LOAD_EVICT and d.evict == ("warm",) for d in loaded)


def test_a_task_whose_cold_wait_is_over_is_loaded_where_it_costs_least() -> None:
    """`rescue` leaves the task until its wait is over, then loads it on the cheaper of two
    idle workers (w2, evicting a label nobody asks for), cheap or not."""
    policy = policy_of(
        {"w1": ["hot", "warm"], "w2": ["warm2", "cool"]},
        {**WARM_DEMAND, "warm2": 50},
        queued=("new",),
        cold_wait_s=COLD_WAIT_S,
    )
    assert policy.rescue(NOW + COLD_WAIT_S - 0.01) is None
    decision = policy.rescue(NOW + COLD_WAIT_S + 0.01)
    assert decision == Dispatch("q0", "w2", Reason.COLD_WAIT_OVER, miss=True, evict=("cool",))


@pytest.mark.parametrize(
    ("copies", "cold_wait_s", "surplus"),
    [
        pytest.param(2, 0.0, True, id="one-spare-copy-is-surplus-without-cold-wait"),
        pytest.param(2, COLD_WAIT_S, False, id="one-spare-copy-is-kept-with-cold-wait"),
        pytest.param(3, COLD_WAIT_S, True, id="two-spare-copies-are-surplus-with-cold-wait"),
    ],
)
def test_cold_wait_surplus_margin(copies: int, cold_wait_s: float, surplus: bool) -> None:
    """A label at 0.5/s needs one copy; with a cold wait the first spare one is kept, so
    that waiting cold tasks do not take a hot label's spare copy that its queue then
    loads again."""
    workers = {f"w{i}": ["a"] for i in range(copies)}
    policy = policy_of(workers, {"a": 5}, cold_wait_s=cold_wait_s)
    assert policy.per_copy("a", NOW)[1] is surplus


@pytest.mark.parametrize(
    ("older", "found"),
    [
        pytest.param(0, True, id="the-oldest-waiting-label"),
        pytest.param(COLD_SCAN_LIMIT - 1, True, id="within-the-scan-limit"),
        pytest.param(COLD_SCAN_LIMIT, False, id="past-the-scan-limit-rescue-loads-it"),
        pytest.param(100, False, id="far-past-the-scan-limit"),
    ],
)
def test_a_freed_worker_examines_a_bounded_number_of_waiting_cold_labels(
    older: int, found: bool
) -> None:
    """A freed worker looks at the `COLD_SCAN_LIMIT` oldest labels waiting for a cheap place
    (50 more wait behind "worthy"), working out what a load there displaces once, not once
    per label: at 1,200 tasks/s, 23 labels wait on average and the scan of all of them took a
    third of a core. "worthy" is worth the load and the labels asked for once are not; one
    that waits past the limit is left to `rescue` when its wait is over."""
    older_cheap = [f"old{i}" for i in range(older)]
    newer_cheap = [f"new{i}" for i in range(50)]
    policy = policy_of(
        {"w1": ["hot", "warm"]},
        queued=(*older_cheap, "worthy", *newer_cheap),
        cold_wait_s=COLD_WAIT_S,
    )
    # 10 s of traffic before NOW: "worthy" asked for 4 times as often as "warm".
    stream = ["hot"] * 4 + ["warm"] + ["worthy"] * 4 + ["hot"]
    for step in range(100):
        for k, label in enumerate(stream):
            policy.demand.record(label, NOW - 10.0 + (step * len(stream) + k) * 0.01)
    for label in older_cheap + newer_cheap:
        policy.demand.record(label, NOW)
    costed: list[str] = []
    original = policy._displacement

    def counting(worker, label, now, need_room=None):  # type: ignore[no-untyped-def]
        costed.append(worker.worker_id)
        return original(worker, label, now, need_room)

    policy._displacement = counting  # type: ignore[method-assign,assignment]
    valued: list[str] = []
    admits = policy.admits

    def valuing(label, cost, now):  # type: ignore[no-untyped-def]
        valued.append(label)
        return admits(label, cost, now)

    policy.admits = valuing  # type: ignore[method-assign]
    decision = policy.next_for("w1", NOW + 0.01)
    assert len(valued) == min(older + 1, COLD_SCAN_LIMIT)
    if found:
        assert decision == Dispatch(f"q{older}", "w1", Reason.LOAD_EVICT, True, ("warm",))
        assert costed == ["w1", "w1"]  # the scan, then the load chosen
    else:
        assert decision is None
        assert costed == ["w1"]
