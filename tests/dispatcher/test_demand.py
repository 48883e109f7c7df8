"""The demand model: decayed request rates and the copies they call for."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import generate_latest

from dispatcher.demand import FREQUENCY_MEMORIES, GAP_FACTOR, DemandModel
from dispatcher.registry import Registry
from dispatcher.stats import Stats
from dispatcher.tasks import TaskQueue
from tests.dispatcher.test_logs import samples, value


def test_a_steady_poisson_stream_reads_its_rate() -> None:
    """λ = 20/s for 60 s: the decayed rate ends within 15% of 20."""
    rng = random.Random(1)
    model = DemandModel(time_constant_s=10.0)
    now = 0.0
    while now < 60.0:
        now += rng.expovariate(20.0)
        model.record("a", now)
    assert model.rate("a", now) == pytest.approx(20.0, rel=0.15)


def test_the_rate_decays_with_the_time_constant() -> None:
    """Without arrivals the decayed rate falls by e^-1 per tau (until the gap rule bites)."""
    model = DemandModel(time_constant_s=10.0)
    for _ in range(100):
        model.record("a", 0.0)  # 10/s at t=0
    assert model.rate("a", 0.0) == pytest.approx(10.0)
    # 0.1 s later the gap bound (2 / 0.1 = 20/s) is above the decayed rate.
    assert model.rate("a", 0.1) == pytest.approx(10.0 * math.exp(-0.01))


def test_silence_marks_a_stopped_label_long_before_its_rate_decays() -> None:
    """A hot label silent for 4 s reads at most GAP_FACTOR / 4 per second, not ~6.7/s."""
    model = DemandModel(time_constant_s=10.0)
    for _ in range(100):
        model.record("hot", 0.0)
    assert model.rate("hot", 4.0) == pytest.approx(GAP_FACTOR / 4.0)


@pytest.mark.parametrize(
    ("arrivals", "run_ms", "needed"),
    [(0, 10.0, 0), (1, 10.0, 1), (300, 10.0, 1), (1000, 10.0, 2), (2400, 10.0, 4)],
)
def test_copies_needed(arrivals: int, run_ms: float, needed: int) -> None:
    """ceil(rate x run time / 0.7), at least one while there is demand."""
    model = DemandModel(time_constant_s=10.0, target_utilisation=0.7)
    for _ in range(arrivals):
        model.record("a", 5.0)
    assert model.copies_needed("a", 5.0, run_ms) == needed


def test_prune_forgets_labels_nobody_asks_for_unless_kept() -> None:
    """Old labels go once their rate and their counts in every memory are gone; kept ones
    (held or queued) stay."""
    model = DemandModel(time_constant_s=1.0, frequency_memories=(1,))
    for label in ("old", "held", "fresh"):
        model.record(label, 0.0)
    for _ in range(4):  # e^-4 of a count left: forgotten
        model.record("fresh", 99.0)
    assert model.prune(100.0, keep={"held"}) == 1
    assert len(model) == 2 and model.rate("old", 100.0) == 0.0


def test_prune_keeps_a_label_the_long_memory_still_counts() -> None:
    """A tail label asked for once a minute has no 10 s rate left between its requests, but
    the long memory still counts it, so it is not forgotten."""
    model = DemandModel(time_constant_s=1.0, frequency_memories=(100, 10_000), settled_expert=False)
    model.record("tail", 0.0)
    for i in range(200):
        model.record("hot", 60.0 + i * 0.001)
    assert model.rate("tail", 61.0) < 1e-3
    assert model.prune(61.0) == 0
    assert model.frequency("tail", 61.0) > 0.0


def test_the_frequency_of_a_steady_stream_reads_its_rate() -> None:
    """Two labels at 30/s and 10/s for 60 s, a memory of 1,000 arrivals: the frequency of each
    (its share of the recent arrivals x the arrival rate) ends within 15% of its rate."""
    rng = random.Random(2)
    model = DemandModel(time_constant_s=10.0, frequency_memories=(1_000,), settled_expert=False)
    now = 0.0
    while now < 60.0:
        now += rng.expovariate(40.0)
        model.record("a" if rng.random() < 0.75 else "b", now)
    for label in ("a", "b"):  # read both just after an arrival: the silence bound is off
        model.record(label, now)
    assert model.arrival_rate(now) == pytest.approx(40.0, rel=0.15)
    assert model.frequency("a", now) == pytest.approx(30.0, rel=0.15)
    assert model.frequency("b", now) == pytest.approx(10.0, rel=0.15)


def test_the_arrival_rate_is_not_biased_low_while_the_model_warms_up() -> None:
    """5 s of 100/s: the decayed total alone reads 100 x (1 - e^-0.5) = 39/s; corrected, ~100."""
    model = DemandModel(time_constant_s=10.0)
    for i in range(501):
        model.record("a", i / 100.0)
    assert model.arrival_rate(5.0) == pytest.approx(100.0, rel=0.02)


def test_the_frequency_forgets_per_arrival_not_per_second() -> None:
    """A label's count loses e^-1 per memory's length of arrivals of any label."""
    model = DemandModel(time_constant_s=10.0, frequency_memories=(100,), settled_expert=False)
    for _ in range(10):
        model.record("old", 0.0)
    for i in range(99):
        model.record("new", 1.0 + i)
    model.record("old", 100.0)  # 100 arrivals after the first 10, 100 s later
    share = model.frequency("old", 100.0) / model.arrival_rate(100.0)
    # The first ten (each forgotten by e^-1/100 per later arrival) lose e^-1 over the next 100
    # arrivals, not the e^-10 that 100 s with tau = 10 s would take; plus the last one.
    first_ten = sum(math.exp(-k / 100) for k in range(10))
    assert share == pytest.approx((first_ten * math.exp(-1.0) + 1) / 100, rel=1e-6)


def test_the_frequency_ranks_a_steady_label_above_a_burst() -> None:
    """Asked for 5 times over the last 50 s vs twice a second ago: the 10 s rate ranks the
    burst higher (0.18/s vs 0.06/s), the longer frequency ranks the steady label higher."""
    model = DemandModel(time_constant_s=10.0)
    for at in (50.0, 60.0, 70.0, 80.0, 90.0):
        model.record("steady", at)
    for _ in range(2):
        model.record("burst", 99.0)
    assert model.rate("steady", 100.0) < model.rate("burst", 100.0)
    assert model.frequency("steady", 100.0) > model.frequency("burst", 100.0)


def test_the_frequency_of_a_label_that_stopped_is_bounded_by_its_silence() -> None:
    """500 requests in 5 s, then silence: 20 s later it reads GAP_FACTOR / 20 s at most,
    however large its share of the remembered arrivals."""
    model = DemandModel(time_constant_s=10.0)
    for i in range(500):
        model.record("stopped", 10.0 + i * 0.01)
    last = 10.0 + 499 * 0.01
    assert model.frequency("stopped", last) > 1.0
    assert model.frequency("stopped", last + 20.0) == pytest.approx(GAP_FACTOR / 20.0)


def _zipf_stream(model: DemandModel, ranks: list[str], arrivals: int, rng: random.Random) -> None:
    """`arrivals` requests at 1,000/s, label of rank k drawn with weight 1 / k^1.1."""
    weights = [1.0 / (k + 1) ** 1.1 for k in range(len(ranks))]
    start = model.arrival_count
    for i, label in enumerate(rng.choices(ranks, weights, k=arrivals)):
        model.record(label, (start + i) / 1000.0)


def test_a_steady_zipf_stream_gives_the_long_memory_the_weight() -> None:
    """On stationary traffic the long memory predicts the arrivals better (its counts are less
    noisy), so it decides eviction."""
    model = DemandModel(frequency_memories=(500, 10_000), settled_expert=False)
    _zipf_stream(model, [f"l{i}" for i in range(300)], 20_000, random.Random(3))
    assert model.memory_weights[10_000] > 0.9


def test_a_moved_hot_set_gives_the_short_memory_the_weight() -> None:
    """The same traffic, then the ranks dealt to a new permutation: within 2,000 arrivals the
    short memory predicts better, and a label of the new hot set outranks one of the old."""
    rng = random.Random(4)
    model = DemandModel(frequency_memories=(500, 10_000), settled_expert=False)
    ranks = [f"l{i}" for i in range(300)]
    _zipf_stream(model, ranks, 20_000, rng)
    moved = ranks[:]
    rng.shuffle(moved)
    _zipf_stream(model, moved, 2_000, rng)
    assert model.memory_weights[500] > 0.9
    now = model.arrival_count / 1000.0
    old_top, new_top = ranks[0], moved[0]
    model.record(old_top, now)  # read both just after an arrival: the silence bound is off
    model.record(new_top, now)
    assert model.frequency(new_top, now) > model.frequency(old_top, now)


@pytest.mark.parametrize("seed", [5, 6])
def test_the_default_experts_follow_a_moved_hot_set_within_one_phase(seed: int) -> None:
    """The default experts on the measured shape (1,000 Zipf labels, a hot set moving every
    4,000 arrivals): steady traffic declares no change and is ranked by the long counts; a move
    is detected within 100 arrivals, the counts since it take the weight, and a label of the
    new hot set outranks the old top label."""
    rng = random.Random(seed)
    model = DemandModel()
    assert model.frequency_memories == FREQUENCY_MEMORIES == (2_000, 24_000)
    ranks = [f"l{i}" for i in range(1_000)]
    _zipf_stream(model, ranks, 24_000, rng)
    assert model.shifts.shifts == 0
    assert model.memory_weights[2_000] < model.memory_weights[24_000] + model.settled_weight
    moved = ranks[:]
    rng.shuffle(moved)
    _zipf_stream(model, moved, 100, rng)
    assert model.shifts.shifts == 1
    _zipf_stream(model, moved, 400, rng)
    assert model.settled_weight > 0.9
    now = model.arrival_count / 1000.0
    model.record(ranks[0], now)  # read both just after an arrival: the silence bound is off
    model.record(moved[0], now)
    assert model.frequency(moved[0], now) > model.frequency(ranks[0], now)


def test_uniform_traffic_declares_no_change() -> None:
    """2,400 uniform arrivals of 5 labels (the reference scenarios' traffic): the counts
    wander, but never far enough to declare that the mix changed."""
    rng = random.Random(1)
    model = DemandModel()
    labels = [f"l{i}" for i in range(5)]
    for i in range(2_400):
        model.record(rng.choice(labels), i * 1.2)
    assert model.shifts.shifts == 0


def test_without_the_settled_expert_the_memories_take_all_the_weight() -> None:
    """`settled_expert=False`: the counts since the last change get no weight."""
    model = DemandModel(frequency_memories=(100, 1_000), settled_expert=False)
    for i in range(500):
        model.record(f"l{i % 7}", i / 100.0)
    assert model.settled_weight == 0.0
    assert sum(model.memory_weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("memories", [(), (0,), (100, -1)])
def test_frequency_memories_must_be_positive(memories: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="frequency memories"):
        DemandModel(frequency_memories=memories)


def test_the_metrics_read_the_detected_jumps() -> None:
    """`smartrouting_demand_shifts_detected` reads the detector's count when scraped."""
    model = DemandModel()
    stats = Stats()
    stats.watch(Registry(), TaskQueue(), {}, demand=model)
    rng = random.Random(7)
    ranks = [f"l{i}" for i in range(1_000)]
    _zipf_stream(model, ranks, 4_000, rng)
    scrape = samples(generate_latest(stats.metrics.registry).decode())
    assert value(scrape, "smartrouting_demand_shifts_detected") == 0.0
    rng.shuffle(ranks)
    _zipf_stream(model, ranks, 500, rng)
    scrape = samples(generate_latest(stats.metrics.registry).decode())
    assert value(scrape, "smartrouting_demand_shifts_detected") == 1.0
