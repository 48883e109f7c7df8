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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: A label whose rate fell below this (requests/s) counts as having no demand.
NO_DEMAND_RATE = 1e-3

#: A label silent for longer than GAP_FACTOR / rate is taken to have slowed down (see `rate`).
GAP_FACTOR = 2.0


@dataclass
class _Rate:
    value: float  # requests/s at `at`
    at: float


@dataclass
class DemandModel:
    """Decayed request rate per label (requests/s), and the copies each needs."""

    time_constant_s: float = 10.0
    target_utilisation: float = 0.7
    _rates: dict[str, _Rate] = field(default_factory=dict)

    def record(self, label: str, now: float) -> None:
        """One request for `label` arrived at `now`."""
        entry = self._rates.get(label)
        if entry is None:
            self._rates[label] = _Rate(1.0 / self.time_constant_s, now)
            return
        entry.value = entry.value * self._decay(now - entry.at) + 1.0 / self.time_constant_s
        entry.at = now

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
