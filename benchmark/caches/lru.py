"""Least recently used eviction."""

from __future__ import annotations

from collections import OrderedDict

from benchmark.caches.base import check_size


class LruCache:
    """LRU on `size` slots: a miss evicts the label unused for the longest time."""

    def __init__(self, size: int) -> None:
        check_size(size)
        self.size = size
        # Order is recency: the first key is the least recently used.
        self._order: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, label: object) -> bool:
        return label in self._order

    def __len__(self) -> int:
        return len(self._order)

    def access(self, label: str) -> bool:
        """Request `label`; True on a hit."""
        order = self._order
        if label in order:
            order.move_to_end(label)
            return True
        if len(order) >= self.size:
            order.popitem(last=False)
        order[label] = None
        return False
