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
`frequency_memories` (500, 2,000 and 24,000 arrivals; a count decays by exp(-1/memory) per
arrival of any label), and each memory is scored by how well it predicted the labels that did
arrive (a decayed log-likelihood over the last ~`SCORE_MEMORY` arrivals of labels seen before;
first-ever arrivals say nothing about ranking). `frequency` weighs the memories by the softmax
of their scores, the shortest one's lowered by a prior of `SHORTEST_MEMORY_PRIOR_NATS`. On a
steady Zipf stream the long memory predicts better and takes the weight within a few thousand
arrivals; when the hot set moves, the 500-arrival memory wins within a few hundred arrivals
and the old counts stop deciding, and once the new hot set has been asked for a few thousand
times the 2,000-arrival memory, less noisy, takes over. Measured (`python -m benchmark
simulate`, 200 workers x 2, 1,000 labels, 72,000 tasks, seeds 1-3 summed; README "Routing at
scale"): Zipf(1.1) 22,198 misses at 400 tasks/s and 23,036 at 1,200/s (W-TinyLFU on one pooled
cache: 23,325; one 12,000-arrival memory: 22,402 and 23,234); the shifting trace (a new hot set
every 10 s) 31,964 at 400/s and 27,762 at 1,200/s (one pooled LRU cache: 31,846 and 29,022;
one memory: 36,284 and 29,368, it remembered three hot sets; the 2,000- and 24,000-arrival
pair without the shortest: 32,639 and 27,885). The prior keeps the shortest memory out where
the experts predict alike: on the reference scenarios (5 labels, uniform) it took 5-30% of the
weight without it and the misses of seeds 1-3 rose from 480 / 486 / 496 to 491 / 510 / 501.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: A label whose rate fell below this (requests/s) counts as having no demand.
NO_DEMAND_RATE = 1e-3

#: A label whose counts in every frequency memory fell below this is forgotten (`prune`): one
#: arrival decays this far after 3 memories' length of arrivals.
FORGOTTEN_COUNT = math.exp(-3.0)

#: A label silent for longer than GAP_FACTOR / rate is taken to have slowed down (see `rate`).
GAP_FACTOR = 2.0

#: The memories (arrivals of any label) of the frequency's experts: a short one that follows a
#: hot set in the first thousand requests after it moved, a middle one that ranks it once it
#: has been asked for a few thousand times, and a long one that ranks a steady Zipf tail
#: (1.25, 5 and 60 x the 400 slots of the measured deployment; see the module docstring).
FREQUENCY_MEMORIES = (500, 2_000, 24_000)

#: Arrivals over which the experts' predictions are scored (their scores decay by
#: exp(-1/SCORE_MEMORY) per scored arrival): short, so that a shift shows within ~1,000 requests.
SCORE_MEMORY = 1_000

#: Prior odds against the shortest memory, in nats: it is the noisiest, so it takes the weight
#: only on clear evidence (a moved hot set puts it hundreds of nats ahead within a thousand
#: arrivals), not on the few nats by which the scores wander where the experts predict alike
#: (5 labels of uniform traffic: there it made eviction LRU-like and cost 1-5% more misses).
SHORTEST_MEMORY_PRIOR_NATS = 5.0

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


@dataclass
class DemandModel:
    """Decayed request rate per label (requests/s), and the copies each needs."""

    time_constant_s: float = 10.0
    target_utilisation: float = 0.7
    frequency_memories: tuple[int, ...] = FREQUENCY_MEMORIES
    _rates: dict[str, _Rate] = field(default_factory=dict)
    #: Arrivals recorded so far; every label's decayed rates together (requests/s at
    #: `_total_at`); when the first arrival came.
    _arrivals: int = field(default=0, init=False, repr=False)
    _total: float = field(default=0.0, init=False, repr=False)
    _total_at: float = field(default=0.0, init=False, repr=False)
    _started_at: float | None = field(default=None, init=False, repr=False)
    #: Each memory's decayed log-likelihood of the arrivals it was scored on, and the weights
    #: `frequency` gives the memories (the softmax of the scores).
    _scores: list[float] = field(init=False, repr=False)
    _weights: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.frequency_memories or min(self.frequency_memories) < 1:
            raise ValueError(f"frequency memories must be >= 1, got {self.frequency_memories}")
        self._scores = [0.0] * len(self.frequency_memories)
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
        if entry is None:
            self._rates[label] = _Rate(
                step, now, [1.0] * len(self.frequency_memories), self._arrivals
            )
            return
        counts = self._counts(entry)
        self._score(counts)
        entry.value = entry.value * self._decay(now - entry.at) + step
        entry.at = now
        entry.counts = [count + 1.0 for count in counts]
        entry.counted_at = self._arrivals

    def _counts(self, entry: _Rate) -> list[float]:
        """`entry`'s counts per memory, decayed to the latest arrival."""
        elapsed = self._arrivals - entry.counted_at
        return [
            count * math.exp(-elapsed / memory)
            for count, memory in zip(entry.counts, self.frequency_memories, strict=True)
        ]

    def _score(self, counts: list[float]) -> None:
        """Score each memory on the arrival of a known label whose counts were `counts`: the
        log of the share it gave the label among the arrivals it remembers, every known label
        given a pseudo-count of `SCORE_PRIOR`; then re-weigh the memories (`_reweigh`)."""
        seen = self._arrivals - 1  # arrivals before this one
        smoothing = SCORE_PRIOR * len(self._rates)
        keep = math.exp(-1.0 / SCORE_MEMORY)
        for i, memory in enumerate(self.frequency_memories):
            remembered = -memory * math.expm1(-seen / memory)
            share = (counts[i] + SCORE_PRIOR) / (remembered + smoothing)
            self._scores[i] = self._scores[i] * keep + math.log(share)
        self._reweigh()

    def _reweigh(self) -> None:
        """The memories' weights: the softmax of their scores, the shortest memory's lowered by
        its prior (`SHORTEST_MEMORY_PRIOR_NATS`)."""
        shortest = min(self.frequency_memories)
        posterior = [
            score - SHORTEST_MEMORY_PRIOR_NATS if memory == shortest else score
            for score, memory in zip(self._scores, self.frequency_memories, strict=True)
        ]
        best = max(posterior)
        odds = [math.exp(score - best) for score in posterior]
        total = sum(odds)
        self._weights = [value / total for value in odds]

    @property
    def arrival_count(self) -> int:
        """Arrivals recorded so far (of any label)."""
        return self._arrivals

    @property
    def memory_weights(self) -> dict[int, float]:
        """The weight `frequency` gives each memory now (they add up to 1)."""
        return dict(zip(self.frequency_memories, self._weights, strict=True))

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
                self._weights, self._counts(entry), self.frequency_memories, strict=True
            )
        )
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
