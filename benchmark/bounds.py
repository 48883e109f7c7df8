"""Lower bounds on label misses: Belady's optimal eviction on one big cache.

The workers of a cluster hold at most `workers × capacity` labels between them.
No dispatcher, online or not, can miss fewer times on a label sequence than
Belady's clairvoyant policy (evict the label whose next use is furthest away) on
ONE cache of that size, so its miss count is a lower bound for the benchmark.
Compulsory misses (the first request of each label) are part of it and counted
separately. LRU on the same cache is kept here as the simplest reference; the
others (LFU, W-TinyLFU) are in `benchmark.references`. Pure functions, no I/O.

Every counter takes `start`: the cache evolves over the whole sequence but only
the misses of requests at index >= `start` are counted (the steady state of a
run, without the warm-up). Over such a window compulsory misses stay a lower
bound; Belady's count is the clairvoyant policy's misses there (it minimises the
misses of the whole run, not of the window alone).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from benchmark.caches import LruCache, miss_flags
from benchmark.caches.base import check_size

_NEVER = float("inf")


@dataclass(frozen=True)
class MissCount:
    """Misses of one eviction policy on a label sequence (requests from `start` on)."""

    policy: str
    cache_size: int
    requests: int
    misses: int
    compulsory: int
    start: int = 0

    @property
    def miss_rate(self) -> float:
        """Misses per counted request (0 for an empty window)."""
        return self.misses / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, object]:
        """The counts as a JSON object."""
        return {
            "policy": self.policy,
            "cache_size": self.cache_size,
            "requests": self.requests,
            "misses": self.misses,
            "compulsory": self.compulsory,
            "start": self.start,
        }


def _check_start(start: int, n: int) -> None:
    if not 0 <= start <= n:
        raise ValueError(f"start must be in 0..{n}, got {start}")


def compulsory_flags(labels: Sequence[str]) -> bytearray:
    """1 for the first request of each label (a miss for every cache), else 0."""
    seen: set[str] = set()
    flags = bytearray(len(labels))
    for i, label in enumerate(labels):
        if label not in seen:
            seen.add(label)
            flags[i] = 1
    return flags


def compulsory_misses(labels: Sequence[str], *, start: int = 0) -> int:
    """How many labels are requested for the first time at index >= `start`."""
    _check_start(start, len(labels))
    return compulsory_flags(labels).count(1, start)


def count_misses(
    policy: str, labels: Sequence[str], cache_size: int, flags: bytearray, start: int = 0
) -> MissCount:
    """The `MissCount` of a replay's miss flags (1 byte per request), from `start` on."""
    n = len(labels)
    _check_start(start, n)
    return MissCount(
        policy=policy,
        cache_size=cache_size,
        requests=n - start,
        misses=flags.count(1, start),
        compulsory=compulsory_misses(labels, start=start),
        start=start,
    )


def belady_flags(labels: Sequence[str], cache_size: int) -> bytearray:
    """Belady's (furthest next use) miss flags, 1 byte per request; O(n log n)."""
    check_size(cache_size)
    n = len(labels)
    # next_use[i]: the index of the next request for labels[i] after i.
    next_use: list[float] = [_NEVER] * n
    last_seen: dict[str, int] = {}
    for i in range(n - 1, -1, -1):
        next_use[i] = last_seen.get(labels[i], _NEVER)
        last_seen[labels[i]] = i
    cached: dict[str, float] = {}  # label -> index of its next use
    heap: list[tuple[float, str]] = []  # (-next use, label); stale entries skipped lazily
    flags = bytearray(n)
    for i, label in enumerate(labels):
        if label not in cached:
            flags[i] = 1
            if len(cached) >= cache_size:
                while True:
                    neg_next, victim = heapq.heappop(heap)
                    if cached.get(victim) == -neg_next:
                        del cached[victim]
                        break
        cached[label] = next_use[i]
        heapq.heappush(heap, (-next_use[i], label))
    return flags


def belady_misses(labels: Sequence[str], cache_size: int, *, start: int = 0) -> MissCount:
    """Misses of Belady's optimal (furthest next use) eviction; O(n log n)."""
    return count_misses("belady", labels, cache_size, belady_flags(labels, cache_size), start)


def lru_misses(labels: Sequence[str], cache_size: int, *, start: int = 0) -> MissCount:
    """Misses of LRU on one cache of `cache_size` (a reference, not a bound)."""
    flags = miss_flags(LruCache(cache_size), labels)
    return count_misses("lru", labels, cache_size, flags, start)
