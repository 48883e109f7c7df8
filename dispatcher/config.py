"""The dispatcher's one typed configuration object, built from flags or environment variables.

Every field below is a flag of `python -m dispatcher` and an environment variable
(`DISPATCHER_<FIELD>` unless it names another; docs/interfaces.md section 2); a flag given on
the command line wins over the environment, which wins over the default. `python -m dispatcher
--help` lists them all with their defaults (smartrouting.config derives the parser).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from smartrouting import config as toolkit
from smartrouting.config import setting
from smartrouting.logs import LogFormat

Policy = Literal["routed", "random"]
POLICIES: tuple[Policy, ...] = ("routed", "random")
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    """Settings of one dispatcher; frozen, so an app never sees them change."""

    env_prefix: ClassVar[str] = "DISPATCHER_"

    host: str = setting("0.0.0.0", "bind address")
    port: int = setting(8080, "bind port")
    policy: Policy = setting("routed", "routing policy (RANDOM_DISPATCH=true also selects random)")
    uploader_url: str | None = setting(None, "base URL of the uploader behind /upload-model")
    # Several dispatchers (docs/architecture.md §4.1): the uploader's GET /models is the truth
    # of what is published; each dispatcher reconciles its catalogue with it this often.
    catalogue_sync_s: float = setting(
        5.0,
        "seconds between reconciling the model catalogue with the uploader's models "
        "(publishes and deletes made through other dispatchers); 0: read once at start",
    )
    max_queue: int = setting(10_000, "tasks waiting for a worker before /run-task answers 429")
    task_timeout_s: float = setting(
        300.0, "default deadline of a task; a request may pass its own timeout_s"
    )
    max_attempts: int = setting(
        3, "dispatches of one task (the first included) before it fails as workers leave"
    )
    log_level: LogLevel = setting("info", "log level")
    log_format: LogFormat = setting(
        "text", "log lines: text, or json (one object per line, for log collectors)"
    )
    result_ttl_s: float = setting(600.0, "how long results of finished tasks stay at /tasks/{id}")
    # Memory bounds (docs/reliability.md): results by count and bytes as well as time, and the
    # parameters unfinished tasks hold, in all and per caller.
    max_results: int = setting(
        100_000, "finished results kept at /tasks/{id}; past it the oldest go first (0: no limit)"
    )
    max_result_bytes: int = setting(
        256 * 1024 * 1024,
        "bytes of finished results kept; past it the oldest go first (0: no limit)",
    )
    max_queued_bytes: int = setting(
        256 * 1024 * 1024,
        "bytes of parameters all unfinished tasks may hold before new ones get 429 (0: no limit)",
    )
    max_caller_bytes: int = setting(
        64 * 1024 * 1024,
        "bytes of parameters one caller's unfinished tasks may hold before 429 (0: no limit)",
    )
    max_body_bytes: int = setting(4 * 1024 * 1024, "largest accepted request body, in bytes")
    # Probes and the no-worker answer (docs/architecture.md §3.7).
    ready_min_workers: int = setting(
        1, "/readyz answers 200 only while at least this many workers are connected"
    )
    no_worker_grace_s: float = setting(
        10.0,
        "a task accepted while no worker is connected fails 503 no_workers after this long "
        "if still none is (0: wait for the task's deadline)",
    )
    reject_without_workers: bool = setting(
        False, "answer 503 at once when no worker is connected instead of queueing"
    )
    # uvicorn's websocket ping/pong: a dead worker is noticed within interval + timeout.
    ws_ping_interval_s: float = setting(5.0, "websocket keepalive ping interval")
    ws_ping_timeout_s: float = setting(10.0, "websocket keepalive pong timeout")
    hello_timeout_s: float = setting(10.0, "how long a worker may take to say Hello")
    idle_timeout_s: float = setting(
        5.0, "drop an HTTP connection idle this long, before its first request too"
    )
    max_connections: int = setting(
        4096, "connections and requests at once before new ones get 503 (0: no limit)"
    )
    shutdown_timeout_s: float = setting(
        10.0, "graceful shutdown: how long running tasks may take to finish before failing"
    )
    # A worker that never answers Cancel cannot leak the slot: it is freed after this grace.
    cancel_grace_s: float = setting(
        10.0, "after a task's deadline, free its slot this long after sending Cancel"
    )
    retry_after_s: float = setting(1.0, "seconds suggested in Retry-After on 429/503")
    # Per-worker health (docs/architecture.md §3.2): a dispatch not answered within
    # max(soft_timeout_min_s, factor x its expected load + run time) goes elsewhere, and a
    # worker that fails or times out breaker_failures times in a row is suspended.
    soft_timeout_factor: float = setting(
        10.0, "re-dispatch a task elsewhere after this many times its expected time"
    )
    soft_timeout_min_s: float = setting(10.0, "never re-dispatch a task sooner than this")
    breaker_failures: int = setting(
        3, "failures or soft timeouts in a row that suspend a worker (0: never)"
    )
    breaker_cooldown_s: float = setting(30.0, "how long a suspended worker gets no new tasks")
    starvation_factor: float = setting(
        2.0, "routed policy: serve a queued task by any idle worker after this many load times"
    )
    seed: int | None = setting(None, "seed of the random policy's choices, for reproducible runs")
    # The demand model (dispatcher/demand.py): a label's request rate decays with this time
    # constant, and it needs rate x run time / target utilisation copies.
    demand_time_constant_s: float = setting(
        10.0, "routed policy: time constant of each label's decayed request rate, in seconds"
    )
    target_utilisation: float = setting(
        0.7, "routed policy: busy share of a copy's time the demand model plans for (0-1]"
    )
    # Off by default: on the Zipf and shifting traces it added misses and no latency gain
    # (see the README's routing-at-scale table); it pays off for bursts on few labels.
    preload: bool = setting(
        False, "routed policy: preload copies of labels whose demand exceeds their copies"
    )
    max_preload_share: float = setting(
        0.25, "routed policy: most of the idle workers that may be loading a preload at once"
    )
    # It saves loads (200 workers x 2, 1,000 Zipf labels, 1,200 tasks/s: 6-8% fewer misses)
    # by making some first calls of cold labels wait (p99 of all tasks ~1.2 s instead of ~0.7 s),
    # and only while waiting pays (dispatcher/cold_wait.py): where labels are worth alike, as
    # on the reference scenarios, it holds only its probes. 0 turns it off; the README's
    # routing-at-scale section has the trade.
    cold_wait_ms: float = setting(
        500.0,
        "routed policy: a task for a label no worker holds waits up to this long for a worker "
        "where loading it evicts a label worth at most half as much, while such waits pay "
        "(0: load at once)",
    )
    cold_wait_adaptive: bool = setting(
        True,
        "routed policy: hold cold tasks only while such holds have been paying, bar 1 in 50 "
        "probes (false: hold every one the cold wait would)",
    )
    max_json_depth: int = setting(32, "deepest nesting of a task's parameters JSON (deeper: 422)")
    # Early checks of `embed_texts`-style parameters; the worker checks again.
    max_texts: int = setting(256, "most texts per task (more: 422)")
    max_text_chars: int = setting(20_000, "longest text, in characters (longer: 422)")
    allow_open_workers: bool = setting(
        False,
        "start with API keys but no worker token (any process could then join as a worker "
        "and receive callers' payloads)",
    )
    max_tasks_per_caller: int = setting(
        0, "unfinished tasks one caller (API key, else address) may have; 0: no limit"
    )
    state_db: str | None = setting(
        None, "SQLite file keeping asynchronous tasks across restarts (docs/reliability.md)"
    )
    # The shared task store of several dispatchers (docs/architecture.md, "Shared task store").
    store_url: str | None = setting(
        None,
        "postgresql:// URL of the task store shared by several dispatchers (else --state-db)",
        secret=True,
    )
    dispatcher_id: str | None = setting(
        None,
        "this dispatcher's name in the shared task store (its leases)",
        env="DISPATCHER_ID",
        shown_default="<hostname>-<pid>",
    )
    lease_s: float = setting(
        15.0, "shared task store: a dead dispatcher's tasks are claimed this long after"
    )
    worker_token: str | None = setting(
        None,
        "shared token workers present on /worker-listen",
        env="SMARTROUTING_WORKER_TOKEN",
        secret=True,
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "comma-separated keys callers present on the client endpoints",
        env="SMARTROUTING_API_KEYS",
        secret=True,
    )
    admin_key: str | None = setting(
        None, "key for /upload-model", env="SMARTROUTING_ADMIN_KEY", secret=True
    )

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {self.policy!r}")
        if self.max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        for name in ("max_results", "max_result_bytes", "max_queued_bytes", "max_caller_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.task_timeout_s <= 0:
            raise ValueError("task_timeout_s must be > 0")
        if not 0 < self.target_utilisation <= 1:
            raise ValueError("target_utilisation must be in (0, 1]")
        if self.demand_time_constant_s <= 0:
            raise ValueError("demand_time_constant_s must be > 0")
        if not 0 <= self.max_preload_share <= 1:
            raise ValueError("max_preload_share must be in [0, 1]")
        if self.cold_wait_ms < 0:
            raise ValueError("cold_wait_ms must be >= 0")
        if self.catalogue_sync_s < 0:
            raise ValueError("catalogue_sync_s must be >= 0")
        if self.lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        if isinstance(self.api_keys, str):  # Config(api_keys="a,b") from code
            object.__setattr__(self, "api_keys", parse_keys(self.api_keys))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Settings from `DISPATCHER_*` variables (and `RANDOM_DISPATCH=true`).

        Raises `smartrouting.config.ConfigError` (a ValueError) for a bad value.
        """
        return toolkit.load(cls, None, environ, env_hook=_random_dispatch)


