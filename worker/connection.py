"""The worker's websocket link to one dispatcher (a worker holds one per dispatcher).

`async for ws in websockets.connect(...)` reconnects with exponential backoff and
full jitter; every (re)connection starts with `Hello`. Outgoing messages go through
an outbox: a TaskResult that could not be sent (connection down) stays there and is
sent after the next Hello (state reports, `LabelsChanged` and `Occupancy`, are dropped
instead: Hello carries the full state). The results waiting there are indexed by task id
(`queued_result`): a task id sent again through another dispatcher while this one is down is
answered with its waiting result instead of being run twice (worker/results.py). A frame
from the dispatcher that breaks the protocol closes the connection with 1008 and the loop
reconnects.

    IDLE --run--> CONNECTING --handshake--> OPEN --lost--> CONNECTING ...
                                                  --close--> CLOSED
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import deque
from collections.abc import Callable, Generator

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from proto import smartrouting_pb2 as pb
from proto.frames import (
    MAX_FRAME_BYTES,
    POLICY_VIOLATION_CLOSE_CODE,
    FrameDecodeError,
    decode_dispatcher_message,
    encode,
)
from worker.errors import ConfigError

log = logging.getLogger(__name__)


#: Messages that carry the worker's whole state; a newer one or a Hello replaces them.
_STATE_REPORTS = frozenset({"labels_changed", "occupancy"})


class ConnectionState(enum.Enum):
    """Where the link to the dispatcher stands."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


def jittered_backoff(
    initial_s: float = 0.1, max_s: float = 5.0, factor: float = 2.0
) -> Callable[[], Generator[float]]:
    """Delays for reconnect attempts: exponential, capped, with full jitter."""

    def delays() -> Generator[float]:
        ceiling = initial_s
        while True:
            yield random.uniform(ceiling / 2, ceiling)
            ceiling = min(max_s, ceiling * factor)

    return delays


