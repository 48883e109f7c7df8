"""The seeded traffic of a benchmark run, built up-front.

A `Trace` is the complete list of requests both policies will see: for each
request, the producer that sends it, its label and what follows it (the
closed-loop think time, or the open-loop arrival offset). Random and routed runs
replay the same `Trace`, so their difference comes from the dispatcher only.

Closed loop (docs/architecture.md, as in the original system): request `i` goes to
producer `i % producers`; a producer sends, waits for the answer, then sleeps
`max(0.1, N(wait_avg, wait_stddev))` seconds (times the run's time scale).

Open loop: arrivals form a Poisson process of `rate` requests per second of
wall-clock time (the time scale does not apply to arrivals).

Labels: `uniform`, `zipf` (exponent `zipf_s`; users see about 0.8 to 1.2, rank k
drawn with weight 1/k^s, `label-0` first) or `shifting`: the same Zipf ranks, but
every `shift_every_s` seconds of trace time the ranks are dealt to a new seeded
random permutation of the labels, so the hot set moves and a frequency model that
never forgets is wrong after each shift. Trace time is the open-loop arrival
offset, or in closed loop the sum of the producer's earlier (unscaled) think
times: the service time is not known up-front, so closed-loop phases are a lower
bound on the real elapsed time.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Distribution = Literal["uniform", "zipf", "shifting"]
Mode = Literal["closed", "open"]

#: The original system's floor on a producer's think time, in seconds.
MIN_WAIT_S = 0.1


def label_names(n: int) -> list[str]:
    """The benchmark's label names: `label-0` .. `label-(n-1)`."""
    if n < 1:
        raise ValueError(f"need at least one label, got {n}")
    return [f"label-{i}" for i in range(n)]


def label_weights(n: int, distribution: Distribution, zipf_s: float = 1.1) -> list[float]:
    """Probabilities of the `n` labels: equal, or Zipf(s) with `label-0` the most popular.

    For `shifting` these are the weights of the ranks, which are the labels'
    weights in the first phase (before the first shift).
    """
    if n < 1:
        raise ValueError(f"need at least one label, got {n}")
    if distribution == "uniform":
        return [1.0 / n] * n
    if distribution in ("zipf", "shifting"):
        if zipf_s <= 0:
            raise ValueError(f"zipf exponent must be > 0, got {zipf_s}")
        raw = [1.0 / (k + 1) ** zipf_s for k in range(n)]
        total = sum(raw)
        return [w / total for w in raw]
    raise ValueError(f"unknown distribution {distribution!r} (uniform, zipf or shifting)")


def shift_permutation(n: int, phase: int, seed: int) -> list[str]:
    """The labels by rank in phase `phase` of a shifting trace (phase 0: `label-0` first).

    Each later phase is an independent seeded shuffle, so its hot set is new.
    """
    names = label_names(n)
    if phase > 0:
        random.Random(f"shift:{seed}:{phase}").shuffle(names)
    return names


@dataclass(frozen=True)
class TraceEntry:
    """One request: who sends it, on which label, and its timing.

    `wait_s` is the closed-loop think time after the answer (unscaled);
    `at_s` the open-loop arrival offset from the start of the run (wall clock).
    """

    index: int
    producer: int
    label: str
    wait_s: float = 0.0
    at_s: float = 0.0


@dataclass(frozen=True)
class TraceConfig:
    """Everything that determines a trace; equal configs give equal traces."""

    requests: int = 2400
    producers: int = 2
    labels: int = 5
    distribution: Distribution = "uniform"
    zipf_s: float = 1.1
    shift_every_s: float = 10.0
    wait_avg: float = 2.5
    wait_stddev: float = 1.0
    mode: Mode = "closed"
    rate: float = 10.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if self.producers < 1:
            raise ValueError(f"producers must be >= 1, got {self.producers}")
        if self.wait_stddev < 0:
            raise ValueError(f"wait stddev must be >= 0, got {self.wait_stddev}")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError(f"open-loop rate must be > 0, got {self.rate}")
        if self.mode not in ("closed", "open"):
            raise ValueError(f"unknown mode {self.mode!r} (closed or open)")
        if self.distribution not in ("uniform", "zipf", "shifting"):
            raise ValueError(
                f"unknown distribution {self.distribution!r} (uniform, zipf or shifting)"
            )
        if self.distribution != "uniform" and self.zipf_s <= 0:
            raise ValueError(f"zipf exponent must be > 0, got {self.zipf_s}")
        if self.distribution == "shifting" and self.shift_every_s <= 0:
            raise ValueError(f"shift period must be > 0, got {self.shift_every_s}")


