"""The interface every reference cache offers, and the replay of a sequence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Cache(Protocol):
    """A cache of labels that loads a label on a miss (demand paging)."""

    def access(self, label: str) -> bool:
        """Request `label`: True on a hit; on a miss it is loaded (evicting if full)."""
        ...


def check_size(size: int) -> None:
    """Refuse a cache with no slot."""
    if size < 1:
        raise ValueError(f"cache size must be >= 1, got {size}")


def miss_flags(cache: Cache, labels: Iterable[str]) -> bytearray:
    """Replay `labels` through `cache`: one byte per request, 1 for a miss.

    A byte array rather than a count so that one replay answers every window
    (the whole run, its second half) with `flags.count(1, start)`.
    """
    access = cache.access
    return bytearray(0 if access(label) else 1 for label in labels)
