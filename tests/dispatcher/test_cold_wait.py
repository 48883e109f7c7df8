"""The cold wait's record of holds that paid (`dispatcher.cold_wait`): plain data, no I/O."""

from __future__ import annotations

import random

import pytest

from dispatcher.cold_wait import MIN_PAID_SHARE, PROBE_ODDS, ColdWaitPayoff


def after(outcomes: str) -> ColdWaitPayoff:
    """A record after `outcomes`, oldest first: "p" a hold that paid, "u" one that did not."""
    payoff = ColdWaitPayoff()
    for outcome in outcomes:
        payoff.record(paid=outcome == "p")
    return payoff


@pytest.mark.parametrize(
    ("outcomes", "paying"),
    [
        pytest.param("", False, id="starts-with-probes-only"),
        pytest.param("u" * 50, False, id="holds-that-never-pay"),
        pytest.param("p", True, id="the-first-probe-that-pays-turns-it-on"),
        pytest.param("p" + "u" * 4, True, id="one-in-five-keeps-it-on"),
        pytest.param("p" + "u" * 6, False, id="one-in-eleven-turns-it-off"),
        pytest.param("pu" * 100, True, id="half-paid"),
        pytest.param("puuuuu" * 100, True, id="one-in-six-as-on-zipf-traffic"),
        pytest.param("p" + "u" * 29 + "p" + "u" * 29, False, id="one-in-thirty"),
        pytest.param("p" * 200 + "u" * 400, True, id="old-successes-still-count"),
        pytest.param("p" * 200 + "u" * 1500, False, id="but-fade-after-a-few-memories"),
    ],
)
def test_paying(outcomes: str, paying: bool) -> None:
    """Holding goes on while at least `MIN_PAID_SHARE` of the recent holds paid."""
    payoff = after(outcomes)
    assert payoff.paying is paying
    assert (payoff.paid_share >= MIN_PAID_SHARE) is paying


def test_the_counts_decay_by_the_memory() -> None:
    """Each outcome weighs 1 - 1/memory less with every later one; totals count them all."""
    payoff = ColdWaitPayoff(memory=4.0)
    payoff.record(paid=True)
    payoff.record(paid=False)
    payoff.record(paid=False)
    assert payoff.paid == pytest.approx(0.75**2)
    assert payoff.unpaid == pytest.approx(4.0 * 0.75**3 + 0.75 + 1.0)
    assert (payoff.paid_total, payoff.holds_total) == (1, 0)
    payoff.held()
    assert payoff.holds_total == 1


@pytest.mark.parametrize(("outcomes", "least", "most"), [("", 140, 260), ("p", 10_000, 10_000)])
def test_probes_are_one_in_probe_odds(outcomes: str, least: int, most: int) -> None:
    """While holds do not pay, about one cold task in `PROBE_ODDS` (50) is held; while they
    do, every one."""
    payoff = after(outcomes)
    rng = random.Random(3)
    held = sum(payoff.holds(rng) for _ in range(10_000))
    assert least <= held <= most
    assert PROBE_ODDS == 50
