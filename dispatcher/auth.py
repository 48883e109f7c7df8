"""Authentication of workers, callers and admins; every check is off unless its secret is set.

- Workers present the shared token on `/worker-listen` as `Authorization: Bearer <token>`
  (`SMARTROUTING_WORKER_TOKEN`, `--worker-token`). A refused worker's socket is accepted and
  then closed with 1008 and a reason, so the worker sees why (`dispatcher.workers`).
- Callers of the client endpoints present one of `SMARTROUTING_API_KEYS` (comma-separated) as
  `Authorization: Bearer <key>` or `X-API-Key: <key>`; without a valid key: 401.
- `/upload-model`, `/uploads/{id}`, `POST /models/{name}/rollback` and `DELETE /models/{name}`
  take only `SMARTROUTING_ADMIN_KEY` when it is set (`admin_only`): 401 without a key, 403
  with a valid API key that is not the admin key. The admin key is accepted everywhere.
- `/health`, `/livez`, `/readyz`, `/openapi.json`, `/docs` and the status page's HTML
  (`/dashboard`) stay open; `/metrics`, `/stats` and `/status.json` need a key like the rest
  (a Prometheus scrape sends one as a bearer token).

Secrets are compared with `hmac.compare_digest` (constant time in the secret's content).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatcher.errors import DispatcherError, Forbidden, Unauthorized, render_error

#: Paths that never ask for a key (probes, the API description, the status page's HTML, which
#: holds no data). /metrics, /stats and /status.json name every caller's labels, so they need
#: a key like the rest when keys are configured.
OPEN_PATHS = frozenset(
    {"/health", "/livez", "/readyz", "/openapi.json", "/docs", "/", "/dashboard"}
)
#: Paths that need the admin key when one is set (with the routes of `admin_only`).
ADMIN_PATHS = frozenset({"/upload-model"})


def admin_only(path: str, method: str = "GET") -> bool:
    """Whether `method` on `path` needs the admin key when one is set: uploads and their
    statuses, a model's rollback and its delete (reading the catalogue stays a caller's)."""
    if path in ADMIN_PATHS or path.startswith("/uploads/"):
        return True
    if path.startswith("/models/"):
        return path.endswith("/rollback") or method.upper() == "DELETE"
    return False


def parse_keys(raw: str | Iterable[str] | None) -> tuple[str, ...]:
    """Keys from a comma-separated string (or an iterable), blanks dropped."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(key.strip() for key in items if key.strip())


def presented_secret(headers: Mapping[str, str]) -> str | None:
    """The secret a request carries: `Authorization: Bearer <s>`, else `X-API-Key: <s>`."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def matches(secret: str | None, candidates: Iterable[str]) -> bool:
    """Whether `secret` equals one of `candidates`, compared in constant time.

    Every candidate is compared (no early exit), so timing does not tell which one matched.
    """
    if not secret:
        return False
    given = secret.encode("utf-8", "surrogatepass")
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(given, candidate.encode("utf-8", "surrogatepass"))
    return found


@dataclass(frozen=True)
class AuthSettings:
    """The secrets of one dispatcher; empty means that check is off."""

    worker_token: str | None = None
    api_keys: tuple[str, ...] = ()
    admin_key: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether any check is on."""
        return bool(self.worker_token or self.api_keys or self.admin_key)

    def worker_refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a worker connection is refused (the close reason), or None if it may join."""
        if not self.worker_token:
            return None
        secret = presented_secret(headers)
        if secret is None:
            return "worker token required (Authorization: Bearer <SMARTROUTING_WORKER_TOKEN>)"
        if not matches(secret, (self.worker_token,)):
            return "invalid worker token"
        return None

    def check_http(self, path: str, headers: Mapping[str, str], method: str = "GET") -> None:
        """Raise `Unauthorized` (401) or `Forbidden` (403) when the request may not go on."""
        if path in OPEN_PATHS:
            return
        secret = presented_secret(headers)
        is_admin = bool(self.admin_key) and matches(secret, (self.admin_key or "",))
        if admin_only(path, method) and self.admin_key:
            if is_admin:
                return
            if secret is None:
                raise Unauthorized("admin key required (Authorization: Bearer <key>)")
            if matches(secret, self.api_keys):
                raise Forbidden(f"{path} needs the admin key, not an API key")
            raise Unauthorized("invalid admin key")
        if not self.api_keys or is_admin:
            return
        if secret is None:
            raise Unauthorized("API key required (Authorization: Bearer <key> or X-API-Key)")
        if not matches(secret, self.api_keys):
            raise Unauthorized("invalid API key")


class AuthMiddleware:
    """Pure ASGI middleware applying `AuthSettings.check_http` to HTTP requests.

    Websockets pass through: `/worker-listen` checks the worker token itself, after accepting,
    so the refusal reaches the worker as a close reason.
    """

    def __init__(self, app: ASGIApp, settings: AuthSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.enabled:
            try:
                self.settings.check_http(scope["path"], Headers(scope=scope), scope["method"])
            except DispatcherError as exc:
                response = render_error(scope["path"], exc)  # OpenAI's shape under /v1/
                response.headers["WWW-Authenticate"] = 'Bearer realm="smart-routing"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
