"""When a worker tells its other dispatchers about its slots: the hold on a freed slot.

A worker linked to several dispatchers reports its state (`Occupancy`) to each of them
(docs/architecture.md §6.6). Under a backlog every dispatcher wants a freed slot; announcing
it to all at once makes them all send, and all but one get BUSY. The dispatcher whose task
just ended learns of the free slot first (its own TaskResult) and refills it from its queue
at once. So a *freed* slot is announced to the others only after a short hold
(`--occupancy-hold-ms`): when the hold ends they get the *current* state, and if the slot was
refilled meanwhile they see it taken and nobody races for it. A slot *taken* is announced at
once (the others must stop sending), and so are label changes, but with the slot count still
held back.

Pure policy: `announce` decides, per link, what to send now and whether a flush is owed
later; `RefillHistory` holds a freed slot only for a dispatcher that refills in time;
worker/runtime.py keeps what each link was last told and runs the timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SlotView:
    """What one dispatcher is told of the worker: the slots its peers' tasks take, the labels."""

    slots_in_use_elsewhere: int
    # Sets: the dispatcher takes them as sets, so an order change (LRU) is no news.
    labels_loaded: frozenset[str] = frozenset()
    labels_loading: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Announcement:
    """The decision for one link: `send` now (None: nothing), and whether a flush is owed."""

    send: SlotView | None = None
    hold: bool = False


NOTHING = Announcement()


def announce(current: SlotView, told: SlotView | None, *, holding: bool) -> Announcement:
    """What to tell a link whose state is `current`, last told `told` (None: never).

    `holding` is False when freed slots may be shown at once (no hold configured, or the hold
    just ended). While holding, a link is never shown fewer slots taken than it was told: a
    label change goes out at once with the old count, the freed slot waits for the flush.
    """
    if told is None:
        return Announcement(send=current)
    if current == told:
        return NOTHING  # e.g. a slot freed and refilled within the hold: nothing to race for
    if not holding or current.slots_in_use_elsewhere >= told.slots_in_use_elsewhere:
        return Announcement(send=current)  # a slot taken (or labels only): at once
    held = replace(current, slots_in_use_elsewhere=told.slots_in_use_elsewhere)
    if held == told:
        return Announcement(hold=True)
    return Announcement(send=held, hold=True)


@dataclass
class RefillHistory:
    """Per link: does its dispatcher refill the slots its tasks free, within the hold?

    The hold only pays where the task's own dispatcher has a backlog to refill from; where it
    has none, holding just hides a free slot from the others for `hold_s` and then tells them
    all together (they race as before, later). So a freed slot is held only for a link whose
    last freed slot was taken again by one of its tasks within the hold (a link not yet seen
    counts as one that does); a take later than that, or none, turns the hold off for that link
    until it refills in time again.
    """

    hold_s: float
    _freed_at: dict[str, float] = field(default_factory=dict)
    _refills: dict[str, bool] = field(default_factory=dict)

    def freed(self, link: str, now: float) -> bool:
        """A task of `link` ended at `now`: whether to hold the news back from the others."""
        self._freed_at[link] = now
        return self.hold_s > 0 and self._refills.get(link, True)

    def taken(self, link: str, now: float) -> None:
        """A task of `link` took a slot at `now`."""
        freed = self._freed_at.pop(link, None)
        if freed is not None:
            self._refills[link] = now - freed <= self.hold_s

    def forget(self, link: str) -> None:
        self._freed_at.pop(link, None)
        self._refills.pop(link, None)
