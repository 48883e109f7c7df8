"""Fuzz /worker-listen with random and truncated protobuf frames (hypothesis).

A real dispatcher (uvicorn, ephemeral port) serves one real worker process (SIMULATED engine)
throughout. Each example opens its own websocket and sends one frame, first or after a valid
Hello. Whatever the frame, the dispatcher either accepts it (when it is a valid message for
that moment) or closes only that connection with 1008; the real worker is never disconnected
and HTTP keeps answering.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from dispatcher.config import Config
from proto import frames
from proto import smartrouting_pb2 as pb
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.support import ProcessFactory, wait_until

pytestmark = pytest.mark.timeout(180)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LATER_KINDS = ("task_result", "labels_changed", "goodbye")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDispatcher]:
    """A dispatcher with one simulated worker process connected ("steady")."""
    tmp = tmp_path_factory.mktemp("frames")
    running = start_dispatcher(Config(task_timeout_s=10.0, hello_timeout_s=2.0))
    processes = ProcessFactory(log_dir=Path(tmp))
    try:
        processes.worker(
            running.ws_url,
            "steady",
            "--engine",
            "simulated",
            "--time-scale",
            "0.01",
            "--state-dir",
            str(tmp / "state"),
            env={"HF_HUB_OFFLINE": "1"},
        )
        wait_until(lambda: "steady" in running.core.registry.workers, 60, "steady to register")
        yield running
    finally:
        processes.close()
        running.stop()


def hello(worker_id: str) -> pb.WorkerMessage:
    return pb.WorkerMessage(
        hello=pb.Hello(
            protocol_version=frames.PROTOCOL_VERSION, worker_id=worker_id, capacity=1, slots=1
        )
    )


def acceptable_first(data: bytes, worker_id: str) -> bool:
    """Whether the dispatcher should welcome a connection whose first frame is `data`."""
    try:
        message = frames.decode_worker_message(data)
    except frames.FrameDecodeError:
        return False
    if message.WhichOneof("body") != "hello":
        return False
    h = message.hello
    return h.worker_id in ("", worker_id) and h.protocol_version in (0, frames.PROTOCOL_VERSION)


def acceptable_later(data: bytes) -> bool:
    """Whether a frame after Hello is a message the session accepts."""
    try:
        return frames.decode_worker_message(data).WhichOneof("body") in LATER_KINDS
    except frames.FrameDecodeError:
        return False


async def send_frames(url: str, worker_id: str, sequence: list[bytes]) -> int | None:
    """Send `sequence`; the close code the dispatcher sent, or None if it kept the socket."""
    async with websockets.connect(
        url, additional_headers={"Worker-Id": worker_id}, ping_interval=None
    ) as ws:
        for data in sequence:
            await ws.send(data)
        try:
            while True:
                message = frames.decode_dispatcher_message(await asyncio.wait_for(ws.recv(), 0.5))
                assert message.WhichOneof("body") == "welcome", message
        except ConnectionClosed:
            return ws.close_code
        except TimeoutError:
            return None


def valid_frames() -> st.SearchStrategy[bytes]:
    """Encoded messages of every worker kind, with random contents."""
    text = st.text(max_size=20)
    messages = st.one_of(
        st.builds(lambda w, c: pb.WorkerMessage(hello=pb.Hello(worker_id=w, capacity=c)), text,
                  st.integers(0, 2**31 - 1)),
        st.builds(
            lambda t, ok, r: pb.WorkerMessage(
                task_result=pb.TaskResult(task_id=t, ok=ok, result_json=r)
            ),
            text,
            st.booleans(),
            text,
        ),
        st.builds(
            lambda labels: pb.WorkerMessage(
                labels_changed=pb.LabelsChanged(labels_loaded=labels)
            ),
            st.lists(text, max_size=3),
        ),
        st.builds(lambda ids: pb.WorkerMessage(goodbye=pb.Goodbye(returned_task_ids=ids)),
                  st.lists(text, max_size=3)),
    )  # fmt: skip
    return messages.map(frames.encode)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = draw(valid_frames())
    return data[: draw(st.integers(0, max(0, len(data) - 1)))]


def check(target: RunningDispatcher, first: bytes | None, later: bytes | None) -> None:
    worker_id = f"fuzz-{uuid.uuid4().hex[:8]}"
    if first is not None:
        sequence, expect_kept = [first], acceptable_first(first, worker_id)
    else:
        assert later is not None
        sequence = [frames.encode(hello(worker_id)), later]
        expect_kept = acceptable_later(later)
    code = asyncio.run(send_frames(target.ws_url, worker_id, sequence))
    if expect_kept:
        assert code in (None, 1000, 1001), code  # goodbye may end it normally
    else:
        assert code == frames.POLICY_VIOLATION_CLOSE_CODE


@FUZZ
@given(data=st.one_of(st.binary(max_size=256), truncated()))
def test_random_first_frames_close_only_that_connection(
    target: RunningDispatcher, data: bytes
) -> None:
    """Random or truncated bytes as the first frame: 1008 unless they are a valid Hello."""
    check(target, data, None)


@FUZZ
@given(data=st.one_of(st.binary(max_size=256), truncated(), st.text(max_size=20).map(str.encode)))
def test_random_frames_after_hello_close_only_that_connection(
    target: RunningDispatcher, data: bytes
) -> None:
    """Random or truncated bytes after a valid Hello: 1008 unless a valid later message."""
    check(target, None, data)


def test_text_frames_are_refused(target: RunningDispatcher) -> None:
    """A text frame (the protocol is binary) closes the connection with 1008."""

    async def run() -> int | None:
        async with websockets.connect(
            target.ws_url, additional_headers={"Worker-Id": "texty"}, ping_interval=None
        ) as ws:
            await ws.send("hello?")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return ws.close_code

    assert asyncio.run(run()) == frames.POLICY_VIOLATION_CLOSE_CODE


def test_steady_worker_and_http_survived(target: RunningDispatcher) -> None:
    """After all that the original worker is still connected (never re-joined) and serves."""
    record = target.core.registry.workers["steady"]
    body = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}
    answer = httpx.post(f"{target.base_url}/run-task", json=body, timeout=30)
    assert answer.status_code == 200 and answer.json()["worker_id"] == "steady"
    assert target.core.registry.workers["steady"] is record
    assert sorted(target.core.registry.workers) == ["steady"]
