"""A minimal dispatcher-side protocol peer: a real websockets server speaking proto frames.

Lets the worker's protocol be tested without the dispatcher package: it answers Hello
with Welcome, records every frame the worker sends, and sends what the test asks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection

from proto import smartrouting_pb2 as pb
from proto.frames import PROTOCOL_VERSION, decode_worker_message, encode
from tests.support import scaled


@dataclass
class Session:
    """One websocket connection from the worker."""

    ws: ServerConnection
    worker_id: str
    hello: pb.Hello
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None


@dataclass
class ProtocolPeer:
    """Records WorkerMessages in `inbox`; `sessions` lists every connection, in order."""

    inbox: asyncio.Queue[pb.WorkerMessage] = field(default_factory=asyncio.Queue)
    sessions: list[Session] = field(default_factory=list)
    new_session: asyncio.Event = field(default_factory=asyncio.Event)
    server: Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/worker-listen"

    async def _handler(self, ws: ServerConnection) -> None:
        worker_id = ws.request.headers.get("Worker-Id", "") if ws.request else ""
        first = decode_worker_message(await ws.recv())
        assert first.WhichOneof("body") == "hello", first
        session = Session(ws, worker_id, first.hello)
        self.sessions.append(session)
        self.new_session.set()
        await ws.send(
            encode(
                pb.DispatcherMessage(
                    welcome=pb.Welcome(
                        protocol_version=PROTOCOL_VERSION, dispatcher_id="peer", policy="routed"
                    )
                )
            )
        )
        try:
            async for frame in ws:
                await self.inbox.put(decode_worker_message(frame))
        except websockets.ConnectionClosed:
            pass
        finally:
            session.close_code = ws.close_code
            session.closed.set()

    async def start(self) -> ProtocolPeer:
        self.server = await websockets.serve(self._handler, "127.0.0.1", 0)
        self.port = int(next(iter(self.server.sockets)).getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def session(self, index: int, timeout: float = 20.0) -> Session:
        """Wait for the `index`-th connection (0-based)."""

        async def wait() -> Session:
            while len(self.sessions) <= index:
                self.new_session.clear()
                await self.new_session.wait()
            return self.sessions[index]

        return await asyncio.wait_for(wait(), scaled(timeout))

    async def send(self, message: pb.DispatcherMessage, index: int = -1) -> None:
        await self.sessions[index].ws.send(encode(message))

    async def task(
        self,
        task_id: str,
        label: str,
        task_type: str = "sample_task",
        params: str = "{}",
        **extra: Any,
    ) -> None:
        await self.send(
            pb.DispatcherMessage(
                task=pb.Task(
                    task_id=task_id,
                    task_type=task_type,
                    label=label,
                    parameters_json=params,
                    attempt=1,
                    **extra,
                )
            )
        )  # type: ignore[arg-type]

    async def next(self, kind: str | None = None, timeout: float = 20.0) -> pb.WorkerMessage:
        """The next message from the worker (skipping others when `kind` is given)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), scaled(timeout))
            if kind is None or message.WhichOneof("body") == kind:
                return message

    async def result(self, timeout: float = 20.0) -> pb.TaskResult:
        return (await self.next("task_result", timeout)).task_result


@contextlib.asynccontextmanager
async def protocol_peer() -> AsyncIterator[ProtocolPeer]:
    """A running ProtocolPeer for the `async with` block."""
    peer = await ProtocolPeer().start()
    try:
        yield peer
    finally:
        await peer.stop()
