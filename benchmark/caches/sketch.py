"""TinyLFU's approximate frequency of labels: a count-min sketch that ages.

As in Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
Policy" (ACM ToS 2017): `depth` rows of 4-bit counters (saturating at 15); a
request increments the label's counter in every row and the estimate is the
smallest of them (count-min: never below the true count between two resets).
After every `sample_size` recorded requests (W, 10 x the cache size by default)
each counter, and the sample count, is halved: the "reset" that lets old
popularity fade, so the sketch follows a hot set that moves.

The optional doorkeeper is a Bloom filter in front of the counters: a label's
first request in a sample only sets its doorkeeper bits, later ones reach the
counters, and the estimate adds 1 for a label the doorkeeper holds. One-hit
wonders then cost no counter. The doorkeeper is cleared at every reset.

Hashes come from BLAKE2b of the label (Python's `hash` of a str changes per
process), computed once per label, so the sketch is deterministic.
"""

from __future__ import annotations

import hashlib

from benchmark.caches.base import check_size

#: The largest value of a 4-bit counter.
MAX_COUNT = 15
#: `bytes.translate` table halving every counter byte at once.
_HALVE = bytes(b >> 1 for b in range(256))


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class FrequencySketch:
    """Count-min sketch of 4-bit counters with periodic halving (and a doorkeeper)."""

    def __init__(
        self,
        cache_size: int,
        *,
        sample_factor: int = 10,
        depth: int = 4,
        doorkeeper: bool = False,
    ) -> None:
        check_size(cache_size)
        if sample_factor < 1:
            raise ValueError(f"sample factor must be >= 1, got {sample_factor}")
        if not 1 <= depth <= 8:
            raise ValueError(f"depth must be in 1..8, got {depth}")
        # 4 counters per cache slot in each row, as many as Caffeine's sketch holds.
        width = _power_of_two_at_least(max(16, 4 * cache_size))
        self._mask = width - 1
        self._rows = [bytearray(width) for _ in range(depth)]
        self.sample_size = sample_factor * cache_size
        self._samples = 0
        self.resets = 0
        self._doorkeeper: bytearray | None = None
        self._door_mask = 0
        if doorkeeper:
            # One byte per bit; 8 bits per sample keeps false positives near 2% (3 hashes).
            bits = _power_of_two_at_least(max(64, 8 * self.sample_size))
            self._doorkeeper = bytearray(bits)
            self._door_mask = bits - 1
        self._slots: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def _slots_of(self, label: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        slots = self._slots.get(label)
        if slots is None:
            digest = hashlib.blake2b(label.encode(), digest_size=44).digest()
            words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 44, 4)]
            depth = len(self._rows)
            rows = tuple(w & self._mask for w in words[:depth])
            door = tuple(w & self._door_mask for w in words[8:11])
            slots = (rows, door)
            self._slots[label] = slots
        return slots

    def estimate(self, label: str) -> int:
        """The estimated count of `label` in the current sample (0 .. 15, 16 with a doorkeeper)."""
        rows, door = self._slots_of(label)
        count = min(row[i] for row, i in zip(self._rows, rows, strict=True))
        keeper = self._doorkeeper
        if keeper is not None and all(keeper[i] for i in door):
            count += 1
        return count

    def increment(self, label: str) -> None:
        """Record one request for `label`; halve everything when the sample is full."""
        rows, door = self._slots_of(label)
        keeper = self._doorkeeper
        if keeper is not None and not all(keeper[i] for i in door):
            for i in door:
                keeper[i] = 1
        else:
            for row, i in zip(self._rows, rows, strict=True):
                if row[i] < MAX_COUNT:
                    row[i] += 1
        self._samples += 1
        if self._samples >= self.sample_size:
            self.reset()

    def reset(self) -> None:
        """Age the sketch: halve every counter and the sample count, clear the doorkeeper."""
        self._rows = [row.translate(_HALVE) for row in self._rows]
        self._samples //= 2
        if self._doorkeeper is not None:
            self._doorkeeper = bytearray(len(self._doorkeeper))
        self.resets += 1
