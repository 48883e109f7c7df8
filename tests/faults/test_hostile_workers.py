"""A hostile or buggy worker cannot take the dispatcher down or make it lie.

Each test replays one finding of the hardening review against a real dispatcher (uvicorn on an
ephemeral port) with a hand-written protobuf peer on a real websocket, with the same inputs
the review used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dispatcher.config import Config
from proto import frames
from proto import smartrouting_pb2 as pb
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher

pytestmark = pytest.mark.timeout(120)

Answer = Callable[[pb.Task], pb.TaskResult | None]


@pytest.fixture
def dispatcher() -> Iterator[RunningDispatcher]:
    running = start_dispatcher(
        Config(task_timeout_s=30.0, soft_timeout_min_s=0.5, cancel_grace_s=0.5)
    )
    yield running
    running.stop()


class Peer:
    """A worker that says whatever the test wants and answers tasks with `answer`."""

    def __init__(self, url: str, worker_id: str, hello: pb.Hello, answer: Answer) -> None:
        self.url, self.worker_id, self.hello, self.answer = url, worker_id, hello, answer
        self.tasks: list[pb.Task] = []
        self.ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Peer:
        self.ws = await websockets.connect(
            self.url, additional_headers={"Worker-Id": self.worker_id}, ping_interval=None
        )
        await self.ws.send(frames.encode(pb.WorkerMessage(hello=self.hello)))
        welcome = frames.decode_dispatcher_message(await self.ws.recv())
        assert welcome.WhichOneof("body") == "welcome"
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                message = frames.decode_dispatcher_message(data)
                if message.WhichOneof("body") == "task":
                    self.tasks.append(message.task)
                    result = self.answer(message.task)
                    if result is not None:
                        await self.ws.send(frames.encode(pb.WorkerMessage(task_result=result)))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.ws.close()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., Any]]:
    made: list[Peer] = []

    async def make(url: str, worker_id: str, answer: Answer, **hello: Any) -> Peer:
        fields = {"capacity": 2, "slots": 1, **hello}
        message = pb.Hello(protocol_version=frames.PROTOCOL_VERSION, **fields)
        peer = Peer(url, worker_id, message, answer)
        made.append(peer)
        return await peer.start()

    yield make
    for peer in made:
        with contextlib.suppress(Exception):
            await peer.close()


def ok(result_json: str = "{}", **fields: Any) -> Answer:
    def answer(task: pb.Task) -> pb.TaskResult:
        return pb.TaskResult(
            task_id=task.task_id,
            ok=True,
            result_json=result_json,
            labels_loaded=[task.label],
            **fields,
        )

    return answer


def never(task: pb.Task) -> None:
    return None


def body(label: str = "a", **extra: Any) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters_json": "{}", **extra}


async def test_a_nan_result_is_a_json_502_for_sync_and_async_callers(dispatcher, peers) -> None:
    """Finding 3: result_json {"x": NaN} gave a text/plain 500 (and an async task a 500 on
    every read). It is the worker's failure: 502 task_failed INFERENCE_FAILED, as JSON."""
    await peers(dispatcher.ws_url, "w-nan", ok('{"x": NaN}'), labels_loaded=["a"])
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=20) as client:
        answer = await client.post("/run-task", json=body())
        assert answer.status_code == 502
        assert answer.json()["detail"]["code"] == "INFERENCE_FAILED"
        accepted = await client.post("/tasks", json=body())
        status_url = accepted.json()["status_url"]
        for _ in range(50):
            status = await client.get(status_url)
            assert status.status_code == 200 and status.headers["content-type"].startswith(
                "application/json"
            )
            if status.json()["status"] == "failed":
                break
            await asyncio.sleep(0.05)
        assert status.json()["error"]["detail"]["code"] == "INFERENCE_FAILED"
        assert (await client.get(status_url)).status_code == 200  # and again


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 1e308])
async def test_impossible_timings_never_break_stats(dispatcher, peers, value) -> None:
    """Finding 3: run_ms/load_ms of NaN or inf made /stats answer 500 for good, even after the
    worker left. Timings are clamped at the boundary; /stats stays valid JSON."""
    peer = await peers(dispatcher.ws_url, "w-odd", ok(run_ms=value, load_ms=value, label_miss=True))
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=20) as client:
        assert (await client.post("/run-task", json=body())).status_code == 200
        stats = await client.get("/stats")
        assert stats.status_code == 200
        json.loads(stats.text)  # strict: no NaN or Infinity in the text
        await peer.close()
        stats = await client.get("/stats")
        assert stats.status_code == 200 and "NaN" not in stats.text and "Infinity" not in stats.text


