"""The dispatcher's one typed configuration object, built from flags or environment variables.

Every flag of `python -m dispatcher` has an environment variable (docs/interfaces.md section 2);
a flag given on the command line wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal, cast

Policy = Literal["routed", "random"]
POLICIES: tuple[Policy, ...] = ("routed", "random")
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    """Settings of one dispatcher; frozen, so an app never sees them change."""

    host: str = "0.0.0.0"
    port: int = 8080
    policy: Policy = "routed"
    uploader_url: str | None = None
    #: Tasks waiting for a worker before /run-task answers 429.
    max_queue: int = 10_000
    #: Default deadline of a task; a request may pass a shorter or longer "timeout_s".
    task_timeout_s: float = 300.0
    #: Dispatches of one task (the first included) before it fails when workers keep leaving.
    max_attempts: int = 3
    log_level: LogLevel = "info"
    #: How long results of finished tasks stay readable at /tasks/{id}.
    result_ttl_s: float = 600.0
    #: Largest accepted request body.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Answer 503 at once when no worker is connected instead of queueing until the deadline.
    reject_without_workers: bool = False
    #: Websocket keepalive (uvicorn's ping/pong): a dead worker is noticed within about
    #: interval + timeout seconds.
    ws_ping_interval_s: float = 5.0
    ws_ping_timeout_s: float = 10.0
    #: How long a worker may take to say Hello after connecting.
    hello_timeout_s: float = 10.0
    #: Graceful shutdown: how long running tasks may take to finish before they are failed.
    shutdown_timeout_s: float = 10.0
    #: After a running task's deadline the worker is sent Cancel; if it has not answered
    #: within this grace its slot is freed anyway (a worker that never answers cannot leak it).
    cancel_grace_s: float = 10.0
    #: Seconds suggested to callers in Retry-After on 429/503.
    retry_after_s: float = 1.0
    #: Routed policy: a queued task is served by any idle worker once it has waited this many
    #: times its label's learned load time (starvation guard).
    starvation_factor: float = 2.0
    #: Seed of the random policy's choices (None: not reproducible).
    seed: int | None = None
    #: Deepest nesting of a task's parameters JSON (deeper: 422).
    max_json_depth: int = 32
    #: Early checks of `embed_texts`-style parameters (the worker checks again): most texts
    #: per task and longest text, in characters (more: 422).
    max_texts: int = 256
    max_text_chars: int = 20_000
    #: Unfinished tasks one caller (API key, else client address) may have; 0: no limit.
    max_tasks_per_caller: int = 0
    #: SQLite file keeping asynchronous tasks across restarts (DISPATCHER_STATE_DB);
    #: None: not kept (see docs/reliability.md).
    state_db: str | None = None
    #: Shared token workers present on /worker-listen (SMARTROUTING_WORKER_TOKEN).
    worker_token: str | None = field(default=None, repr=False)
    #: Keys callers present on the client endpoints (SMARTROUTING_API_KEYS, comma-separated).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Key for /upload-model (SMARTROUTING_ADMIN_KEY).
    admin_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {self.policy!r}")
        if self.max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.task_timeout_s <= 0:
            raise ValueError("task_timeout_s must be > 0")
        if isinstance(self.api_keys, str):  # a comma-separated string from a flag or the env
            object.__setattr__(self, "api_keys", parse_keys(self.api_keys))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Settings from `DISPATCHER_*` variables (and `RANDOM_DISPATCH=true`)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(_ENV_NAMES.get(f.name, f"DISPATCHER_{f.name.upper()}"))
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw)
        if env.get("RANDOM_DISPATCH", "").strip().lower() in _TRUE:
            values["policy"] = "random"
        return cls(**values)  # type: ignore[arg-type]


#: Settings shared with the other components (the Helm chart sets them from one Secret).
_ENV_NAMES = {
    "worker_token": "SMARTROUTING_WORKER_TOKEN",
    "api_keys": "SMARTROUTING_API_KEYS",
    "admin_key": "SMARTROUTING_ADMIN_KEY",
}


def parse_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated keys, blanks dropped."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def _convert(name: str, raw: str) -> object:
    # With postponed annotations, field types are the strings written above.
    kind = {f.name: f.type for f in fields(Config)}[name]
    if kind == "bool":
        return raw.strip().lower() in _TRUE
    if kind == "tuple[str, ...]":
        return parse_keys(raw)
    if kind in ("int", "int | None"):
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m dispatcher`; flags mirror the environment."""
    p = argparse.ArgumentParser(
        prog="python -m dispatcher",
        description="Smart-routing dispatcher: HTTP API for callers, websocket for workers.",
    )
    p.add_argument("--host", help="bind address (DISPATCHER_HOST, default 0.0.0.0)")
    p.add_argument("--port", type=int, help="bind port (DISPATCHER_PORT, default 8080)")
    p.add_argument(
        "--policy",
        choices=POLICIES,
        help="routing policy (DISPATCHER_POLICY; RANDOM_DISPATCH=true means random)",
    )
    p.add_argument("--uploader-url", help="uploader base URL (DISPATCHER_UPLOADER_URL)")
    p.add_argument("--max-queue", type=int, help="queued tasks before 429 (default 10000)")
    p.add_argument("--task-timeout-s", type=float, help="default task deadline (default 300)")
    p.add_argument("--max-attempts", type=int, help="dispatches per task (default 3)")
    p.add_argument("--result-ttl-s", type=float, help="how long results stay at /tasks/{id}")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 4 MiB)")
    p.add_argument(
        "--reject-without-workers",
        action="store_true",
        default=None,
        help="answer 503 at once when no worker is connected",
    )
    p.add_argument("--ws-ping-interval-s", type=float, help="websocket ping interval")
    p.add_argument("--ws-ping-timeout-s", type=float, help="websocket ping timeout")
    p.add_argument("--shutdown-timeout-s", type=float, help="graceful shutdown bound")
    p.add_argument("--hello-timeout-s", type=float, help="time a worker has to say Hello")
    p.add_argument("--cancel-grace-s", type=float, help="free a cancelled task's slot after")
    p.add_argument("--retry-after-s", type=float, help="Retry-After on 429/503")
    p.add_argument("--seed", type=int, help="seed of the random policy")
    p.add_argument(
        "--starvation-factor", type=float, help="serve a task anyway after this many load times"
    )
    p.add_argument("--max-json-depth", type=int, help="deepest parameters JSON (default 32)")
    p.add_argument("--max-texts", type=int, help="most texts per task (default 256)")
    p.add_argument("--max-text-chars", type=int, help="longest text (default 20000)")
    p.add_argument(
        "--max-tasks-per-caller", type=int, help="unfinished tasks per caller (0: no limit)"
    )
    p.add_argument("--state-db", help="SQLite file keeping async tasks (DISPATCHER_STATE_DB)")
    p.add_argument("--worker-token", help="token workers must present (SMARTROUTING_WORKER_TOKEN)")
    p.add_argument("--api-keys", help="comma-separated caller keys (SMARTROUTING_API_KEYS)")
    p.add_argument("--admin-key", help="key for /upload-model (SMARTROUTING_ADMIN_KEY)")
    p.add_argument(
        "--log-level", choices=("critical", "error", "warning", "info", "debug"), help="log level"
    )
    return p


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Environment first, then the flags given on the command line on top."""
    args = build_parser().parse_args(argv)
    base = Config.from_env(environ)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "policy" in overrides:
        overrides["policy"] = cast(Policy, overrides["policy"])
    return replace(base, **overrides)
