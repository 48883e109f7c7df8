"""The change detector: a CUSUM test of recent arrivals against the counts since the last
change."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dispatcher.shift_detector import MAX_SUSPECTS, THRESHOLD_NATS, ShiftDetector


class _Stream:
    """Feeds a detector as the demand model does: counts since the last detected change."""

    def __init__(self, detector: ShiftDetector) -> None:
        self.detector = detector
        self.settled: Counter[str] = Counter()
        self.settled_arrivals = 0
        self.known: set[str] = set()
        self.fed = 0
        #: (index of the detecting arrival, labels returned) of every detection.
        self.detections: list[tuple[int, list[str]]] = []

    def feed(self, labels: list[str]) -> None:
        for label in labels:
            started = self.detector.observe(
                label,
                self.settled[label],
                self.settled_arrivals,
                len(self.known),
                first_ever=label not in self.known,
            )
            if started is not None:
                self.detections.append((self.fed, started))
                self.settled = Counter(started)
                self.settled_arrivals = len(started)
            self.known.add(label)
            self.settled[label] += 1
            self.settled_arrivals += 1
            self.fed += 1


def _zipf(ranks: list[str], n: int, rng: random.Random, s: float = 1.1) -> list[str]:
    weights = [1.0 / (k + 1) ** s for k in range(len(ranks))]
    return rng.choices(ranks, weights, k=n)


@pytest.mark.parametrize(
    ("labels", "s", "arrivals"),
    [(1_000, 1.1, 24_000), (1_000, 0.8, 24_000), (200, 1.2, 12_000), (5, 0.0, 2_400)],
)
def test_a_steady_stream_declares_no_change(labels: int, s: float, arrivals: int) -> None:
    """Zipf (s = 0 is uniform) from one fixed ranking: the evidence never reaches the
    threshold."""
    stream = _Stream(ShiftDetector())
    ranks = [f"l{i}" for i in range(labels)]
    stream.feed(_zipf(ranks, arrivals, random.Random(labels), s))
    assert stream.detections == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_moved_hot_set_is_detected_within_tens_of_arrivals(seed: int) -> None:
    """4,000 arrivals of Zipf(1.1) over 1,000 labels, then the ranks dealt anew: one change is
    declared, less than 100 arrivals after the move, and it is dated to the move: most of the
    labels returned as the new epoch's first arrivals came after it."""
    rng = random.Random(seed)
    ranks = [f"l{i}" for i in range(1_000)]
    moved = ranks[:]
    rng.shuffle(moved)
    before, after = _zipf(ranks, 4_000, rng), _zipf(moved, 1_000, rng)
    stream = _Stream(ShiftDetector())
    stream.feed(before + after)
    assert len(stream.detections) == 1
    at, started = stream.detections[0]
    assert 4_000 < at < 4_100
    # The arrivals since the estimated change point end just before the detecting one.
    assert started == (before + after)[at - len(started) : at]
    assert len(started) >= (at - 4_000) * 0.8
    assert len(started) <= (at - 4_000) + 20


def test_a_low_threshold_fires_on_noise() -> None:
    """At 5 nats a steady stream's wandering sum crosses the threshold again and again: the
    default is set well above it."""
    assert THRESHOLD_NATS >= 40.0
    stream = _Stream(ShiftDetector(threshold_nats=5.0))
    stream.feed(_zipf([f"l{i}" for i in range(1_000)], 12_000, random.Random(9)))
    assert len(stream.detections) > 100


def test_the_suspects_kept_are_bounded() -> None:
    """A drift that keeps the evidence positive without a detection: at most MAX_SUSPECTS
    arrivals are kept as the possible start of a new epoch."""
    detector = ShiftDetector(threshold_nats=1e9)
    for _ in range(MAX_SUSPECTS + 500):
        # A label the recent window holds ever more often but the settled counts never saw.
        assert detector.observe("rising", 0, 100_000, 1_000) is None
    assert detector.evidence_nats > 0
    assert len(detector._suspects) == MAX_SUSPECTS


def test_first_ever_arrivals_are_not_scored() -> None:
    """A stream of labels never seen before adds no evidence (and keeps no suspects)."""
    detector = ShiftDetector()
    for i in range(1_000):
        assert detector.observe(f"new{i}", 0, i, i, first_ever=True) is None
    assert detector.evidence_nats == 0.0
    assert len(detector._suspects) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold_nats": 0.0}, "threshold_nats > 0"),
        ({"window": 0}, "window >= 1"),
        ({"prior": 0.0}, "prior > 0"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShiftDetector(**kwargs)  # type: ignore[arg-type]
