"""The `/worker-listen` websocket endpoint: one connection per worker, protobuf frames.

Session: with a worker token configured, `Authorization: Bearer <token>` is checked first
(else close 1008 "invalid worker token" / "worker token required"); the `Worker-Id` header
is required and must not belong to a live connection; the
first frame must be `Hello` (same id); the dispatcher answers `Welcome`; then `TaskResult`,
`LabelsChanged`, `Occupancy` (a worker shared with other dispatchers, docs/architecture.md
§6.6) and `Goodbye` arrive while `Task`, `Cancel` and `Drain` go out. A frame that
does not parse, or a message out of order, closes only that connection with 1008. Refusals
accept the socket first and then close it, so the worker sees the reason in the close frame.
Keepalive is uvicorn's websocket ping/pong (`ws_ping_interval`/`ws_ping_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from dispatcher.auth import AuthSettings
from dispatcher.core import GOING_AWAY_CLOSE_CODE
from dispatcher.errors import ProtocolViolation
from dispatcher.runtime import Dispatcher
from dispatcher.worker_input import (
    MAX_WORKER_ID_CHARS,
    clean_change,
    clean_costs,
    clean_labels,
    clean_result,
    hello_refusal,
    worker_id_refusal,
)
from proto import frames
from proto import smartrouting_pb2 as pb

log = logging.getLogger("dispatcher.workers")

POLICY_VIOLATION = frames.POLICY_VIOLATION_CLOSE_CODE
#: A close frame's reason is at most 123 bytes; ours stay ASCII well under that.
_MAX_REASON = 120


class WebSocketLink:
    """Frames to one worker go through a queue drained by one writer task, in order."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing: tuple[int, str] | None = None
        self.writer = asyncio.create_task(self._write(), name="worker-link-writer")

    def send(self, message: pb.DispatcherMessage) -> None:
        if self._closing is None:
            self._outbox.put_nowait(frames.encode(message))

    async def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
            self._outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self.writer), 5.0)

    async def _write(self) -> None:
        try:
            while True:
                data = await self._outbox.get()
                if data is None:
                    code, reason = self._closing or (GOING_AWAY_CLOSE_CODE, "")
                    await self.websocket.close(code, reason)
                    return
                await self.websocket.send_bytes(data)
        except Exception as exc:  # the socket went away; the reader notices and cleans up
            log.debug("writer stopped: %r", exc)


class WorkerEndpoint:
    """The websocket handler of one app; the dispatcher comes from the lifespan state."""

    def __init__(self, auth: AuthSettings | None = None) -> None:
        self.auth = auth or AuthSettings()
        self._connecting: set[str] = set()

    async def __call__(self, websocket: WebSocket) -> None:
        dispatcher: Dispatcher = websocket.state.dispatcher
        await self.serve(websocket, dispatcher)

    async def serve(self, websocket: WebSocket, dispatcher: Dispatcher) -> None:
        """One worker's session, from the handshake to its departure."""
        core = dispatcher.core
        worker_id = websocket.headers.get("worker-id", "").strip()
        await websocket.accept()
        refusal = self.auth.worker_refusal(websocket.headers) or worker_id_refusal(worker_id)
        if refusal is not None:
            log.warning("worker %r refused: %s", worker_id[:MAX_WORKER_ID_CHARS], refusal)
            await websocket.close(POLICY_VIOLATION, refusal[:_MAX_REASON])
            return
        if not core.accepting:
            await websocket.close(GOING_AWAY_CLOSE_CODE, "dispatcher shutting down")
            return
        if worker_id in core.registry or worker_id in self._connecting:
            reason = f"duplicate Worker-Id {worker_id!r}: already connected"
            await websocket.close(POLICY_VIOLATION, reason[:_MAX_REASON])
            return
        self._connecting.add(worker_id)
        link: WebSocketLink | None = None
        joined = False
        try:
            hello = await self._hello(websocket, worker_id, dispatcher.config.hello_timeout_s)
            link = WebSocketLink(websocket)
            link.send(
                pb.DispatcherMessage(
                    welcome=pb.Welcome(
                        protocol_version=frames.PROTOCOL_VERSION,
                        dispatcher_id=dispatcher.dispatcher_id,
                        policy=dispatcher.config.policy,
                    )
                )
            )
            self._connecting.discard(worker_id)
            core.worker_joined(hello, link)
            joined = True
            await self._serve(websocket, worker_id, dispatcher)
        except ProtocolViolation as exc:
            log.warning("worker %s: %s", worker_id, exc)
            if link is not None:
                await link.close(POLICY_VIOLATION, str(exc)[:_MAX_REASON])
            else:
                with contextlib.suppress(Exception):
                    await websocket.close(POLICY_VIOLATION, str(exc)[:_MAX_REASON])
        except (TimeoutError, WebSocketDisconnect, RuntimeError) as exc:
            log.info("worker %s disconnected: %r", worker_id, exc)
        finally:
            self._connecting.discard(worker_id)
            if joined:
                core.worker_left(worker_id)
            if link is not None:
                link.writer.cancel()

    async def _receive(
        self, websocket: WebSocket, timeout: float | None = None
    ) -> pb.WorkerMessage:
        message: MutableMapping[str, Any] = await asyncio.wait_for(websocket.receive(), timeout)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        data = message.get("bytes")
        if data is None:
            data = message.get("text", "")
        try:
            return frames.decode_worker_message(data)
        except frames.FrameDecodeError as exc:
            raise ProtocolViolation(str(exc)) from exc

    async def _hello(self, websocket: WebSocket, worker_id: str, timeout: float) -> pb.Hello:
        message = await self._receive(websocket, timeout)
        kind = message.WhichOneof("body")
        if kind != "hello":
            raise ProtocolViolation(f"expected Hello first, got {kind}")
        hello = message.hello
        if hello.worker_id and hello.worker_id != worker_id:
            raise ProtocolViolation(
                f"Hello worker_id {hello.worker_id!r} differs from header {worker_id!r}"
            )
        hello.worker_id = worker_id
        if hello.protocol_version and hello.protocol_version != frames.PROTOCOL_VERSION:
            raise ProtocolViolation(
                f"protocol version {hello.protocol_version} is not {frames.PROTOCOL_VERSION}"
            )
        refusal = hello_refusal(hello)
        if refusal is not None:
            raise ProtocolViolation(refusal)
        clean_costs(hello)
        return hello

    async def _serve(self, websocket: WebSocket, worker_id: str, dispatcher: Dispatcher) -> None:
        d = dispatcher.core
        capacity = d.registry.get(worker_id).capacity
        while True:
            message = await self._receive(websocket)
            kind = message.WhichOneof("body")
            if kind == "task_result":
                clean_result(message.task_result, capacity)
                d.worker_result(worker_id, message.task_result)
            elif kind == "labels_changed":
                clean_change(message.labels_changed, capacity)
                d.worker_labels_changed(worker_id, message.labels_changed)
            elif kind == "occupancy":
                _clean_occupancy(message.occupancy, capacity)
                d.worker_occupancy(worker_id, message.occupancy)
            elif kind == "goodbye":
                d.worker_goodbye(worker_id, message.goodbye)
            else:
                raise ProtocolViolation(f"unexpected {kind} after Hello")


def _clean_occupancy(report: pb.Occupancy, capacity: int) -> None:
    """Bound an Occupancy's label lists to the worker's capacity, in place (its slot counts are
    clamped by the registry)."""
    for labels in (report.labels_loaded, report.labels_loading):
        if len(labels) > capacity:
            kept = clean_labels(labels, capacity)
            del labels[:]
            labels.extend(kept)
