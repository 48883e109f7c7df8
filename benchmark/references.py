"""Reference miss counts on one pooled cache: what a routed cluster is measured against.

A cluster of `workers × capacity` slots is compared with ONE cache of that many
slots seeing the same label sequence, under several policies:

* `compulsory`: first-ever loads, which nothing avoids;
* `belady`: the clairvoyant optimum, a lower bound (`benchmark.bounds`);
* `lru`: least recently used;
* `lfu`: least frequently used, counts of resident labels only, no ageing;
* `wtinylfu`: Window TinyLFU, the state of the art for skewed traffic.

`reference_report` replays each policy once and counts both the whole run and
its second half (the steady state: the cache evolves over the whole trace, only
requests at index >= n // 2 count), since first-ever loads dominate short runs.
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmark.bounds import (
    MissCount,
    belady_flags,
    belady_misses,
    compulsory_flags,
    compulsory_misses,
    count_misses,
    lru_misses,
)
from benchmark.caches import LfuCache, LruCache, WTinyLfuCache, miss_flags
from benchmark.caches.base import check_size

#: The policies of a `ReferenceMisses`, in table order (best to worst is not implied).
POLICIES = ("compulsory", "belady", "lru", "lfu", "wtinylfu")

__all__ = [
    "POLICIES",
    "MissCount",
    "ReferenceMisses",
    "ReferenceReport",
    "belady_misses",
    "compulsory_misses",
    "lfu_misses",
    "lru_misses",
    "reference_misses",
    "reference_report",
    "steady_state_start",
    "wtinylfu_misses",
]


def lfu_misses(labels: Sequence[str], cache_size: int, *, start: int = 0) -> MissCount:
    """Misses of in-cache LFU (ties to the least recently used) on one cache."""
    flags = miss_flags(LfuCache(cache_size), labels)
    return count_misses("lfu", labels, cache_size, flags, start)


def wtinylfu_misses(
    labels: Sequence[str], cache_size: int, *, start: int = 0, doorkeeper: bool = False
) -> MissCount:
    """Misses of W-TinyLFU (1% window, 20/80 segmented main, halving sketch) on one cache."""
    flags = miss_flags(WTinyLfuCache(cache_size, doorkeeper=doorkeeper), labels)
    return count_misses("wtinylfu", labels, cache_size, flags, start)


def steady_state_start(requests: int) -> int:
    """The first request of the steady-state window: the second half of the run."""
    return requests // 2


@dataclass(frozen=True)
class ReferenceMisses:
    """Misses of every reference policy on one cache, counted from request `start` on."""

    cache_size: int
    requests: int
    start: int
    compulsory: int
    belady: int
    lru: int
    lfu: int
    wtinylfu: int

    def misses(self, policy: str) -> int:
        """The misses of one of `POLICIES`."""
        if policy not in POLICIES:
            raise ValueError(f"unknown reference policy {policy!r} (one of {', '.join(POLICIES)})")
        value: int = getattr(self, policy)
        return value

    def miss_rate(self, policy: str) -> float:
        """Misses of `policy` per counted request (0 for an empty window)."""
        return self.misses(policy) / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return {
            "cache_size": self.cache_size,
            "requests": self.requests,
            "start": self.start,
            **{policy: self.misses(policy) for policy in POLICIES},
        }


@dataclass(frozen=True)
class ReferenceReport:
    """The references over the whole run and over its second half (steady state)."""

    whole: ReferenceMisses
    second_half: ReferenceMisses

    def to_json(self) -> dict[str, dict[str, int]]:
        """Both windows as a JSON object."""
        return {"whole": self.whole.to_json(), "second_half": self.second_half.to_json()}

    def render(self) -> str:
        """A text table: one row per policy, misses of the whole run and second half."""
        w, h = self.whole, self.second_half
        lines = [
            f"References on one cache of {w.cache_size} slots "
            f"({w.requests} requests; second half from request {h.start})",
            f"{'policy':<12}{'whole':>10}{'rate':>8}{'2nd half':>10}{'rate':>8}",
        ]
        for policy in POLICIES:
            lines.append(
                f"{policy:<12}{w.misses(policy):>10}{w.miss_rate(policy):>8.3f}"
                f"{h.misses(policy):>10}{h.miss_rate(policy):>8.3f}"
            )
        return "\n".join(lines)


Replay = Callable[[Sequence[str], int], bytearray]


def _replays(doorkeeper: bool) -> dict[str, Replay]:
    return {
        "belady": belady_flags,
        "lru": lambda labels, size: miss_flags(LruCache(size), labels),
        "lfu": lambda labels, size: miss_flags(LfuCache(size), labels),
        "wtinylfu": lambda labels, size: miss_flags(
            WTinyLfuCache(size, doorkeeper=doorkeeper), labels
        ),
    }


def _window(flags: dict[str, bytearray], cache_size: int, n: int, start: int) -> ReferenceMisses:
    return ReferenceMisses(
        cache_size=cache_size,
        requests=n - start,
        start=start,
        compulsory=flags["compulsory"].count(1, start),
        belady=flags["belady"].count(1, start),
        lru=flags["lru"].count(1, start),
        lfu=flags["lfu"].count(1, start),
        wtinylfu=flags["wtinylfu"].count(1, start),
    )


def _all_flags(labels: Sequence[str], cache_size: int, doorkeeper: bool) -> dict[str, bytearray]:
    check_size(cache_size)
    flags = {"compulsory": compulsory_flags(labels)}
    for policy, replay in _replays(doorkeeper).items():
        flags[policy] = replay(labels, cache_size)
    return flags


def reference_misses(
    labels: Sequence[str], cache_size: int, *, start: int = 0, doorkeeper: bool = False
) -> ReferenceMisses:
    """Every reference policy's misses on one cache of `cache_size`, from request `start` on."""
    n = len(labels)
    if not 0 <= start <= n:
        raise ValueError(f"start must be in 0..{n}, got {start}")
    return _window(_all_flags(labels, cache_size, doorkeeper), cache_size, n, start)


def reference_report(
    labels: Sequence[str], cache_size: int, *, doorkeeper: bool = False
) -> ReferenceReport:
    """The references over the whole run and its second half, each policy replayed once."""
    n = len(labels)
    flags = _all_flags(labels, cache_size, doorkeeper)
    return ReferenceReport(
        whole=_window(flags, cache_size, n, 0),
        second_half=_window(flags, cache_size, n, steady_state_start(n)),
    )
