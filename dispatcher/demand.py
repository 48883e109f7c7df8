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

For eviction the model also keeps a **frequency** with a memory counted in arrivals, not
seconds (as TinyLFU's sample is): tail labels near the cache boundary are asked for a few times
in 10 s, too few to rank them. How long that memory should be depends on the traffic, so the
model keeps several, a mixture of experts: each label has one count per memory in
`frequency_memories` (2,000 and 24,000 arrivals; a count decays by exp(-1/memory) per arrival
of any label), and one more expert counts its arrivals since the last change of the mix that
`dispatcher.shift_detector` declared (a CUSUM test; on steady traffic it never fires, so these
counts are all-time counts). Each expert is scored by how well it predicted the labels that did
arrive (a decayed log-likelihood over the last ~`SCORE_MEMORY` arrivals of labels seen before;
first-ever arrivals say nothing about ranking), and `frequency` weighs them by the softmax of
their scores. On a steady Zipf stream the long memory and the all-time counts share the weight;
when the hot set jumps, the detector fires within ~80 arrivals, the counts since the jump hold
none of the old hot set and take the weight within a few hundred arrivals.

Measured (`python -m benchmark simulate`, 200 workers x 2, 1,000 labels, 24,000 tasks, seeds
1-10 summed, the dispatcher's defaults; README "Routing at scale"). The shifting trace (a new
hot set every 10 s) at 400 tasks/s: 35,397 misses with the counts since the change, 36,133
with the memories alone (then 500, 2,000 and 24,000 arrivals), one pooled LRU cache 35,923;
at 1,200/s 28,867 and 29,676 (LRU 32,855). Zipf(1.1) at 400 / 800 / 1,200 tasks/s: 26,905 /
26,369 / 26,092, and 26,824 / 26,431 / 26,221 before (W-TinyLFU on one pooled cache: 27,723).
A 500-arrival memory, which followed a jump before the detector did, ranked the new hot set
more noisily than the counts since it (seeds 1-5 at 400/s: 17,959 misses with it, 17,630
without) and is gone; with it went the prior that kept it out of uniform traffic, which the
2,000-arrival memory does not need (reference scenario, seeds 1-10: 4,908 misses, 4,970 with
that prior on the 2,000-arrival memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dispatcher.shift_detector import ShiftDetector

#: A label whose rate fell below this (requests/s) counts as having no demand.
NO_DEMAND_RATE = 1e-3

#: A label whose counts in every frequency memory fell below this is forgotten (`prune`): one
#: arrival decays this far after 3 memories' length of arrivals.
FORGOTTEN_COUNT = math.exp(-3.0)

#: A label silent for longer than GAP_FACTOR / rate is taken to have slowed down (see `rate`).
GAP_FACTOR = 2.0

#: The memories (arrivals of any label) of the frequency's decaying experts: one that follows a
#: mix that drifts rather than jumps, and a long one that ranks a steady Zipf tail (5 and 60 x
#: the 400 slots of the measured deployment; the counts since the last detected change are
#: the third expert; see the module docstring).
FREQUENCY_MEMORIES = (2_000, 24_000)

#: Arrivals over which the experts' predictions are scored (their scores decay by
#: exp(-1/SCORE_MEMORY) per scored arrival): short, so that a shift shows within ~1,000 requests.
SCORE_MEMORY = 1_000

#: Pseudo-count of every known label when an expert's prediction is scored, so that a label an
#: expert has forgotten costs it a large but finite penalty.
SCORE_PRIOR = 0.01


@dataclass
class _Rate:
    value: float  # requests/s at `at`
    at: float
    #: Arrivals of this label per frequency memory, each decayed per arrival of any label, as of
    #: arrival number `counted_at`.
    counts: list[float]
    counted_at: int
    #: Arrivals of this label since the last detected change of the mix (`ShiftDetector`),
    #: valid while `epoch` is the model's.
    settled: int = 0
    epoch: int = 0


@dataclass
class DemandModel:
    """Decayed request rate per label (requests/s), and the copies each needs."""

    time_constant_s: float = 10.0
    target_utilisation: float = 0.7
    frequency_memories: tuple[int, ...] = FREQUENCY_MEMORIES
    #: Whether the counts since the last detected change are one of the experts (the
    #: memories alone when False, as tests of the memories need).
    settled_expert: bool = True
    _rates: dict[str, _Rate] = field(default_factory=dict)
    #: Arrivals recorded so far; every label's decayed rates together (requests/s at
    #: `_total_at`); when the first arrival came.
    _arrivals: int = field(default=0, init=False, repr=False)
    _total: float = field(default=0.0, init=False, repr=False)
    _total_at: float = field(default=0.0, init=False, repr=False)
    _started_at: float | None = field(default=None, init=False, repr=False)
    #: Each memory's decayed log-likelihood of the arrivals it was scored on, and the weights
    #: `frequency` gives the memories (the softmax of the scores).
    #: The last expert is the settled one: counts since the last detected change.
    _scores: list[float] = field(init=False, repr=False)
    _weights: list[float] = field(init=False, repr=False)
    #: The change detector, the current epoch (bumped on each detected change) and the
    #: arrivals counted in it.
    shifts: ShiftDetector = field(default_factory=ShiftDetector, repr=False)
    _epoch: int = field(default=0, init=False, repr=False)
    _epoch_arrivals: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.frequency_memories or min(self.frequency_memories) < 1:
            raise ValueError(f"frequency memories must be >= 1, got {self.frequency_memories}")
        self._scores = [0.0] * (len(self.frequency_memories) + 1)
        self._reweigh()

    def record(self, label: str, now: float) -> None:
        """One request for `label` arrived at `now`."""
        if self._started_at is None:
            self._started_at = self._total_at = now
        self._arrivals += 1
        step = 1.0 / self.time_constant_s
        self._total = self._total * self._decay(now - self._total_at) + step
        self._total_at = now
        entry = self._rates.get(label)
        settled = self._settled(entry)
        started = self.shifts.observe(
            label, settled, self._epoch_arrivals, len(self._rates), first_ever=entry is None
        )
        if entry is None:
            entry = self._rates[label] = _Rate(
                step, now, [1.0] * len(self.frequency_memories), self._arrivals
            )
        else:
            counts = self._counts(entry)
            self._score(counts, settled)
            entry.value = entry.value * self._decay(now - entry.at) + step
            entry.at = now
            entry.counts = [count + 1.0 for count in counts]
            entry.counted_at = self._arrivals
        if started is not None:
            self._new_epoch(started)
        self._count_settled(entry)

    def _settled(self, entry: _Rate | None) -> int:
        """`entry`'s arrivals since the last detected change."""
        return entry.settled if entry is not None and entry.epoch == self._epoch else 0

    def _count_settled(self, entry: _Rate) -> None:
        if entry.epoch != self._epoch:
            entry.epoch, entry.settled = self._epoch, 0
        entry.settled += 1
        self._epoch_arrivals += 1

    def _new_epoch(self, started: list[str]) -> None:
        """The mix changed: count afresh from the arrivals since the change point."""
        self._epoch += 1
        self._epoch_arrivals = 0
        for label in started:
            entry = self._rates.get(label)
            if entry is not None:
                self._count_settled(entry)

    def _counts(self, entry: _Rate) -> list[float]:
        """`entry`'s counts per memory, decayed to the latest arrival."""
        elapsed = self._arrivals - entry.counted_at
        return [
            count * math.exp(-elapsed / memory)
            for count, memory in zip(entry.counts, self.frequency_memories, strict=True)
        ]

    def _score(self, counts: list[float], settled: int) -> None:
        """Score each expert on the arrival of a known label whose counts were `counts` and
        `settled` since the last change: the log of the share it gave the label among the
        arrivals it remembers, every known label given a pseudo-count of `SCORE_PRIOR`; then
        re-weigh the experts (`_reweigh`)."""
        seen = self._arrivals - 1  # arrivals before this one
        smoothing = SCORE_PRIOR * len(self._rates)
        keep = math.exp(-1.0 / SCORE_MEMORY)
        for i, memory in enumerate(self.frequency_memories):
            remembered = -memory * math.expm1(-seen / memory)
            share = (counts[i] + SCORE_PRIOR) / (remembered + smoothing)
            self._scores[i] = self._scores[i] * keep + math.log(share)
        share = (settled + SCORE_PRIOR) / (self._epoch_arrivals + smoothing)
        self._scores[-1] = self._scores[-1] * keep + math.log(share)
        self._reweigh()

    def _reweigh(self) -> None:
        """The experts' weights: the softmax of their scores."""
        scores = self._scores if self.settled_expert else self._scores[:-1]
        best = max(scores)
        odds = [math.exp(score - best) for score in scores]
        if not self.settled_expert:
            odds.append(0.0)
        total = sum(odds)
        self._weights = [value / total for value in odds]

    @property
    def arrival_count(self) -> int:
        """Arrivals recorded so far (of any label)."""
        return self._arrivals

    @property
    def memory_weights(self) -> dict[int, float]:
        """The weight `frequency` gives each memory now (with `settled_weight`, they add up
        to 1)."""
        return dict(zip(self.frequency_memories, self._weights, strict=False))

    @property
    def settled_weight(self) -> float:
        """The weight `frequency` gives the counts since the last detected change."""
        return self._weights[-1]

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
        """`label`'s requests/s by its share of the arrivals each memory remembers, the
        memories weighed by how well they have been predicting (the eviction value; see the
        module docstring), bounded by its silence as `rate` is.

        Until a memory's length of arrivals has been seen its shares add up to less than 1, so
        the value is conservative while the model knows little.
        """
        entry = self._rates.get(label)
        if entry is None:
            return 0.0
        share = sum(
            weight * count / memory
            for weight, count, memory in zip(
                self._weights, self._counts(entry), self.frequency_memories, strict=False
            )
        )
        if self._epoch_arrivals:
            share += self._weights[-1] * self._settled(entry) / self._epoch_arrivals
        value = share * self.arrival_rate(now)
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
        """Forget labels with no demand left and nothing left in any frequency memory (except
        `keep`); returns how many went. A tail label asked for once a minute has no 10 s rate
        left between its requests, but the long memory must keep counting it."""
        gone = [
            label
            for label, entry in self._rates.items()
            if label not in keep
            and entry.value * self._decay(now - entry.at) < NO_DEMAND_RATE
            and max(self._counts(entry)) < FORGOTTEN_COUNT
        ]
        for label in gone:
            del self._rates[label]
        return len(gone)

    def __len__(self) -> int:
        return len(self._rates)

    def _decay(self, dt: float) -> float:
        return math.exp(-max(0.0, dt) / self.time_constant_s)
