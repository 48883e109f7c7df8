"""Table tests of Belady's bound, LRU and compulsory misses on one cache (benchmark/bounds.py)."""

from __future__ import annotations

import pytest

from benchmark.bounds import belady_misses, compulsory_misses, lru_misses
from benchmark.trace import TraceConfig, build_trace

# The textbook reference string (Silberschatz): OPT 9 faults, LRU 12, with 3 frames.
TEXTBOOK = "7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1".split()


@pytest.mark.parametrize(
    ("sequence", "size", "belady", "lru", "compulsory"),
    [
        ([], 2, 0, 0, 0),
        (list("aab"), 1, 2, 2, 2),
        (list("abcabc"), 2, 4, 6, 3),
        (list("abcabc"), 3, 3, 3, 3),
        (list("abab"), 1, 4, 4, 2),
        (TEXTBOOK, 3, 9, 12, 6),
        (TEXTBOOK, 4, 8, 8, 6),
        (list("abcdabeabcde"), 3, 7, 10, 5),
        (list("abcdabeabcde"), 4, 6, 8, 5),
    ],
)
def test_known_miss_counts(
    sequence: list[str], size: int, belady: int, lru: int, compulsory: int
) -> None:
    """Known sequences give their known optimal and LRU miss counts."""
    opt = belady_misses(sequence, size)
    assert (opt.misses, opt.compulsory) == (belady, compulsory)
    assert lru_misses(sequence, size).misses == lru


def test_bound_never_above_lru_and_at_least_compulsory() -> None:
    """On random traces Belady <= LRU and Belady >= compulsory misses."""
    for seed in range(5):
        labels = build_trace(TraceConfig(requests=2000, labels=9, seed=seed)).labels
        for size in (1, 3, 4, 8):
            opt, lru = belady_misses(labels, size), lru_misses(labels, size)
            assert opt.compulsory <= opt.misses <= lru.misses


def test_cache_as_large_as_label_set_only_compulsory() -> None:
    """With room for every label, only the compulsory misses remain."""
    labels = build_trace(TraceConfig(requests=1000, labels=4)).labels
    assert belady_misses(labels, 4).misses == 4


def test_bad_cache_size() -> None:
    """A cache of size 0 is refused."""
    with pytest.raises(ValueError, match="cache size"):
        belady_misses(["a"], 0)


@pytest.mark.parametrize(
    ("sequence", "start", "belady", "lru", "compulsory"),
    [
        # TEXTBOOK with 3 frames; the misses at index >= start.
        (TEXTBOOK, 0, 9, 12, 6),
        (TEXTBOOK, 10, 3, 4, 0),
        (TEXTBOOK, 17, 1, 1, 0),
        (TEXTBOOK, 20, 0, 0, 0),
        (list("abcd"), 2, 2, 2, 2),
    ],
)
def test_window_from_start(
    sequence: list[str], start: int, belady: int, lru: int, compulsory: int
) -> None:
    """`start` counts only the later requests while the cache evolves over all of them."""
    opt, recent = belady_misses(sequence, 3, start=start), lru_misses(sequence, 3, start=start)
    assert (opt.misses, recent.misses, opt.compulsory) == (belady, lru, compulsory)
    assert compulsory_misses(sequence, start=start) == compulsory
    assert opt.requests == len(sequence) - start and opt.start == start
    assert opt.to_json()["start"] == start


def test_start_outside_the_sequence() -> None:
    """A window starting past the end (or before 0) is refused."""
    for start in (-1, 4):
        with pytest.raises(ValueError, match="start"):
            lru_misses(list("abc"), 2, start=start)
