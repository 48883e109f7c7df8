"""The seeded traffic of a benchmark run, built up-front.

A `Trace` is the complete list of requests both policies will see: for each
request, the producer that sends it, its label and what follows it (the
closed-loop think time, or the open-loop arrival offset). Random and routed runs
replay the same `Trace`, so their difference comes from the dispatcher only.

Closed loop (DESIGN.md section 8, as in the original system): request `i` goes to
producer `i % producers`; a producer sends, waits for the answer, then sleeps
`max(0.1, N(wait_avg, wait_stddev))` seconds (times the run's time scale).

Open loop: arrivals form a Poisson process of `rate` requests per second of
wall-clock time (the time scale does not apply to arrivals).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Distribution = Literal["uniform", "zipf"]
Mode = Literal["closed", "open"]

#: The original system's floor on a producer's think time, in seconds.
MIN_WAIT_S = 0.1


def label_names(n: int) -> list[str]:
    """The benchmark's label names: `label-0` .. `label-(n-1)`."""
    if n < 1:
        raise ValueError(f"need at least one label, got {n}")
    return [f"label-{i}" for i in range(n)]


def label_weights(n: int, distribution: Distribution, zipf_s: float = 1.1) -> list[float]:
    """Probabilities of the `n` labels: equal, or Zipf(s) with `label-0` the most popular."""
    if n < 1:
        raise ValueError(f"need at least one label, got {n}")
    if distribution == "uniform":
        return [1.0 / n] * n
    if distribution == "zipf":
        if zipf_s <= 0:
            raise ValueError(f"zipf exponent must be > 0, got {zipf_s}")
        raw = [1.0 / (k + 1) ** zipf_s for k in range(n)]
        total = sum(raw)
        return [w / total for w in raw]
    raise ValueError(f"unknown distribution {distribution!r} (uniform or zipf)")


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


def _choose(rng: random.Random, names: Sequence[str], cumulative: Sequence[float]) -> str:
    # bisect on the cumulative weights: O(log n) per draw, fine for 1000 labels.
    x = rng.random() * cumulative[-1]
    return names[min(bisect.bisect_right(cumulative, x), len(names) - 1)]


def build_trace(config: TraceConfig) -> Trace:
    """Draw the trace for `config`; deterministic in `config.seed`.

    Labels, waits and arrivals come from separate generators seeded from the one
    seed, so changing e.g. the wait parameters leaves the label sequence as it was.
    """
    names = label_names(config.labels)
    cumulative = list(
        itertools.accumulate(label_weights(config.labels, config.distribution, config.zipf_s))
    )
    label_rng = random.Random(f"labels:{config.seed}")
    wait_rng = random.Random(f"waits:{config.seed}")
    arrival_rng = random.Random(f"arrivals:{config.seed}")
    entries = []
    at = 0.0
    for i in range(config.requests):
        label = _choose(label_rng, names, cumulative)
        wait = 0.0
        if config.mode == "closed":
            wait = max(MIN_WAIT_S, wait_rng.gauss(config.wait_avg, config.wait_stddev))
        else:
            if i > 0:
                at += arrival_rng.expovariate(config.rate)
        entries.append(
            TraceEntry(index=i, producer=i % config.producers, label=label, wait_s=wait, at_s=at)
        )
    return Trace(config=config, entries=tuple(entries))