class DispatcherConnection:
    """Keeps one worker connected to one dispatcher and carries its messages."""

    def __init__(
        self,
        url: str,
        worker_id: str,
        hello: Callable[[], pb.Hello],
        on_message: Callable[[pb.DispatcherMessage], None],
        ping_interval_s: float = 10.0,
        max_backoff_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.worker_id = worker_id
        self.hello = hello
        self.on_message = on_message
        self.ping_interval_s = ping_interval_s
        self.max_backoff_s = max_backoff_s
        self.token = token
        self.state = ConnectionState.IDLE
        self.connections = 0
        self.opened = asyncio.Event()
        self._outbox: deque[pb.WorkerMessage] = deque()
        #: The TaskResult messages in `_outbox`, by task id (the latest one of an id).
        self._queued_results: dict[str, pb.WorkerMessage] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._ws: websockets.ClientConnection | None = None
        self._welcomed = False
        #: The dispatcher sent Drain: no new task from it until its next Welcome.
        self.drained = False

    # -- outgoing ------------------------------------------------------------

    def send(self, message: pb.WorkerMessage) -> None:
        """Queue a message; it is sent now if connected, else after the next Hello."""
        self._outbox.append(message)
        self._wake.set()

    def send_result(self, result: pb.TaskResult) -> None:
        """Queue a TaskResult (kept across reconnects until sent)."""
        message = pb.WorkerMessage(task_result=result)
        self._queued_results[result.task_id] = message
        self.send(message)

    def queued_result(self, task_id: str) -> pb.TaskResult | None:
        """The result for `task_id` still waiting in the outbox (not yet sent), if any."""
        message = self._queued_results.get(task_id)
        return message.task_result if message is not None else None

    def queued_results(self) -> list[pb.TaskResult]:
        """Every result still waiting in the outbox."""
        return [message.task_result for message in self._queued_results.values()]

    @property
    def pending(self) -> int:
        """Messages not yet handed to an open connection."""
        return len(self._outbox)

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False if it did not empty in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._outbox

    async def _sender(self, ws: websockets.ClientConnection) -> None:
        while True:
            while self._outbox:
                message = self._outbox[0]
                await ws.send(encode(message))
                self._outbox.popleft()
                self._unqueue(message)
            self._wake.clear()
            await self._wake.wait()

    def _unqueue(self, message: pb.WorkerMessage) -> None:
        """`message` left the outbox: drop it from the index if it is the one indexed."""
        if message.WhichOneof("body") == "task_result":
            task_id = message.task_result.task_id
            if self._queued_results.get(task_id) is message:
                del self._queued_results[task_id]

    # -- loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, say Hello, pump messages; reconnect until `close()`."""
        delays = jittered_backoff(max_s=self.max_backoff_s)
        while not self._closing:
            try:
                await self._connect_loop(delays)
            except InvalidURI as exc:
                raise ConfigError(f"invalid dispatcher URL {self.url!r}: {exc}") from exc
            except (InvalidHandshake, OSError) as exc:
                # A fatal handshake answer (e.g. 403 for a duplicate id): keep trying slowly.
                log.warning("dispatcher refused the connection: %s", exc)
                await asyncio.sleep(self.max_backoff_s * random.uniform(0.5, 1.0))
        self.state = ConnectionState.CLOSED

    async def _connect_loop(self, delays: Callable[[], Generator[float]]) -> None:
        self.state = ConnectionState.CONNECTING
        headers = {"Worker-Id": self.worker_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connector = websockets.connect(
            self.url,
            additional_headers=headers,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_interval_s * 2,
            max_size=MAX_FRAME_BYTES,
            open_timeout=10,
            close_timeout=5,
            reconnect_delays=delays,
        )
        refused = delays()
        async for ws in connector:
            if self._closing:
                await ws.close(1001, "worker shutting down")
                return
            self._welcomed = False
            try:
                await self._session(ws)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION_CLOSE_CODE:
                    # e.g. "invalid worker token": say so loudly, it will not fix itself.
                    log.error("dispatcher refused this worker: %s", exc.rcvd.reason)
                else:
                    log.info(
                        "dispatcher connection closed: %s",
                        exc,
                        extra={"event": "link_down", "url": self.url},
                    )
            finally:
                self._ws = None
                self.opened.clear()
                if not self._closing:
                    self.state = ConnectionState.CONNECTING
            if self._closing:
                return
            if self._welcomed:
                refused = delays()
            else:
                # Closed before Welcome (e.g. our old connection is still registered):
                # websockets resets its backoff after any handshake, so back off here.
                await asyncio.sleep(next(refused))

    async def _session(self, ws: websockets.ClientConnection) -> None:
        # Hello goes first, ahead of anything queued while disconnected. It carries the
        # full label and slot state, so state reports queued meanwhile are stale: drop them.
        await ws.send(encode(pb.WorkerMessage(hello=self.hello())))
        kept = [m for m in self._outbox if m.WhichOneof("body") not in _STATE_REPORTS]
        self._outbox = deque(kept)
        self._ws = ws
        self.connections += 1
        self.state = ConnectionState.OPEN
        self.opened.set()
        log.info("connected to %s as %s", self.url, self.worker_id)
        sender = asyncio.create_task(self._sender(ws), name="worker-sender")
        try:
            async for frame in ws:
                try:
                    message = decode_dispatcher_message(frame)
                except FrameDecodeError as exc:
                    log.warning("bad frame from dispatcher, closing with 1008: %s", exc)
                    await ws.close(POLICY_VIOLATION_CLOSE_CODE, "invalid frame")
                    return
                if message.WhichOneof("body") == "welcome":
                    self._welcomed = True
                self.on_message(message)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def close(self, code: int = 1001, reason: str = "worker shutting down") -> None:
        """Stop reconnecting and close the current connection with `code`."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.close(code, reason)
        self.state = ConnectionState.CLOSED