async def test_an_absurd_load_cost_does_not_keep_tasks_on_a_stuck_holder(dispatcher, peers) -> None:
    """Finding 3: load_ms = 1e308 in Hello.label_costs kept tasks waiting for a stuck holder
    until their deadline while another worker was idle. The cost is clamped to an hour, and
    the soft timeout moves the stuck task to the idle worker; the rest follow it there."""
    costs = {"a": pb.LabelCost(load_ms=1e308, run_ms=5.0)}
    await peers(dispatcher.ws_url, "w-stuck", never, labels_loaded=["a"], label_costs=costs)
    assert dispatcher.core.estimates.load_ms("a") == 3_600_000.0
    await peers(dispatcher.ws_url, "w-idle", ok())
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=40) as client:
        answers = await asyncio.gather(*(client.post("/run-task", json=body()) for _ in range(3)))
    # Waiting for the stuck holder would have ended in 504 at the 30 s deadline.
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["worker_id"] for a in answers} == {"w-idle"}


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        ({"capacity": 1, "labels_loaded": [f"l{i}" for i in range(100_000)]}, "loaded labels"),
        ({"capacity": 1, "slots": 2**32 - 1}, "slots"),
        ({"capacity": 2**32 - 1}, "capacity"),
        ({"capacity": 1, "labels_loaded": ["x" * 300]}, "characters"),
    ],
)
async def test_an_unbounded_hello_is_refused(dispatcher, hello, reason) -> None:
    """Finding 3: a Hello with 100,000 labels at capacity 1 (or slots = 2^32-1) was accepted;
    it is refused with 1008 and the reason."""
    message = pb.Hello(protocol_version=frames.PROTOCOL_VERSION, **hello)
    async with websockets.connect(
        dispatcher.ws_url, additional_headers={"Worker-Id": "w-huge"}, max_size=None
    ) as ws:
        await ws.send(frames.encode(pb.WorkerMessage(hello=message)))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1008 and reason in (ws.close_reason or "")
    assert dispatcher.core.registry.workers == {}


@pytest.mark.parametrize(
    "worker_id", ["x" * 65_536, "<b>w</b>", "../w", "a\tb", "w/1", "w 1", ".hidden"]
)
async def test_odd_worker_ids_are_refused_promptly(dispatcher, worker_id) -> None:
    """Finding 10: a 64 KB Worker-Id hung the handshake; HTML, `../` and tabs were accepted
    verbatim. Each is refused within seconds (1008, or the server refusing the headers)."""

    async def attempt() -> tuple[int | None, str]:
        try:
            async with websockets.connect(
                dispatcher.ws_url, additional_headers={"Worker-Id": worker_id}
            ) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason or ""
        except InvalidStatus as exc:  # refused before the upgrade (headers too large)
            return exc.response.status_code, ""

    code, reason = await asyncio.wait_for(attempt(), 10)
    assert code in (1008, 400, 431), (code, reason)
    assert dispatcher.core.registry.workers == {}


async def test_a_worker_handing_back_everything_is_not_bounced(dispatcher, peers) -> None:
    """Finding 4: a worker answering every task WORKER_SHUTTING_DOWN had the same task bounced
    back to it ~30,000 times in 5 s, then 504. It gets the task once; the idle worker runs it."""

    def hand_back(task: pb.Task) -> pb.TaskResult:
        return pb.TaskResult(task_id=task.task_id, ok=False, error_code=pb.WORKER_SHUTTING_DOWN)

    bouncer = await peers(dispatcher.ws_url, "w-bounce", hand_back, labels_loaded=["a"])
    await peers(dispatcher.ws_url, "w-good", ok())
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=20) as client:
        answer = await client.post("/run-task", json=body())
        detail = (await client.get("/workers", params={"detail": "true"})).json()
    assert answer.status_code == 200 and answer.json()["worker_id"] == "w-good"
    assert len(bouncer.tasks) == 1
    states = {w["worker_id"]: w["state"] for w in detail["workers"]}
    assert states == {"w-bounce": "draining", "w-good": "ready"}


async def test_a_silent_worker_is_routed_around_and_suspended(dispatcher, peers) -> None:
    """Finding 4: a worker that accepts tasks and never answers received 20/20 tasks of its
    label, which waited for their deadline while a healthy worker sat idle. Now each task it
    gets moves to the healthy worker after the soft timeout, three in a row suspend it
    (visible in /workers and /metrics), and the next 20 tasks all run on the healthy one."""
    labels = ["a", "b", "c"]
    silent = await peers(dispatcher.ws_url, "w-silent", never, capacity=4, labels_loaded=labels)
    await peers(dispatcher.ws_url, "w-healthy", ok(), capacity=4)
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=40) as client:
        for label in labels:  # the silent worker is the only holder of each at first
            answer = await client.post("/run-task", json=body(label))
            assert answer.status_code == 200 and answer.json()["worker_id"] == "w-healthy"
        detail = (await client.get("/workers", params={"detail": "true"})).json()
        answers = await asyncio.gather(*(client.post("/run-task", json=body()) for _ in range(20)))
        metrics = (await client.get("/metrics")).text
    assert len(silent.tasks) == 3
    states = {w["worker_id"]: w["state"] for w in detail["workers"]}
    assert states["w-silent"] == "suspended"
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["worker_id"] for a in answers} == {"w-healthy"}
    assert len(silent.tasks) == 3
    assert "smartrouting_workers_suspended 1.0" in metrics
    assert "smartrouting_worker_suspensions_total 1.0" in metrics
