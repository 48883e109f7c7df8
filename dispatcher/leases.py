"""Leases on a shared task store: renew ours, claim those of dispatchers that stopped.

Every `lease_s / 3` (`renew_every`) the loop renews every lease this dispatcher holds (one
UPDATE for all its tasks) and then claims unfinished tasks whose lease ended, which it hands to
`adopt` (the runtime queues them in its core). A holder that misses two renewals in a row
still keeps its tasks; one that stops for `lease_s` (killed, partitioned, frozen) loses them
to the first survivor that looks. The first round claims this dispatcher's own rows too (a
restart under the same `--dispatcher-id` takes its tasks back at once).

A dispatcher that stalled past its lease (a long GC pause, a partition) may find some tasks
claimed by another: `renew` no longer returns them. Both may then run the task; the store keeps
the first answer (`finish` writes only an unfinished row). Such losses are logged, and are the
reason `lease_s` must be well above the longest stall (docs/architecture.md, "Shared task
store").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dispatcher.errors import DispatcherError
from dispatcher.persistence import Persistence
from dispatcher.store import BadRow, StoredTask

log = logging.getLogger("dispatcher.leases")


def renew_every(lease_s: float) -> float:
    """How often leases are renewed and expired ones looked for: a third of the lease, so
    one late renewal never loses a task."""
    return lease_s / 3.0


def lost_leases(held_before: set[str], renewed: set[str], still_local: set[str]) -> set[str]:
    """Tasks this dispatcher held before a renewal, still runs, and no longer holds: another
    dispatcher claimed them while this one stalled."""
    return (held_before & still_local) - renewed


class LeaseLoop:
    """The renew-and-claim loop of one dispatcher on a shared store."""

    def __init__(
        self,
        persistence: Persistence,
        lease_s: float,
        adopt: Callable[[list[StoredTask], list[BadRow]], Awaitable[None]],
        local_unfinished: Callable[[], set[str]],
    ) -> None:
        self.persistence = persistence
        self.lease_s = lease_s
        self._adopt = adopt
        self._local_unfinished = local_unfinished
        self.claimed = 0
        self.lost = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the loop on the running event loop until `stop`."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def claim_now(self, own: bool = False) -> int:
        """Claim tasks whose lease ended and adopt them; returns how many."""
        rows, bad = await self.persistence.claim(own)
        if rows or bad:
            await self._adopt(rows, bad)
            self.claimed += len(rows)
            log.info("claimed %d tasks whose dispatcher stopped renewing", len(rows))
        return len(rows)

    async def renew_now(self) -> None:
        """Renew this dispatcher's leases, logging tasks lost to another claimer."""
        held = self._local_unfinished()
        renewed = await self.persistence.renew()
        lost = lost_leases(held, renewed, self._local_unfinished())
        if lost:
            self.lost += len(lost)
            log.warning(
                "%d tasks were claimed by another dispatcher while this one was late renewing"
                " its leases (--lease-s %.1f); they may run twice: %s",
                len(lost),
                self.lease_s,
                ", ".join(sorted(lost)[:5]),
            )

    async def _run(self) -> None:
        own = True  # the first round takes back what this id held before a restart
        while True:
            try:
                await self.renew_now()
                await self.claim_now(own)
                own = False
            except DispatcherError as exc:  # the store is down: try again next round
                log.error("task store leases: %s", exc)
            await asyncio.sleep(renew_every(self.lease_s))