def _random_dispatch(environ: Mapping[str, str]) -> dict[str, Any]:
    # The original system's switch; it wins over DISPATCHER_POLICY, a flag wins over both.
    if environ.get("RANDOM_DISPATCH", "").strip().lower() in _TRUE:
        return {"policy": "random"}
    return {}


def parse_keys(raw: str) -> tuple[str, ...]:
    """Comma-separated keys, blanks dropped."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m dispatcher`; flags mirror the environment."""
    return toolkit.build_parser(
        Config,
        prog="python -m dispatcher",
        description="Smart-routing dispatcher: HTTP API for callers, websocket for workers.",
    )


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Flags over the environment over the defaults; a bad value exits 2 with one line."""
    env = os.environ if environ is None else environ
    return toolkit.parse_args(Config, build_parser(), argv, env, env_hook=_random_dispatch)


def open_workers_refusal(config: Config) -> str | None:
    """Why `python -m dispatcher` refuses to start with these settings, or None.

    API keys without a worker token protect the callers' door and leave the workers' one open:
    any process could connect to /worker-listen and receive the callers' payloads.
    """
    if config.api_keys and not config.worker_token and not config.allow_open_workers:
        return (
            "API keys are set but no worker token: set SMARTROUTING_WORKER_TOKEN "
            "(--worker-token), or pass --allow-open-workers to accept any worker"
        )
    return None
