"""Lower bound on label misses: Belady's optimal eviction on one big cache.

The workers of a cluster hold at most `workers × capacity` labels between them.
No dispatcher, online or not, can miss fewer times on a label sequence than
Belady's clairvoyant policy (evict the label whose next use is furthest away) on
ONE cache of that size, so its miss count is a lower bound for the benchmark.
Compulsory misses (the first request of each label) are part of it and counted
separately. Pure functions, no I/O.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

_NEVER = float("inf")


@dataclass(frozen=True)
class MissCount:
    """Misses of one eviction policy on a label sequence."""

    policy: str
    cache_size: int
    requests: int
    misses: int
    compulsory: int

    @property
    def miss_rate(self) -> float:
        """Misses per request (0 for an empty sequence)."""
        return self.misses / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, object]:
        """The counts as a JSON object."""
        return {
            "policy": self.policy,
            "cache_size": self.cache_size,
            "requests": self.requests,
            "misses": self.misses,
            "compulsory": self.compulsory,
        }


def _check(cache_size: int) -> None:
    if cache_size < 1:
        raise ValueError(f"cache size must be >= 1, got {cache_size}")


def belady_misses(labels: Sequence[str], cache_size: int) -> MissCount:
    """Misses of Belady's optimal (furthest next use) eviction; O(n log n)."""
    _check(cache_size)
    n = len(labels)
    # next_use[i]: the index of the next request for labels[i] after i.
    next_use: list[float] = [_NEVER] * n
    last_seen: dict[str, int] = {}
    for i in range(n - 1, -1, -1):
        next_use[i] = last_seen.get(labels[i], _NEVER)
        last_seen[labels[i]] = i
    cached: dict[str, float] = {}  # label -> index of its next use
    heap: list[tuple[float, str]] = []  # (-next use, label); stale entries skipped lazily
    seen: set[str] = set()
    misses = compulsory = 0
    for i, label in enumerate(labels):
        if label not in cached:
            misses += 1
            if label not in seen:
                compulsory += 1
                seen.add(label)
            if len(cached) >= cache_size:
                while True:
                    neg_next, victim = heapq.heappop(heap)
                    if cached.get(victim) == -neg_next:
                        del cached[victim]
                        break
        cached[label] = next_use[i]
        heapq.heappush(heap, (-next_use[i], label))
    return MissCount("belady", cache_size, n, misses, compulsory)


def lru_misses(labels: Sequence[str], cache_size: int) -> MissCount:
    """Misses of LRU on one cache of `cache_size` (a reference, not a bound)."""
    _check(cache_size)
    cache: OrderedDict[str, None] = OrderedDict()
    seen: set[str] = set()
    misses = compulsory = 0
    for label in labels:
        if label in cache:
            cache.move_to_end(label)
            continue
        misses += 1
        if label not in seen:
            compulsory += 1
            seen.add(label)
        if len(cache) >= cache_size:
            cache.popitem(last=False)
        cache[label] = None
    return MissCount("lru", cache_size, len(labels), misses, compulsory)
