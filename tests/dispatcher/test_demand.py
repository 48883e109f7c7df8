"""The demand model: decayed request rates and the copies they call for."""

from __future__ import annotations

import math
import random

import pytest

from dispatcher.demand import GAP_FACTOR, DemandModel


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
    """Old labels go, kept ones (held or queued) stay."""
    model = DemandModel(time_constant_s=1.0)
    for label in ("old", "held", "fresh"):
        model.record(label, 0.0)
    model.record("fresh", 99.0)
    assert model.prune(100.0, keep={"held"}) == 1
    assert len(model) == 2 and model.rate("old", 100.0) == 0.0
