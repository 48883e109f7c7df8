"""Least frequently used eviction, counting only the labels in the cache.

The count of a label starts at 1 when it is loaded and is forgotten when it is
evicted ("in-cache" LFU, the textbook LFU; Caffeine's and TinyLFU's papers call the
variant that remembers evicted labels "perfect LFU"). Ties between equal counts go
to recency: the least recently used of the least frequent labels is evicted, so
LFU on a sequence whose counts are all 1 is LRU.

It never ages its counts: labels that were hot once keep their high counts after
the popularity shifts, and the new hot labels fight over the remaining slots.
That is the weakness the shifting-popularity trace exposes.

O(1) per request: one insertion-ordered bucket per count (the order inside a
bucket is the time each label reached that count, which is its last use).
"""

from __future__ import annotations

from collections import OrderedDict

from benchmark.caches.base import check_size


class LfuCache:
    """In-cache LFU on `size` slots, ties broken by least recent use."""

    def __init__(self, size: int) -> None:
        check_size(size)
        self.size = size
        self._count: dict[str, int] = {}
        self._buckets: dict[int, OrderedDict[str, None]] = {}
        # The smallest count of a resident label; meaningful when the cache is full.
        self._min = 0

    def __contains__(self, label: object) -> bool:
        return label in self._count

    def __len__(self) -> int:
        return len(self._count)

    def count(self, label: str) -> int:
        """The count of a resident label, 0 for one not in the cache."""
        return self._count.get(label, 0)

    def access(self, label: str) -> bool:
        """Request `label`; True on a hit."""
        count = self._count.get(label)
        if count is not None:
            bucket = self._buckets[count]
            del bucket[label]
            if not bucket:
                del self._buckets[count]
                if self._min == count:
                    self._min = count + 1
            self._count[label] = count + 1
            self._buckets.setdefault(count + 1, OrderedDict())[label] = None
            return True
        if len(self._count) >= self.size:
            bucket = self._buckets[self._min]
            victim, _ = bucket.popitem(last=False)
            if not bucket:
                del self._buckets[self._min]
            del self._count[victim]
        self._count[label] = 1
        self._buckets.setdefault(1, OrderedDict())[label] = None
        self._min = 1
        return False
