"""Window TinyLFU (W-TinyLFU), the policy of Caffeine.

After Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
Policy" (ACM ToS 2017), section 4, with Caffeine's proportions:

* a small LRU **window** (1% of the slots, at least one) takes every new label, so
  a burst of a new label hits at once;
* the **main** cache (the rest) is a segmented LRU: labels enter its
  **probation** segment, a hit there promotes them to the **protected** segment
  (at most 80% of main), whose overflow goes back to probation's recent end;
* **admission**: when the window is full its least recent label (the candidate)
  may enter main only if main has room or the candidate's estimated frequency
  (`FrequencySketch`, which counts every request and halves itself after
  10 x size requests) is strictly greater than that of probation's least recent
  label (the victim); otherwise the candidate is dropped. A one-hit wonder thus
  never displaces a label with a history.

Deterministic: Caffeine's random admission of warm candidates (a defence against
hash flooding) is left out, and a tie keeps the victim.
"""

from __future__ import annotations

from collections import OrderedDict

from benchmark.caches.base import check_size
from benchmark.caches.sketch import FrequencySketch


class WTinyLfuCache:
    """W-TinyLFU on `size` slots: LRU window, TinyLFU admission, segmented-LRU main."""

    def __init__(
        self,
        size: int,
        *,
        window_fraction: float = 0.01,
        protected_fraction: float = 0.8,
        sample_factor: int = 10,
        doorkeeper: bool = False,
    ) -> None:
        check_size(size)
        if not 0.0 <= window_fraction <= 1.0 or not 0.0 <= protected_fraction <= 1.0:
            raise ValueError("window and protected fractions must be in [0, 1]")
        self.size = size
        self.window_size = min(size, max(1, round(size * window_fraction)))
        self.main_size = size - self.window_size
        # Protected keeps at least one main slot for probation: admission needs a victim.
        self.protected_size = min(
            int(self.main_size * protected_fraction), max(0, self.main_size - 1)
        )
        self.sketch = FrequencySketch(size, sample_factor=sample_factor, doorkeeper=doorkeeper)
        # Each segment in recency order: the first key is the least recently used.
        self._window: OrderedDict[str, None] = OrderedDict()
        self._probation: OrderedDict[str, None] = OrderedDict()
        self._protected: OrderedDict[str, None] = OrderedDict()
        #: Window victims refused by the admission filter (or with no main cache).
        self.rejected = 0

    def __contains__(self, label: object) -> bool:
        return label in self._window or label in self._probation or label in self._protected

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def segment(self, label: str) -> str | None:
        """Where `label` lives: "window", "probation", "protected", or None."""
        for name, segment in (
            ("window", self._window),
            ("probation", self._probation),
            ("protected", self._protected),
        ):
            if label in segment:
                return name
        return None

    def access(self, label: str) -> bool:
        """Request `label`; True on a hit."""
        self.sketch.increment(label)
        if label in self._window:
            self._window.move_to_end(label)
            return True
        if label in self._protected:
            self._protected.move_to_end(label)
            return True
        if label in self._probation:
            del self._probation[label]
            self._protected[label] = None
            if len(self._protected) > self.protected_size:
                demoted, _ = self._protected.popitem(last=False)
                self._probation[demoted] = None
            return True
        self._window[label] = None
        if len(self._window) > self.window_size:
            candidate, _ = self._window.popitem(last=False)
            self._admit(candidate)
        return False

    def _admit(self, candidate: str) -> None:
        if self.main_size == 0:
            self.rejected += 1
            return
        if len(self._probation) + len(self._protected) < self.main_size:
            self._probation[candidate] = None
            return
        # Main is full and protected holds at most main_size - 1 labels: probation is not empty.
        victim = next(iter(self._probation))
        if self.sketch.estimate(candidate) > self.sketch.estimate(victim):
            del self._probation[victim]
            self._probation[candidate] = None
        else:
            self.rejected += 1
