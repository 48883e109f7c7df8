"""The worker's side of the wire protocol, against a real websockets protocol peer.

The worker runs in-process with the SIMULATED engine (costs of a few milliseconds);
the peer is a real websockets server speaking proto frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from proto import smartrouting_pb2 as pb
from proto.frames import POLICY_VIOLATION_CLOSE_CODE, PROTOCOL_VERSION
from tests.support import scaled, until
from tests.worker.peer import ProtocolPeer, protocol_peer
from worker.config import Config
from worker.runtime import Worker, WorkerState


@contextlib.asynccontextmanager
async def running_worker(
    peer: ProtocolPeer, capacity: int = 2, slots: int = 1
) -> AsyncIterator[tuple[Worker, asyncio.Task[int]]]:
    config = Config(
        dispatcher_url=peer.url,
        worker_id="w-test",
        capacity=capacity,
        slots=slots,
        engine="simulated",
        sim_load_ms=20,
        sim_load_stddev_ms=0,
        sim_run_ms=2,
        sim_run_stddev_ms=0,
        seed=1,
        reconnect_max_backoff_s=0.5,
        shutdown_timeout_s=10,
    )
    worker = Worker(config)
    job = asyncio.create_task(worker.run())
    try:
        yield worker, job
    finally:
        worker.request_stop()
        await asyncio.wait_for(job, scaled(30))


async def test_hello_first_then_results_with_miss_accounting() -> None:
    """Hello announces the worker; a first task is a miss with a load time, the next a hit."""
    async with protocol_peer() as peer, running_worker(peer, capacity=3, slots=2):
        session = await peer.session(0)
        hello = session.hello
        assert session.worker_id == hello.worker_id == "w-test"
        assert (hello.protocol_version, hello.capacity, hello.slots) == (PROTOCOL_VERSION, 3, 2)
        assert hello.engine == "simulated" and list(hello.labels_loaded) == []
        assert set(hello.task_types) == {"embed_texts", "sample_task"}
        await peer.task("t1", "m1")
        first = await peer.result()
        assert (first.task_id, first.ok, first.label_miss, first.attempt) == ("t1", True, True, 1)
        assert first.load_ms >= 15 and list(first.labels_loaded) == ["m1"]
        assert json.loads(first.result_json)["simulated"] is True
        await peer.task("t2", "m1", params='{"run_ms": 1}')
        second = await peer.result()
        assert second.ok and not second.label_miss and second.load_ms == 0


async def test_bad_tasks_get_typed_errors_and_the_worker_keeps_serving() -> None:
    """Unknown type, bad parameters, unknown model, past deadline → typed errors; then OK."""
    async with protocol_peer() as peer, running_worker(peer):
        await peer.session(0)
        cases = [
            ("a", "m1", "resize_image", "{}", {}, pb.UNKNOWN_TASK_TYPE),
            ("b", "m1", "embed_texts", '{"texts": []}', {}, pb.INVALID_PARAMETERS),
            ("c", "m1", "sample_task", "not json", {}, pb.INVALID_PARAMETERS),
            ("d", "missing-model", "sample_task", "{}", {}, pb.MODEL_NOT_FOUND),
            ("e", "m1", "sample_task", "{}", {"deadline_unix_ms": 1000}, pb.DEADLINE_EXCEEDED),
        ]
        for task_id, label, kind, params, extra, code in cases:
            await peer.task(task_id, label, kind, params, **extra)
            result = await peer.result()
            assert (result.task_id, result.ok) == (task_id, False)
            assert result.error_code == code, (task_id, pb.ErrorCode.Name(result.error_code))
            assert result.error_message
        await peer.task("ok", "m1", "embed_texts", '{"texts": ["x", "y"]}')
        result = await peer.result()
        assert result.ok
        body = json.loads(result.result_json)
        assert body["dimension"] == 384 and len(body["embeddings"]) == 2 and body["model"] == "m1"


async def test_evict_hint_is_honoured() -> None:
    """Capacity 2 holding m1, m2 (m1 least recent): a hint naming m2 evicts m2, not m1."""
    async with protocol_peer() as peer, running_worker(peer):
        await peer.session(0)
        for i, label in enumerate(["m1", "m2"]):
            await peer.task(f"t{i}", label)
            assert (await peer.result()).ok
        await peer.task("t3", "m3", evict_hint=["m2"])
        result = await peer.result()
        assert list(result.labels_evicted) == ["m2"]
        assert sorted(result.labels_loaded) == ["m1", "m3"]


async def test_garbage_frame_closes_1008_and_worker_reconnects_with_labels() -> None:
    """A frame that is not a DispatcherMessage → close 1008; reconnect re-announces labels."""
    async with protocol_peer() as peer, running_worker(peer):
        first = await peer.session(0)
        await peer.task("t1", "m1")
        assert (await peer.result()).ok
        await first.ws.send(b"\xff\x00garbage")
        await asyncio.wait_for(first.closed.wait(), scaled(10))
        assert first.close_code == POLICY_VIOLATION_CLOSE_CODE
        second = await peer.session(1)
        assert list(second.hello.labels_loaded) == ["m1"]
        assert second.hello.label_costs["m1"].load_ms > 0
        await peer.task("t2", "m1")
        assert (await peer.result()).ok


async def test_result_finished_while_disconnected_is_sent_after_reconnect() -> None:
    """The dispatcher drops mid-task: the result arrives on the next connection, after Hello."""
    async with protocol_peer() as peer, running_worker(peer):
        first = await peer.session(0)
        await peer.task("slow", "m1", params='{"run_ms": 400}')
        await first.ws.close(1012, "dispatcher restarting")
        second = await peer.session(1)
        assert second is not first
        result = await peer.result()
        assert result.task_id == "slow" and result.ok


async def test_preload_and_unload_report_labels_changed() -> None:
    """Preload loads ahead of demand, Unload frees it; each sends the full label state."""
    async with protocol_peer() as peer, running_worker(peer):
        await peer.session(0)
        await peer.send(pb.DispatcherMessage(preload=pb.Preload(label="m1")))
        changed = (await peer.next("labels_changed")).labels_changed
        assert list(changed.labels_loaded) == ["m1"] and "preloaded" in changed.reason
        await peer.task("t", "m1")
        assert not (await peer.result()).label_miss
        await peer.send(pb.DispatcherMessage(unload=pb.Unload(label="m1")))
        changed = (await peer.next("labels_changed")).labels_changed
        assert list(changed.labels_loaded) == []


async def test_a_task_beyond_the_slots_is_busy_and_a_started_one_is_not_cancelled() -> None:
    """Every slot taken: a new task is answered BUSY at once, not run, its attempt echoed (the
    worker queues nothing, docs/architecture.md §6.6); a Cancel of the task already running is
    ignored and it finishes."""
    async with protocol_peer() as peer, running_worker(peer, slots=1) as (worker, _):
        await peer.session(0)
        await peer.task("running", "m1", params='{"run_ms": 300}')
        await peer.task("extra", "m1")
        first = await peer.result()
        assert (first.task_id, first.ok, first.error_code) == ("extra", False, pb.BUSY)
        assert first.attempt == 1
        await peer.send(pb.DispatcherMessage(cancel=pb.Cancel(task_id="running", reason="gone")))
        second = await peer.result()
        assert (second.task_id, second.ok) == ("running", True)
        assert (worker.busy_answers, worker.tasks_run) == (1, 1)


async def test_stop_during_a_task_finishes_it_and_hands_back_the_queued_one() -> None:
    """Graceful stop: Goodbye returns no task (a task beyond the slots was answered BUSY, not
    queued), the running one still gets its result, the socket closes with 1001 and run()
    returns 0."""
    async with protocol_peer() as peer:
        async with running_worker(peer, slots=1) as (worker, job):
            session = await peer.session(0)
            await peer.task("running", "m1", params='{"run_ms": 400}')
            await peer.task("extra", "m1")
            busy = await peer.result()
            assert (busy.task_id, busy.error_code) == ("extra", pb.BUSY)
            await until(lambda: len(worker._pending) == 1, "the task to be pending")
            started = time.monotonic()
            worker.request_stop()
            goodbye = (await peer.next("goodbye")).goodbye
            assert list(goodbye.returned_task_ids) == []
            result = await peer.result()
            assert (result.task_id, result.ok) == ("running", True)
            assert await asyncio.wait_for(job, scaled(20)) == 0
            assert time.monotonic() - started < scaled(10)
            await asyncio.wait_for(session.closed.wait(), scaled(10))
            assert session.close_code == 1001
            assert worker.state is WorkerState.STOPPED


async def test_drain_refuses_new_tasks_until_the_next_welcome() -> None:
    """Drain: the running task finishes, new ones are handed back (WORKER_SHUTTING_DOWN), and
    after a reconnect the worker serves again (Drain does not stop the process)."""
    async with protocol_peer() as peer, running_worker(peer) as (worker, job):
        first = await peer.session(0)
        await peer.task("running", "m1", params='{"run_ms": 200}')
        await peer.send(pb.DispatcherMessage(drain=pb.Drain(reason="dispatcher restarting")))
        await peer.task("late", "m1")
        results = {r.task_id: r for r in [await peer.result(), await peer.result()]}
        assert results["late"].error_code == pb.WORKER_SHUTTING_DOWN
        assert results["running"].ok
        await first.ws.close(1001, "going away")
        await peer.session(1)
        await peer.task("after", "m1")
        result = await peer.result()
        assert result.ok and not result.label_miss
        assert not job.done() and worker.state is WorkerState.RUNNING


async def test_more_slots_than_capacity_waits_for_room_instead_of_failing() -> None:
    """Slots 2, capacity 1: a task for another label waits until the running one releases its
    model, then evicts it; both succeed."""
    async with protocol_peer() as peer, running_worker(peer, capacity=1, slots=2):
        await peer.session(0)
        await peer.task("a", "m1", params='{"run_ms": 200}')
        await peer.task("b", "m2")
        results = {r.task_id: r for r in [await peer.result(), await peer.result()]}
        assert results["a"].ok and results["b"].ok, results
        assert list(results["b"].labels_evicted) == ["m1"]
        assert list(results["b"].labels_loaded) == ["m2"]
