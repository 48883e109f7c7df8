"""HTTP requests counted and logged: one metric sample and one access-log line per request.

`AccessMiddleware` (pure ASGI, outermost) labels each request by its route's template
(`/tasks/{task_id}`, never the raw path, so the metric's series stay bounded), method and
status, observes its duration, and logs one line on `dispatcher.access` with the same fields.
Probe, scrape and status-page polls are logged at DEBUG, so INFO shows what callers did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("dispatcher.access")

#: Methods counted by name; anything else is "other" (a bounded label).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Routes polled by machines: their lines go to DEBUG.
QUIET_ROUTES = frozenset({"/livez", "/readyz", "/health", "/metrics", "/status.json"})
#: The status of a request whose client went away before any answer (nginx's convention).
CLIENT_CLOSED = 499


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template of the route serving `scope`, or "unmatched"."""
    route = scope.get("route")
    if route is None:  # refused before routing (auth), or no route: match it here
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class AccessMiddleware:
    """Counts, times and logs every HTTP request of the app."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        except BaseException:
            status = status or 500
            raise
        finally:
            self._record(scope, status or CLIENT_CLOSED, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, duration_s: float) -> None:
        route = route_template(scope, self.routes)
        method = scope["method"] if scope["method"] in METHODS else "other"
        dispatcher: Any = scope.get("state", {}).get("dispatcher")
        if dispatcher is not None:
            metrics = dispatcher.metrics
            metrics.http_requests.labels(method, route, str(status)).inc()
            metrics.http_duration.labels(route).observe(duration_s)
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        if not log.isEnabledFor(level):
            return
        client = scope.get("client")
        duration_ms = round(duration_s * 1000.0, 3)
        log.log(
            level,
            "%s %s %d %.1f ms",
            method,
            scope["path"],
            status,
            duration_ms,
            extra={
                "event": "http_request",
                "method": method,
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
                "client": f"{client[0]}:{client[1]}" if client else None,
            },
        )
