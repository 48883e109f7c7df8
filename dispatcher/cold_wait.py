"""Whether the cold wait pays: its own record, learned while it runs.

The routing policy's cold wait (`dispatcher.routing`, `cold_wait_s`) holds a task for a label
no worker holds, where loading it at once would evict a label worth more than half of it, until
a worker frees up where the load is that cheap or the wait runs out. A hold *paid* when the
label was then loaded on such a worker (or into a free slot, or a holder appeared); it did not
when the wait ran out and the label was loaded on the cheapest sampled worker anyway: the task
waited for nothing.

Whether holds pay depends on the traffic, not on a setting an operator can know in advance.
Under skewed traffic over many more labels than slots, many workers hold a label asked for
once, and a held task soon finds one: measured (simulator, 200 workers x 2, 1,000 Zipf(1.1)
labels, 1,200 tasks/s, seed 1), 2,369 tasks were held, about one in six of the labels found a
cheap place, and the wait saved 9% of the misses. Where labels are worth alike it never does:
on the reference scenario (2 workers, 5 uniform labels on 4 slots) 1 of 455 holds paid, the
misses fell by 13 of 480, and the p99 of all tasks rose from 0.73 to 1.24 s.

So the policy holds cold tasks only while the decayed share of holds that paid (over the last
~`OUTCOME_MEMORY` outcomes, starting from none paid of `PRIOR_UNPAID`) is at least
`MIN_PAID_SHARE`;
below it one task in `PROBE_ODDS` that it would hold is still held, at random, so the share
follows the traffic when it changes. Pure data: the core records holds and their outcomes, the
policy reads `holds`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Below this share of holds that paid, cold tasks are no longer held (bar the probes). Between
#: the measured shares: 15-27% on Zipf(1.1) traffic over 1,000 labels, 0-9% on the reference
#: scenario (0.2% there when every cold task is held).
MIN_PAID_SHARE = 0.1

#: Outcomes over which the paid share is counted (each outcome's weight decays by
#: 1 - 1/memory per later outcome): long enough that a run of unlucky holds under skewed
#: traffic does not switch the wait off (a share near 1 in 6 rarely dips below 1 in 10 over
#: 400), short enough that a change of traffic shows within a few hundred holds.
OUTCOME_MEMORY = 400.0

#: While holds do not pay, one in this many cold tasks is still held, to notice when they
#: would: on the reference scenario 5-12 of 2,400 tasks wait for nothing, and at 1,200 tasks/s
#: over 1,000 Zipf labels (~100 cold tasks/s) holding resumes within seconds. Probing 1 in 20
#: held ~30 tasks per reference run (p99 0.81-0.99 s instead of 0.73-0.79 s).
PROBE_ODDS = 50

#: Holds counted as unpaid before any outcome: holding starts off, so a fleet where it does
#: not pay never holds more than its probes (on the reference scenario, 5-12 of 2,400 tasks).
PRIOR_UNPAID = 4.0


@dataclass
class ColdWaitPayoff:
    """The decayed record of cold-wait holds that paid, and whether to keep holding."""

    min_paid_share: float = MIN_PAID_SHARE
    memory: float = OUTCOME_MEMORY
    probe_odds: int = PROBE_ODDS
    #: Decayed counts of holds that paid and that did not. The prior (0, 4) starts with probes
    #: only; the first probe that pays turns holding on (a share of 1 in 5).
    paid: float = 0.0
    unpaid: float = PRIOR_UNPAID
    holds_total: int = 0
    paid_total: int = 0

    @property
    def paid_share(self) -> float:
        return self.paid / (self.paid + self.unpaid)

    @property
    def paying(self) -> bool:
        """Whether enough of the recent holds paid to keep holding."""
        return self.paid_share >= self.min_paid_share

    def holds(self, rng: random.Random) -> bool:
        """Whether a cold task should be held: while holds pay, or as a probe (`rng`)."""
        if self.paying:
            return True
        return rng.randrange(self.probe_odds) == 0

    def held(self) -> None:
        """A cold task was held."""
        self.holds_total += 1

    def record(self, paid: bool) -> None:
        """A held task's label was loaded: on a cheap place (`paid`) or after its wait ran
        out."""
        keep = 1.0 - 1.0 / self.memory
        self.paid *= keep
        self.unpaid *= keep
        if paid:
            self.paid += 1.0
            self.paid_total += 1
        else:
            self.unpaid += 1.0
