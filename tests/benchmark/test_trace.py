"""Table tests of the seeded trace (benchmark/trace.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmark.trace import (
    MIN_WAIT_S,
    TraceConfig,
    build_trace,
    fingerprint,
    label_names,
    label_weights,
    shift_permutation,
)


def test_same_seed_same_trace() -> None:
    """Two builds with the same config are identical, entry for entry."""
    config = TraceConfig(requests=500, labels=7, seed=42)
    assert build_trace(config) == build_trace(config)
    assert fingerprint(build_trace(config)) == fingerprint(build_trace(config))


def test_other_seed_other_trace() -> None:
    """A different seed draws a different label sequence."""
    a = build_trace(TraceConfig(requests=200, seed=1))
    b = build_trace(TraceConfig(requests=200, seed=2))
    assert a.labels != b.labels
    assert fingerprint(a) != fingerprint(b)


def test_labels_independent_of_wait_parameters() -> None:
    """Changing the think-time parameters leaves the label sequence unchanged."""
    a = build_trace(TraceConfig(requests=300, wait_avg=2.5, seed=3))
    b = build_trace(TraceConfig(requests=300, wait_avg=0.75, seed=3))
    assert a.labels == b.labels


@pytest.mark.parametrize(("requests", "producers"), [(10, 2), (11, 3), (5, 8)])
def test_round_robin_producers(requests: int, producers: int) -> None:
    """Request i goes to producer i % producers, every request exactly once."""
    trace = build_trace(TraceConfig(requests=requests, producers=producers))
    assert [e.producer for e in trace.entries] == [i % producers for i in range(requests)]
    assert sum(len(trace.for_producer(p)) for p in range(producers)) == requests


def test_closed_loop_waits_floor_and_mean() -> None:
    """Closed-loop waits are max(0.1, N(avg, sd)): never below 0.1, mean near avg."""
    trace = build_trace(TraceConfig(requests=4000, wait_avg=2.5, wait_stddev=1.0))
    waits = [e.wait_s for e in trace.entries]
    assert min(waits) >= MIN_WAIT_S
    assert 2.4 < sum(waits) / len(waits) < 2.6
    floored = build_trace(TraceConfig(requests=4000, wait_avg=0.75, wait_stddev=1.0))
    n_floor = sum(1 for e in floored.entries if e.wait_s == MIN_WAIT_S)
    # P(N(0.75, 1) < 0.1) is about 0.26.
    assert 0.2 < n_floor / 4000 < 0.32


def test_uniform_shape() -> None:
    """Uniform labels: each of 5 labels gets about a fifth of 10,000 requests."""
    trace = build_trace(TraceConfig(requests=10_000, labels=5, distribution="uniform"))
    counts = trace.label_counts()
    assert set(counts) == set(label_names(5))
    assert all(1850 < c < 2150 for c in counts.values())


def test_zipf_shape() -> None:
    """Zipf(1.1) labels: frequencies fall with rank as 1/k^1.1."""
    n = 50
    trace = build_trace(TraceConfig(requests=50_000, labels=n, distribution="zipf", zipf_s=1.1))
    counts = trace.label_counts()
    weights = label_weights(n, "zipf", 1.1)
    assert counts["label-0"] > counts["label-1"] > counts["label-4"] > counts["label-20"]
    for k in (0, 1, 4):
        observed = counts[f"label-{k}"] / 50_000
        assert abs(observed - weights[k]) < 0.1 * weights[k]
    # The first two ranks' ratio is 2^1.1 = 2.14.
    assert 1.9 < counts["label-0"] / counts["label-1"] < 2.4


def test_open_loop_poisson_rate() -> None:
    """Open-loop arrivals are increasing with mean gap 1/rate."""
    trace = build_trace(TraceConfig(requests=5000, mode="open", rate=50.0))
    ats = [e.at_s for e in trace.entries]
    assert ats[0] == 0.0
    assert all(b >= a for a, b in zip(ats, ats[1:], strict=False))
    assert 0.95 / 50 < ats[-1] / 4999 < 1.05 / 50


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests": 0},
        {"producers": 0},
        {"wait_stddev": -1.0},
        {"mode": "open", "rate": 0.0},
        {"mode": "sideways"},
        {"distribution": "pareto"},
        {"distribution": "zipf", "zipf_s": 0.0},
        {"distribution": "shifting", "zipf_s": -1.0},
        {"distribution": "shifting", "shift_every_s": 0.0},
    ],
)
def test_bad_config_rejected(kwargs: dict[str, object]) -> None:
    """Out-of-range trace parameters raise ValueError."""
    with pytest.raises(ValueError):
        TraceConfig(**kwargs)  # type: ignore[arg-type]


def test_weights_sum_to_one_and_bad_distribution() -> None:
    """Weights are probabilities; an unknown distribution raises."""
    for dist in ("uniform", "zipf", "shifting"):
        assert abs(sum(label_weights(10, dist)) - 1.0) < 1e-12  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown distribution"):
        label_weights(3, "pareto")  # type: ignore[arg-type]


@pytest.mark.parametrize("s", [0.8, 1.2])
def test_zipf_exponent(s: float) -> None:
    """The exponent is a parameter: rank 1 / rank 2 frequencies are near 2^s."""
    trace = build_trace(TraceConfig(requests=40_000, labels=50, distribution="zipf", zipf_s=s))
    counts = trace.label_counts()
    assert 0.9 * 2**s < counts["label-0"] / counts["label-1"] < 1.1 * 2**s
    assert label_weights(50, "shifting", s) == label_weights(50, "zipf", s)


def test_shift_permutation() -> None:
    """Phase 0 is label-0 first; later phases are seeded shuffles of the same labels."""
    assert shift_permutation(6, 0, seed=1) == label_names(6)
    one, two = shift_permutation(100, 1, seed=1), shift_permutation(100, 2, seed=1)
    assert sorted(one) == sorted(label_names(100))
    assert one != label_names(100) and two != label_names(100) and one != two
    assert shift_permutation(100, 1, seed=1) == one
    assert shift_permutation(100, 1, seed=2) != one


def _open_shifting(**kwargs: object) -> TraceConfig:
    base: dict[str, object] = {
        "requests": 12_000,
        "labels": 50,
        "mode": "open",
        "rate": 1000.0,
        "distribution": "shifting",
        "shift_every_s": 4.0,
        "seed": 5,
    }
    return TraceConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_shifting_open_loop_hot_label_moves_each_phase() -> None:
    """Every 4 s of arrivals the most requested label is rank 0 of that phase's permutation."""
    trace = build_trace(_open_shifting())
    zipf = build_trace(_open_shifting(distribution="zipf"))
    phases: dict[int, Counter[str]] = {}
    for entry in trace.entries:
        phases.setdefault(int(entry.at_s // 4.0), Counter())[entry.label] += 1
    assert len(phases) >= 3
    hot = [phases[p].most_common(1)[0][0] for p in sorted(phases) if sum(phases[p].values()) > 2000]
    assert hot == [shift_permutation(50, p, seed=5)[0] for p in range(len(hot))]
    assert len(set(hot)) == len(hot)
    # Before the first shift the labels are the zipf trace's; the timing is the same throughout.
    first = [e.label for e in trace.entries if e.at_s < 4.0]
    assert first == zipf.labels[: len(first)] and trace.labels != zipf.labels
    assert [e.at_s for e in trace.entries] == [e.at_s for e in zipf.entries]


def test_shifting_is_deterministic() -> None:
    """Same config, same shifting trace; another seed, another one."""
    assert fingerprint(build_trace(_open_shifting())) == fingerprint(build_trace(_open_shifting()))
    assert build_trace(_open_shifting()).labels != build_trace(_open_shifting(seed=6)).labels


def test_shifting_closed_loop_follows_producer_clocks() -> None:
    """Closed loop: a request's phase is its producer's sum of earlier think times."""
    config = TraceConfig(
        requests=600, producers=3, labels=20, distribution="shifting", shift_every_s=30.0, seed=2
    )
    trace = build_trace(config)
    zipf = build_trace(TraceConfig(**{**config.__dict__, "distribution": "zipf"}))
    clocks = [0.0] * 3
    for entry, plain in zip(trace.entries, zipf.entries, strict=True):
        phase = int(clocks[entry.producer] // 30.0)
        rank = label_names(20).index(plain.label)
        assert entry.label == shift_permutation(20, phase, seed=2)[rank]
        clocks[entry.producer] += entry.wait_s
    assert max(clocks) > 90.0  # the trace spans several phases