@dataclass(frozen=True)
class Trace:
    """A built trace: its config and its entries in global order."""

    config: TraceConfig
    entries: tuple[TraceEntry, ...] = field(default_factory=tuple)

    @property
    def labels(self) -> list[str]:
        """The label of each request, in trace order (the input of the Belady bound)."""
        return [e.label for e in self.entries]

    @property
    def label_set(self) -> list[str]:
        """Every label the run may use (also those the trace never draws)."""
        return label_names(self.config.labels)

    def for_producer(self, producer: int) -> list[TraceEntry]:
        """The entries producer `producer` sends, in order."""
        return [e for e in self.entries if e.producer == producer]

    def label_counts(self) -> Counter[str]:
        """How many requests each label gets."""
        return Counter(self.labels)

    def to_json(self) -> dict[str, object]:
        """A compact JSON form: the config and a fingerprint of the entries."""
        return {
            "config": self.config.__dict__,
            "requests": len(self.entries),
            "fingerprint": fingerprint(self),
        }


def fingerprint(trace: Trace) -> str:
    """A short hash of the entries, to show two runs used the same trace."""
    import hashlib

    digest = hashlib.sha256()
    for e in trace.entries:
        digest.update(f"{e.index},{e.producer},{e.label},{e.wait_s:.6f},{e.at_s:.6f};".encode())
    return digest.hexdigest()[:16]


def _choose_rank(rng: random.Random, cumulative: Sequence[float]) -> int:
    # bisect on the cumulative weights: O(log n) per draw, fine for 1000 labels.
    x = rng.random() * cumulative[-1]
    return min(bisect.bisect_right(cumulative, x), len(cumulative) - 1)


class _Labeller:
    """The label of a drawn rank at a given trace time (phases only when shifting)."""

    def __init__(self, config: TraceConfig) -> None:
        self._config = config
        self._names = label_names(config.labels)
        # Closed-loop producer clocks interleave, so phases can come back: keep them.
        self._phases: dict[int, list[str]] = {}

    def __call__(self, rank: int, at_s: float) -> str:
        config = self._config
        if config.distribution != "shifting":
            return self._names[rank]
        phase = int(at_s // config.shift_every_s)
        names = self._phases.get(phase)
        if names is None:
            names = self._phases[phase] = shift_permutation(config.labels, phase, config.seed)
        return names[rank]


def build_trace(config: TraceConfig) -> Trace:
    """Draw the trace for `config`; deterministic in `config.seed`.

    Labels, waits and arrivals come from separate generators seeded from the one
    seed, so changing e.g. the wait parameters leaves the label sequence as it was
    (except in a closed-loop shifting trace, whose phases follow the think times).
    A shifting trace draws the same ranks as the zipf trace of the same seed.
    """
    cumulative = list(
        itertools.accumulate(label_weights(config.labels, config.distribution, config.zipf_s))
    )
    labeller = _Labeller(config)
    label_rng = random.Random(f"labels:{config.seed}")
    wait_rng = random.Random(f"waits:{config.seed}")
    arrival_rng = random.Random(f"arrivals:{config.seed}")
    # Closed loop: each producer's trace time, the sum of its earlier think times.
    clocks = [0.0] * config.producers
    entries = []
    at = 0.0
    for i in range(config.requests):
        producer = i % config.producers
        rank = _choose_rank(label_rng, cumulative)
        wait = 0.0
        if config.mode == "closed":
            wait = max(MIN_WAIT_S, wait_rng.gauss(config.wait_avg, config.wait_stddev))
            now = clocks[producer]
            clocks[producer] += wait
        else:
            if i > 0:
                at += arrival_rng.expovariate(config.rate)
            now = at
        entries.append(
            TraceEntry(
                index=i,
                producer=producer,
                label=labeller(rank, now),
                wait_s=wait,
                at_s=at,
            )
        )
    return Trace(config=config, entries=tuple(entries))
