"""Kubernetes probes of the dispatcher: `/livez` (the process answers) and `/readyz` (it can
run tasks: at least `--ready-min-workers` workers are connected and it is not shutting down).

A not-ready dispatcher answers 503 with a JSON reason and `Retry-After`; the chart points its
readiness probe at `/readyz`, so callers reach a dispatcher only once it can route
(docs/architecture.md §3.7). Workers dial a Service that publishes not-ready addresses, so
they can connect to a dispatcher that is not ready yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dispatcher.registry import WorkerState

if TYPE_CHECKING:
    from dispatcher.runtime import Dispatcher


class Liveness(msgspec.Struct, forbid_unknown_fields=True):
    """The `/livez` answer."""

    status: Literal["alive"]


class Readiness(msgspec.Struct, forbid_unknown_fields=True):
    """The `/readyz` answer, ready or not."""

    status: Literal["ready", "not_ready"]
    workers: int
    ready_min_workers: int
    detail: str | None = None


def workers_ready(d: Dispatcher) -> int:
    """Connected workers that take tasks (ready or suspended for a moment; not draining)."""
    return sum(w.state is not WorkerState.DRAINING for w in d.core.registry.workers.values())


def not_ready_because(d: Dispatcher) -> str | None:
    """Why the dispatcher cannot run tasks now, or None when it can."""
    if not d.core.accepting:
        return "shutting down"
    needed, connected = d.config.ready_min_workers, workers_ready(d)
    if connected < needed:
        return f"{connected} of the {needed} workers needed are connected"
    return None


async def livez(request: Request) -> Response:
    """`GET /livez`: 200 while the event loop answers."""
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    """`GET /readyz`: 200 when it can run tasks, else 503 with the reason and Retry-After."""
    d: Dispatcher = request.state.dispatcher
    reason = not_ready_because(d)
    body = {
        "status": "ready" if reason is None else "not_ready",
        "workers": workers_ready(d),
        "ready_min_workers": d.config.ready_min_workers,
        "detail": reason,
    }
    if reason is None:
        return JSONResponse(body)
    retry = str(max(1, round(d.config.retry_after_s)))
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry})
