"""Table tests of the reference caches on one pooled cache (benchmark/caches/)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from benchmark.caches import FrequencySketch, LfuCache, LruCache, WTinyLfuCache, miss_flags
from benchmark.caches.sketch import MAX_COUNT


def _misses(cache: LruCache | LfuCache | WTinyLfuCache, sequence: str) -> list[int]:
    return list(miss_flags(cache, list(sequence)))


@pytest.mark.parametrize(
    ("sequence", "size", "lru", "lfu"),
    [
        # LFU keeps the frequent `a` that LRU evicts for `c`.
        ("aaabca", 2, "100111", "100110"),
        # Equal counts: LFU evicts the least recently used (`a`), so `a` misses again.
        ("ababca", 2, "110011", "110011"),
        # LFU never forgets: the old hot a, b hold on, the new c, d evict each other.
        ("aaabbbcdcdcd", 2, "100100110000", "100100111111"),
        # All counts 1: LFU is LRU.
        ("abcabc", 2, "111111", "111111"),
    ],
)
def test_lru_and_lfu_tables(sequence: str, size: int, lru: str, lfu: str) -> None:
    """Hand-computed hit/miss sequences of LRU and in-cache LFU."""
    assert _misses(LruCache(size), sequence) == [int(c) for c in lru]
    assert _misses(LfuCache(size), sequence) == [int(c) for c in lfu]


def test_lfu_forgets_evicted_counts() -> None:
    """An evicted label's count is dropped: it comes back with count 1."""
    cache = LfuCache(1)
    for label in "aaab":
        cache.access(label)
    assert cache.count("a") == 0 and "a" not in cache
    cache.access("a")
    assert cache.count("a") == 1 and len(cache) == 1


def test_wtinylfu_rejects_one_hit_wonders() -> None:
    """x and y, seen once, are refused by the admission filter; a and b stay and hit."""
    sequence = "aabbccxyab"
    cache = WTinyLfuCache(3)
    assert _misses(cache, sequence) == [1, 0, 1, 0, 1, 0, 1, 1, 0, 0]
    assert cache.rejected == 2  # c (tie with a keeps a), then x
    # LRU on the same three slots loses a and b to x and y.
    assert _misses(LruCache(3), sequence) == [1, 0, 1, 0, 1, 0, 1, 1, 1, 1]


def test_wtinylfu_survives_a_scan() -> None:
    """A scan of 100 new labels leaves a hot set of 8 in a 10-slot cache; LRU loses it."""
    hot = [f"h{i}" for i in range(8)]
    sequence = hot * 5 + [f"s{i}" for i in range(100)] + hot
    tiny = miss_flags(WTinyLfuCache(10), sequence)
    lru = miss_flags(LruCache(10), sequence)
    assert sum(tiny[-8:]) == 0
    assert sum(lru[-8:]) == 8


@pytest.mark.parametrize(
    ("size", "window", "main", "protected"),
    [(1, 1, 0, 0), (3, 1, 2, 1), (100, 1, 99, 79), (400, 4, 396, 316)],
)
def test_wtinylfu_segment_sizes(size: int, window: int, main: int, protected: int) -> None:
    """1% window (at least 1), main the rest, protected 80% of main (one slot left)."""
    cache = WTinyLfuCache(size)
    assert (cache.window_size, cache.main_size, cache.protected_size) == (window, main, protected)


def test_wtinylfu_probation_hit_promotes() -> None:
    """A label enters the window, moves to probation, and a hit promotes it to protected."""
    cache = WTinyLfuCache(3)
    cache.access("a")
    assert cache.segment("a") == "window"
    cache.access("b")
    assert cache.segment("a") == "probation" and cache.segment("b") == "window"
    assert cache.access("a")
    assert cache.segment("a") == "protected" and cache.segment("z") is None


def test_wtinylfu_of_one_slot_is_lru() -> None:
    """With one slot there is no main cache: W-TinyLFU misses exactly where LRU does."""
    rng = random.Random(3)
    sequence = [rng.choice("abc") for _ in range(500)]
    assert miss_flags(WTinyLfuCache(1), sequence) == miss_flags(LruCache(1), sequence)


@pytest.mark.parametrize("cache_type", [LruCache, LfuCache, WTinyLfuCache])
def test_never_over_size_and_bad_size(cache_type: type[LruCache]) -> None:
    """A cache never holds more than its size; size 0 is refused."""
    rng = random.Random(5)
    cache = cache_type(7)
    for _ in range(2000):
        cache.access(f"l{int(rng.paretovariate(1.0)) % 40}")
        assert len(cache) <= 7
    with pytest.raises(ValueError, match="cache size"):
        cache_type(0)


def test_sketch_counts_saturate_at_15() -> None:
    """4-bit counters stop at 15."""
    sketch = FrequencySketch(100)
    for _ in range(40):
        sketch.increment("a")
    assert sketch.estimate("a") == MAX_COUNT
    assert sketch.estimate("never") == 0


def test_sketch_halves_after_sample_size() -> None:
    """After W = 10 x size increments every counter and the sample count halve."""
    sketch = FrequencySketch(1, sample_factor=10)
    assert sketch.sample_size == 10
    for _ in range(9):
        sketch.increment("a")
    assert (sketch.estimate("a"), sketch.resets) == (9, 0)
    sketch.increment("a")
    assert (sketch.estimate("a"), sketch.resets) == (5, 1)
    # The sample count is 5 now: five more increments reach W again.
    for _ in range(5):
        sketch.increment("a")
    assert (sketch.estimate("a"), sketch.resets) == (5, 2)


def test_sketch_never_underestimates() -> None:
    """Count-min: within one sample the estimate is at least the true count."""
    rng = random.Random(11)
    sketch = FrequencySketch(50, sample_factor=100)
    counts: dict[str, int] = {}
    for _ in range(4000):
        label = f"l{rng.randrange(300)}"
        counts[label] = counts.get(label, 0) + 1
        sketch.increment(label)
    assert sketch.resets == 0
    assert all(sketch.estimate(k) >= min(v, MAX_COUNT) for k, v in counts.items())


def test_doorkeeper_absorbs_first_request() -> None:
    """With a doorkeeper the first request sets only its bits; a reset clears them."""
    plain, door = FrequencySketch(10), FrequencySketch(10, doorkeeper=True)
    for sketch in (plain, door):
        sketch.increment("a")
        sketch.increment("a")
        assert sketch.estimate("a") == 2
        sketch.reset()
    # plain: counter 2 -> 1; doorkeeper: counter 1 -> 0 and the doorkeeper is cleared.
    assert (plain.estimate("a"), door.estimate("a")) == (1, 0)


_SKETCH_PROBE = """
from benchmark.caches import FrequencySketch
sketch = FrequencySketch(4, sample_factor=1000)
for i in range(500):
    sketch.increment(f"l{i % 37}")
print([sketch.estimate(f"l{i}") for i in range(60)])
"""


def test_sketch_is_deterministic_across_processes() -> None:
    """Hashes do not follow Python's per-process str hash: two hash seeds, same estimates."""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _SKETCH_PROBE],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] and outputs[0].startswith("[")
