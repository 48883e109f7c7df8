"""The worker's own HTTP server: Kubernetes probes and Prometheus metrics (`--http-port`).

- `GET /livez`: 200 while the worker's event loop answers (it serves this very request).
- `GET /readyz`: 200 when the worker can take tasks: running (not starting, not draining),
  its engine up, and at least one dispatcher link open; else 503 with a JSON reason and
  `Retry-After`. `not_ready_because` is the rule, a pure function of a `Readiness` snapshot.
- `GET /metrics`: worker/observability.py, Prometheus text format.

The server is uvicorn serving a small Starlette app on the worker's own event loop, started
before the engine (so liveness answers while tritonserver starts) and stopped after the
worker's shutdown. Signals stay the worker's: uvicorn's own signal capture is switched off,
and the socket is bound here, so a port in use is a clean `ConfigError` (docs/architecture.md
§3.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.runtime import Worker

log = logging.getLogger(__name__)

#: Seconds a not-ready answer tells the prober to wait (a reconnect takes about this long).
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Readiness:
    """What readiness depends on, read at one moment."""

    state: str
    engine_up: bool
    links_open: int


def not_ready_because(now: Readiness) -> str | None:
    """Why the worker cannot take tasks now, or None when it can."""
    if now.state != "running":
        return f"worker is {now.state}"
    if not now.engine_up:
        return "engine is not up"
    if now.links_open < 1:
        return "no dispatcher link is open"
    return None


def create_app(readiness: Callable[[], Readiness], metrics: Callable[[], bytes]) -> Starlette:
    """The probes app: `readiness()` and `metrics()` are read on every request."""

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        now = readiness()
        reason = not_ready_because(now)
        body = {
            "status": "ready" if reason is None else "not_ready",
            "state": now.state,
            "engine_up": now.engine_up,
            "links_open": now.links_open,
            "detail": reason,
        }
        if reason is None:
            return JSONResponse(body)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse(body, status_code=503, headers=headers)

    async def metrics_page(request: Request) -> Response:
        return Response(metrics(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse({"error": "not_found", "detail": str(request.url.path)}, status)

    routes = [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on a loop it does not own: the worker handles SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; ConfigError when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve probes on {host}:{port}: {exc}") from exc
    sock.set_inheritable(True)
    return sock


def readiness_of(worker: Worker) -> Readiness:
    """The worker's readiness inputs now."""
    engine = worker.engine
    return Readiness(
        state=worker.state.value,
        engine_up=engine is not None and engine.healthy(),
        links_open=worker.links_open(),
    )


@contextlib.asynccontextmanager
async def serving_probes(worker: Worker) -> AsyncIterator[int | None]:
    """Serve /livez, /readyz and /metrics for `worker` while inside; yields the port (None
    when `--http-port` is unset)."""
    config = worker.config
    if config.http_port is None:
        yield None
        return
    sock = bind(config.http_host, config.http_port)
    port = int(sock.getsockname()[1])
    app = create_app(lambda: readiness_of(worker), worker.observability.render)
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # smartrouting.logs' handler writes uvicorn's lines too
            access_log=False,  # a probe every few seconds is not news
            timeout_graceful_shutdown=2,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="worker-probes")
    log.info(
        "serving /livez, /readyz and /metrics on %s:%d",
        config.http_host,
        port,
        extra={"event": "probes_started", "port": port},
    )
    try:
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(serving, 5)
        sock.close()
