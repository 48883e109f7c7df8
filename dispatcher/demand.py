"""The demand model: how often each label is asked for, and how many copies it needs.

Pure data beside `dispatcher.estimates`: the core records each task's arrival, the routing
policy reads the rates. Each label keeps an exponentially decayed request rate with time
constant `tau` (default 10 s): an arrival adds 1/tau, and between arrivals the rate decays by
exp(-dt/tau), so a steady Poisson stream of λ requests/s reads λ on average and a label that
stops being asked for fades within a few tau (a popularity shift is forgotten in ~30 s, where
a frequency count that never forgets would hold the old hot set forever).

From the rate the model derives the copies a label needs: enough holders that each stays busy
no more than `target_utilisation` of the time, i.e. ceil(rate x run time / utilisation), and
at least one while it has any demand. At 1,200 tasks/s over 1,000 Zipf(1.1) labels with 10 ms
runs, the top label (~20% of traffic, 240/s) needs ceil(240 x 0.01 / 0.7) = 4 copies and
labels from about rank 30 down need one.

For eviction the model also keeps a **frequency** with a longer memory counted in arrivals,
not seconds (as TinyLFU's sample is): each label's count decays by exp(-1/`frequency_memory`)
per arrival of any label, so `frequency` reads the label's share of the last ~12,000 requests
times the current arrival rate. Tail labels near the cache boundary are asked for a few times
in 10 s, too few to rank them, and at low traffic a 10 s memory holds fewer requests still: at
400 tasks/s over 200 workers x 2 slots (1,000 Zipf(1.1) labels, 3 seeds) the arrival-counted
memory cut misses by 2.5% (8,479 -> 8,266) and by 0.1-0.5% at 800 and 1,200/s. The same silence
bound as `rate` lets a label that stopped being asked for go within seconds: the shifting trace
(hot set moved every 10 s) at 1,200/s went from 9,652 to 9,584 misses. Its cost: when the hot
set moves every 4,000 requests (10 s at 400/s), 12,000 arrivals remember three hot sets, and
that trace missed 5.6% more (3,871 -> 4,089, seed 1; LRU 3,678, W-TinyLFU 4,156).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: A label whose rate fell below this (requests/s) counts as having no demand.
NO_DEMAND_RATE = 1e-3

#: A label silent for longer than GAP_FACTOR / rate is taken to have slowed down (see `rate`).
GAP_FACTOR = 2.0

#: Arrivals (of any label) over which `frequency` remembers a label: 30 x the 400 slots of the
#: measured deployment. 8,000 and 20,000 both missed more there (see the module docstring).
FREQUENCY_MEMORY = 12_000


@dataclass
class _Rate:
    value: float  # requests/s at `at`
    at: float
    count: float  # arrivals of this label, decayed per arrival, as of arrival number `counted_at`
    counted_at: int


@dataclass
class DemandModel:
    """Decayed request rate per label (requests/s), and the copies each needs."""

    time_constant_s: float = 10.0
    target_utilisation: float = 0.7
    frequency_memory: int = FREQUENCY_MEMORY
    _rates: dict[str, _Rate] = field(default_factory=dict)
    #: Arrivals recorded so far; every label's decayed rates together (requests/s at
    #: `_total_at`); when the first arrival came.
    _arrivals: int = field(default=0, init=False, repr=False)
    _total: float = field(default=0.0, init=False, repr=False)
    _total_at: float = field(default=0.0, init=False, repr=False)
    _started_at: float | None = field(default=None, init=False, repr=False)

    def record(self, label: str, now: float) -> None:
        """One request for `label` arrived at `now`."""
        if self._started_at is None:
            self._started_at = self._total_at = now
        self._arrivals += 1
        step = 1.0 / self.time_constant_s
        self._total = self._total * self._decay(now - self._total_at) + step
        self._total_at = now
        entry = self._rates.get(label)
        if entry is None:
            self._rates[label] = _Rate(step, now, 1.0, self._arrivals)
            return
        entry.value = entry.value * self._decay(now - entry.at) + step
        entry.at = now
        entry.count = entry.count * self._forget(self._arrivals - entry.counted_at) + 1.0
        entry.counted_at = self._arrivals

    def rate(self, label: str, now: float) -> float:
        """Requests/s of `label` as of `now` (0 for a label never asked for).

        The decayed rate, but never more than `GAP_FACTOR` requests per the time since the
        last one: a label that was hot and stopped shows it by its silence long before its
        decayed rate has faded (a steady stream is silent that long only e^-2 = 14% of the
        time, and then only briefly), so a shifted hot set is let go within seconds, as LRU would.
        """
        entry = self._rates.get(label)
        if entry is None:
            return 0.0
        silence = now - entry.at
        decayed = entry.value * self._decay(silence)
        return min(decayed, GAP_FACTOR / silence) if silence > 0 else decayed

    def arrival_rate(self, now: float) -> float:
        """Requests/s of all labels together as of `now`.

        The decayed total, divided by the weight its window has had time to gather
        (1 - exp(-elapsed/tau)): in the first tau after start it reads the mean rate so far
        rather than a rate that is still climbing from zero.
        """
        if self._started_at is None:
            return 0.0
        total = self._total * self._decay(now - self._total_at)
        elapsed = now - self._started_at
        if elapsed <= 0.0:
            return total
        return total / -math.expm1(-elapsed / self.time_constant_s)

    def frequency(self, label: str, now: float) -> float:
        """`label`'s requests/s by its share of the last ~`frequency_memory` arrivals (the
        eviction value; see the module docstring), bounded by its silence as `rate` is.

        Until `frequency_memory` arrivals have been seen the shares add up to less than 1, so
        the value is conservative while the model knows little.
        """
        entry = self._rates.get(label)
        if entry is None:
            return 0.0
        count = entry.count * self._forget(self._arrivals - entry.counted_at)
        value = count / self.frequency_memory * self.arrival_rate(now)
        silence = now - entry.at
        return min(value, GAP_FACTOR / silence) if silence > 0 else value

    def copies_needed(self, label: str, now: float, run_ms: float) -> int:
        """Holders `label` needs to keep each under the target utilisation (0: no demand)."""
        return self.copies_for(self.rate(label, now), run_ms)

    def copies_for(self, rate: float, run_ms: float) -> int:
        """Holders a label asked for `rate` times a second needs (0: no demand)."""
        if rate < NO_DEMAND_RATE:
            return 0
        return max(1, math.ceil(rate * run_ms / 1000.0 / self.target_utilisation))

    def prune(self, now: float, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Forget labels with no demand left (except `keep`); returns how many went."""
        gone = [
            label
            for label, entry in self._rates.items()
            if label not in keep and entry.value * self._decay(now - entry.at) < NO_DEMAND_RATE
        ]
        for label in gone:
            del self._rates[label]
        return len(gone)

    def __len__(self) -> int:
        return len(self._rates)

    def _decay(self, dt: float) -> float:
        return math.exp(-max(0.0, dt) / self.time_constant_s)

    def _forget(self, arrivals: int) -> float:
        return math.exp(-arrivals / self.frequency_memory)
