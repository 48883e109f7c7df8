"""Serving the dispatcher with uvicorn: its settings, and a stop that drains the dispatcher first.

uvicorn's own shutdown closes every websocket (1012) and then waits for open requests, which
would leave callers of queued tasks waiting for workers that are already gone. So a stop, by
signal (`handle_exit`, uvicorn's extension point) or by `stop()` from another thread, first
runs the dispatcher's shutdown sequence (callers answered, workers told to drain, sockets
closed with 1001) and only then lets uvicorn exit. The sequence runs once; the lifespan's own
call to it at exit returns at once (docs/architecture.md §3.4).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from dispatcher.app import create_app
from dispatcher.config import Config
from dispatcher.protocols import DispatcherHttpProtocol, DispatcherWebSocketProtocol
from dispatcher.runtime import Dispatcher


def uvicorn_config(app: Any, config: Config, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings of a dispatcher: httptools and websockets-sansio (with the fixes
    of `dispatcher.protocols`), idle and concurrency limits, ping/pong keepalive."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "lifespan": "on",
        "http": DispatcherHttpProtocol,
        "ws": DispatcherWebSocketProtocol,
        # Connections idle (before their first request, too) are dropped after this; past
        # limit_concurrency new requests get 503 (size the nofile limit above it: the chart's
        # docs/kubernetes.md says how).
        "timeout_keep_alive": config.idle_timeout_s,
        "limit_concurrency": config.max_connections or None,
        "ws_ping_interval": config.ws_ping_interval_s,
        "ws_ping_timeout": config.ws_ping_timeout_s,
        "ws_max_size": 16 * 1024 * 1024,
        # Frames are small protobuf; compression costs CPU on both sides for nothing.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": config.shutdown_timeout_s + 5,
        # Logging is `smartrouting.logs`' (one format for uvicorn's lines and ours); the
        # access log is `dispatcher.access`, with the route template and the duration.
        "log_config": None,
        "access_log": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class DispatcherServer(uvicorn.Server):
    """uvicorn serving one dispatcher app; `app.state.dispatcher` is its `Dispatcher`."""

    def __init__(self, config: Config, **overrides: Any) -> None:
        self.app = create_app(config)
        super().__init__(uvicorn_config(self.app, config, **overrides))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._stopping: asyncio.Future[None] | None = None  # a hard reference to the drain

    @property
    def dispatcher(self) -> Dispatcher | None:
        """The running dispatcher (None before the lifespan started it)."""
        return getattr(self.app.state, "dispatcher", None)

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM: the first drains the dispatcher, then uvicorn exits; a second
        one is uvicorn's (a second Ctrl-C forces the exit)."""
        uvicorn_exit = functools.partial(super().handle_exit, sig, frame)
        if not self._stop_requested and self._loop is not None and self.dispatcher is not None:
            self._stop_requested = True
            self._loop.call_soon_threadsafe(self._drain, uvicorn_exit)
            return
        uvicorn_exit()

    def stop(self) -> None:
        """Stop from any thread: drain the dispatcher, then exit uvicorn."""
        if self._stop_requested or self._loop is None:
            self.should_exit = True
            return
        self._stop_requested = True
        self._loop.call_soon_threadsafe(self._drain, self._exit)

    def _exit(self) -> None:
        self.should_exit = True

    def _drain(self, then: Callable[[], None]) -> None:
        dispatcher = self.dispatcher

        async def drain_then_exit() -> None:
            try:
                if dispatcher is not None:
                    await dispatcher.shutdown()
            finally:
                then()

        self._stopping = asyncio.ensure_future(drain_then_exit())


def absorb_exit_signals() -> None:
    """Make SIGINT/SIGTERM no-ops outside the server.

    uvicorn restores the handlers it found and raises the signal it caught again once it has
    shut down; with these in place that second delivery does nothing, so a graceful stop
    exits with code 0 (Kubernetes and `task` read a signal death as a failure).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)


def tune_garbage_collector() -> None:
    """Keep full garbage collections off the request path.

    The dispatcher holds many long-lived objects (task records, results kept for their TTL),
    and CPython's default thresholds run full collections often enough to stall the event
    loop for tens of milliseconds: the micro-benchmark's p99 at 1,000-2,000 paced tasks/s
    was 60-120 ms with the defaults and 1.2-5 ms with these settings (p50 unchanged).
    Objects alive at start-up (modules, the app) are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
