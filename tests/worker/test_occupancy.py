"""The hold on a freed slot (worker/occupancy.py, docs/architecture.md §6.6).

The pure rule `announce` case by case, then the worker's wiring: a real worker linked to two
protocol peers (real websockets), its timer injected so the test decides when the hold ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from proto import smartrouting_pb2 as pb
from tests.support import scaled, until
from tests.worker.peer import ProtocolPeer, protocol_peer
from worker.config import Config, parse_config
from worker.occupancy import Announcement, RefillHistory, SlotView, announce
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(60)

M = frozenset({"m"})


# -- the rule ----------------------------------------------------------------------------


def test_a_link_never_told_gets_the_state() -> None:
    assert announce(SlotView(0), None, holding=True) == Announcement(send=SlotView(0))


def test_nothing_changed_nothing_sent() -> None:
    """A slot freed and refilled within the hold looks the same as before: no message."""
    assert announce(SlotView(1, M), SlotView(1, M), holding=True) == Announcement()
    assert announce(SlotView(1, M), SlotView(1, M), holding=False) == Announcement()


def test_a_slot_taken_is_told_at_once() -> None:
    assert announce(SlotView(2), SlotView(1), holding=True) == Announcement(send=SlotView(2))


def test_a_slot_freed_is_held_back() -> None:
    assert announce(SlotView(0), SlotView(1), holding=True) == Announcement(hold=True)


def test_a_slot_freed_is_told_at_once_without_a_hold() -> None:
    """No hold configured (0 ms), or the hold just ended: the current state goes out."""
    assert announce(SlotView(0, M), SlotView(1), holding=False) == Announcement(send=SlotView(0, M))


def test_labels_go_out_at_once_with_the_freed_slot_still_held() -> None:
    """A task's end loaded a label: the others learn it now, but not yet the free slot."""
    decision = announce(SlotView(0, M), SlotView(1), holding=True)
    assert decision == Announcement(send=SlotView(1, M), hold=True)


def test_label_order_is_no_news() -> None:
    """The dispatcher takes labels as a set: an LRU reordering sends nothing."""
    told = SlotView(0, frozenset(["a", "b"]))
    assert announce(SlotView(0, frozenset(["b", "a"])), told, holding=False) == Announcement()


def test_a_dispatcher_is_held_for_until_it_fails_to_refill_in_time() -> None:
    """Held for at first; a refill within the hold keeps it so; a late refill (no backlog
    there) turns the hold off for that dispatcher until a refill comes in time again."""
    history = RefillHistory(hold_s=0.005)
    assert history.freed("a", now=1.0)
    history.taken("a", now=1.002)  # refilled within the hold
    assert history.freed("a", now=2.0)
    history.taken("a", now=2.5)  # refilled only later: it had nothing queued
    assert not history.freed("a", now=3.0)
    assert history.freed("b", now=3.0)  # each dispatcher on its own
    history.taken("a", now=3.001)
    assert history.freed("a", now=4.0)


def test_no_hold_configured_never_holds() -> None:
    assert not RefillHistory(hold_s=0).freed("a", now=1.0)


def test_the_hold_is_a_flag_and_a_variable() -> None:
    assert Config().occupancy_hold_ms == 5
    assert parse_config(["--occupancy-hold-ms", "0"], env={}).occupancy_hold_ms == 0
    assert parse_config([], env={"WORKER_OCCUPANCY_HOLD_MS": "2.5"}).occupancy_hold_ms == 2.5
    with pytest.raises(SystemExit) as refused:
        parse_config(["--occupancy-hold-ms", "-1"], env={})
    assert refused.value.code == 2


# -- the wiring --------------------------------------------------------------------------


class ManualTimer:
    """Stands in for loop.call_later: records what is scheduled; the test fires it."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.calls.append((delay, callback))

    def fire(self) -> None:
        _, callback = self.calls.pop(0)
        callback()


@contextlib.asynccontextmanager
async def worker_on(
    peers: tuple[ProtocolPeer, ProtocolPeer], hold_ms: float, timer: ManualTimer
) -> AsyncIterator[Worker]:
    config = Config(
        dispatcher_url=tuple(p.url for p in peers),
        worker_id="w1",
        slots=1,
        engine="simulated",
        sim_load_ms=1,
        sim_load_stddev_ms=0,
        sim_run_ms=1,
        sim_run_stddev_ms=0,
        seed=1,
        reconnect_max_backoff_s=0.3,
        shutdown_timeout_s=5,
        occupancy_hold_ms=hold_ms,
    )
    worker = Worker(config, schedule=timer)
    job = asyncio.create_task(worker.run())
    try:
        for peer in peers:
            await peer.session(0)
        yield worker
    finally:
        worker.request_stop()
        assert await asyncio.wait_for(job, scaled(30)) == 0


def occupancies(peer: ProtocolPeer) -> list[int]:
    """`slots_in_use_elsewhere` of every Occupancy received so far (the inbox drained)."""
    seen = []
    while not peer.inbox.empty():
        message = peer.inbox.get_nowait()
        if message.WhichOneof("body") == "occupancy":
            seen.append(message.occupancy.slots_in_use_elsewhere)
    return seen


@pytest.fixture
async def peers() -> AsyncIterator[tuple[ProtocolPeer, ProtocolPeer]]:
    async with protocol_peer() as a, protocol_peer() as b:
        yield a, b


async def test_a_slot_refilled_by_its_own_dispatcher_is_never_shown_free_to_the_other(
    peers: tuple[ProtocolPeer, ProtocolPeer],
) -> None:
    """A's task takes the slot: B is told at once. It ends: B is told nothing yet (the hold).
    A refills the slot before the hold ends: when it ends B is still told nothing, as the
    slot is taken again. The refill ends and its hold ends: B is told the slot is free."""
    a, b = peers
    timer = ManualTimer()
    async with worker_on(peers, hold_ms=60_000, timer=timer) as worker:
        await a.task("t1", "m")
        assert (await b.next("occupancy")).occupancy.slots_in_use_elsewhere == 1
        assert (await a.result()).ok
        assert [delay for delay, _ in timer.calls] == [60.0]  # B's news is held back

        await a.task("t2", "m", params='{"run_ms": 2000}')  # the refill
        await until(lambda: worker.slots_in_use() == 1, "t2 to start")
        timer.fire()  # the hold ends while t2 runs: B already knows the slot as taken
        assert worker.slots_in_use() == 1 and not timer.calls
        # A barrier on B's link: whatever the worker sent B before comes first.
        await b.task("probe", "m")
        assert (await b.next("task_result")).task_result.error_code == pb.BUSY
        # Since "taken", B may have heard of the label t1 loaded, never of a free slot.
        assert 0 not in occupancies(b)

        assert (await a.result()).ok  # t2 ends
        assert len(timer.calls) == 1
        timer.fire()
        assert (await b.next("occupancy")).occupancy.slots_in_use_elsewhere == 0


async def test_without_a_hold_a_freed_slot_is_told_at_once(
    peers: tuple[ProtocolPeer, ProtocolPeer],
) -> None:
    a, b = peers
    timer = ManualTimer()
    async with worker_on(peers, hold_ms=0, timer=timer):
        await a.task("t1", "m")
        assert (await b.next("occupancy")).occupancy.slots_in_use_elsewhere == 1
        assert (await a.result()).ok
        assert (await b.next("occupancy")).occupancy.slots_in_use_elsewhere == 0
        assert timer.calls == []
