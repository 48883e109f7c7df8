"""Tests of the reference miss counts on one pooled cache (benchmark/references.py)."""

from __future__ import annotations

import pytest

from benchmark.bounds import belady_misses, compulsory_misses, lru_misses
from benchmark.references import (
    POLICIES,
    ReferenceMisses,
    lfu_misses,
    reference_misses,
    reference_report,
    steady_state_start,
    wtinylfu_misses,
)
from benchmark.trace import TraceConfig, build_trace


def _labels(**kwargs: object) -> list[str]:
    return build_trace(TraceConfig(**kwargs)).labels  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sequence", "size", "expected"),
    [
        # compulsory, belady, lru, lfu, wtinylfu
        ("aabbccxyab", 3, (5, 5, 7, 6, 5)),
        ("aaabca", 2, (3, 3, 4, 3, 3)),
        # W-TinyLFU's window is 1 slot: c and d never out-count a before a reset.
        ("aaabbbcdcdcd", 2, (4, 4, 4, 8, 8)),
        ("abcabc", 3, (3, 3, 3, 3, 3)),
        ("", 2, (0, 0, 0, 0, 0)),
    ],
)
def test_reference_table(sequence: str, size: int, expected: tuple[int, ...]) -> None:
    """Hand-computed whole-run misses of every reference on tiny sequences."""
    refs = reference_misses(list(sequence), size)
    assert tuple(refs.misses(p) for p in POLICIES) == expected
    assert (refs.requests, refs.start, refs.cache_size) == (len(sequence), 0, size)


def test_second_half_counts_only_late_requests() -> None:
    """The cache state carries over: a and b loaded early hit in the second half."""
    sequence = list("abababab")
    report = reference_report(sequence, 2)
    assert report.second_half.start == 4 and report.second_half.requests == 4
    assert all(report.second_half.misses(p) == 0 for p in POLICIES)
    assert all(report.whole.misses(p) == 2 for p in POLICIES)


def test_each_function_matches_the_report() -> None:
    """The one-policy functions and the combined report agree, whole and second half."""
    labels = _labels(requests=3000, labels=60, distribution="zipf", seed=4)
    report = reference_report(labels, 20)
    half = steady_state_start(len(labels))
    singles = {
        "belady": belady_misses,
        "lru": lru_misses,
        "lfu": lfu_misses,
        "wtinylfu": wtinylfu_misses,
    }
    for policy, counter in singles.items():
        assert counter(labels, 20).misses == report.whole.misses(policy)
        windowed = counter(labels, 20, start=half)
        assert (windowed.misses, windowed.requests) == (report.second_half.misses(policy), 1500)
        assert windowed.compulsory == report.second_half.compulsory
    assert compulsory_misses(labels, start=half) == report.second_half.compulsory


@pytest.mark.parametrize("distribution", ["uniform", "zipf", "shifting"])
def test_orderings_on_random_traces(distribution: str) -> None:
    """compulsory <= Belady <= every policy; each second half <= its whole run."""
    for seed in range(3):
        labels = _labels(
            requests=2000, labels=40, distribution=distribution, seed=seed, shift_every_s=20.0
        )
        for size in (1, 5, 12, 40):
            report = reference_report(labels, size)
            whole, half = report.whole, report.second_half
            assert whole.compulsory <= whole.belady
            assert all(whole.belady <= whole.misses(p) for p in ("lru", "lfu", "wtinylfu"))
            assert all(half.compulsory <= half.misses(p) for p in POLICIES)
            assert all(half.misses(p) <= whole.misses(p) for p in POLICIES)
            if size == 40:  # room for every label: only first-ever loads miss
                assert all(whole.misses(p) == whole.compulsory for p in POLICIES)


def test_wtinylfu_beats_lru_on_zipf() -> None:
    """Zipf 1.1, 1,000 labels, 400 slots, 20k requests: W-TinyLFU < LRU, Belady below both."""
    labels = _labels(requests=20_000, labels=1000, distribution="zipf", zipf_s=1.1)
    for refs in (reference_misses(labels, 400), reference_misses(labels, 400, start=10_000)):
        assert refs.belady < refs.wtinylfu < refs.lru
        assert refs.lfu < refs.lru  # static popularity: frequency wins over recency


def test_lfu_worst_on_shifting_popularity() -> None:
    """Hot set moving every 5 s: LFU, which never ages its counts, misses the most."""
    labels = _labels(
        requests=20_000,
        labels=1000,
        distribution="shifting",
        shift_every_s=5.0,
        mode="open",
        rate=1200.0,
    )
    report = reference_report(labels, 400)
    for refs in (report.whole, report.second_half):
        assert refs.lfu > refs.lru and refs.lfu > refs.wtinylfu
        # And by a wide margin: most of the cache is held by labels no longer hot.
        assert refs.lfu > 1.5 * refs.lru


def test_doorkeeper_variant_runs_and_stays_above_belady() -> None:
    """The doorkeeper changes W-TinyLFU's counts but not the bound's ordering."""
    labels = _labels(requests=5000, labels=300, distribution="zipf")
    with_door = wtinylfu_misses(labels, 100, doorkeeper=True)
    report = reference_report(labels, 100, doorkeeper=True)
    assert report.whole.wtinylfu == with_door.misses
    assert belady_misses(labels, 100).misses <= with_door.misses


def test_json_and_render() -> None:
    """to_json has every policy; the text table has a row per policy."""
    report = reference_report(list("abcabcabca"), 2)
    data = report.to_json()
    assert set(data) == {"whole", "second_half"}
    assert set(data["whole"]) == {"cache_size", "requests", "start", *POLICIES}
    assert data["second_half"]["start"] == 5
    text = report.render()
    for policy in POLICIES:
        assert policy in text
    assert report.whole.miss_rate("lru") == report.whole.lru / 10


def test_bad_arguments() -> None:
    """Unknown policy names, windows outside the trace and empty caches raise."""
    refs = ReferenceMisses(4, 10, 0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="unknown reference policy"):
        refs.misses("fifo")
    with pytest.raises(ValueError, match="start"):
        reference_misses(["a"], 1, start=2)
    with pytest.raises(ValueError, match="cache size"):
        reference_report(["a"], 0)
    assert ReferenceMisses(4, 0, 0, 0, 0, 0, 0, 0).miss_rate("lru") == 0.0
