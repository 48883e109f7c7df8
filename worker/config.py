"""Typed configuration of a worker; the CLI and the environment fill it in.

Every field of `Config` is a flag of `python -m worker` and an environment variable
(`WORKER_<FIELD>` unless it names another; docs/interfaces.md section 2); flags win over the
environment, which wins over the defaults. smartrouting.config derives the parser, so
`python -m worker --help` lists every setting with its default and variable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from smartrouting import config as toolkit
from smartrouting.config import setting
from smartrouting.logs import LogFormat
from worker.errors import ConfigError

EngineName = Literal["triton", "onnxruntime", "simulated"]
TritonModelConfig = Literal["python", "onnxruntime"]
DispatcherDiscovery = Literal["static", "dns"]
TritonLog = Literal["file", "stdout"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_SIM_DEFAULT = "the simulated engine's measured cost"


def bundled_tritonserver() -> Path | None:
    """The tritonserver binary shipped with nvidia-pytriton, when installed."""
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
    return binary if binary.exists() else None


def find_tritonserver() -> Path | None:
    """A tritonserver binary: on PATH (the Triton image) or the PyTriton one."""
    on_path = shutil.which("tritonserver")
    return Path(on_path) if on_path else bundled_tritonserver()


def default_worker_id(device: str | None) -> str:
    """Unique and stable per host and device: `<hostname>-<device or cpu>`."""
    return f"{socket.gethostname()}-{(device or 'cpu').replace(':', '')}"


def default_engine() -> EngineName:
    """The CLI's engine when none is named: triton where a binary is found, else onnxruntime."""
    return "triton" if find_tritonserver() else "onnxruntime"


@dataclass
class Config:
    """Everything a worker needs to run; defaults suit a local CPU machine."""

    env_prefix: ClassVar[str] = "WORKER_"

    # Several dispatchers (docs/architecture.md §6.6): one link to each; a plain string is
    # taken as a one-URL tuple, the single-dispatcher form of before.
    dispatcher_url: tuple[str, ...] = setting(
        ("ws://127.0.0.1:8080/worker-listen",),
        "websocket URL of a dispatcher's /worker-listen; repeat the flag (or separate the "
        "variable's URLs with commas) to connect to several dispatchers",
        repeat=True,
    )
    dispatcher_discovery: DispatcherDiscovery = setting(
        "static",
        "static: one link per URL; dns: one link per address each URL's host resolves to "
        "(a Kubernetes headless Service), re-resolved every --discovery-interval-s",
    )
    discovery_interval_s: float = setting(10.0, "dns discovery: seconds between resolutions")
    occupancy_hold_ms: float = setting(
        5.0,
        "several dispatchers: tell the others of a freed slot this long after the task's own "
        "dispatcher (which refills it first, if it did so in time before), ms; 0: at once",
    )
    worker_id: str = setting(
        "",
        "id of this worker, unique in the cluster",
        env=("WORKER_ID", "WORKER_WORKER_ID"),
        shown_default="<hostname>-<device or cpu>",
    )
    capacity: int = setting(2, "labels kept loaded at once")
    slots: int = setting(1, "tasks run at once")
    engine: EngineName = setting("triton", "inference engine")
    model_repository: Path = setting(
        Path("var/models"),
        "model repository the uploader publishes into",
        env=("WORKER_MODEL_REPOSITORY", "MODEL_REPOSITORY"),
    )
    tritonserver: Path | None = setting(
        None, "path of the tritonserver binary; unset: the one on PATH, else PyTriton's"
    )
    triton_model_config: TritonModelConfig = setting(
        "python", "Triton backend of the published models"
    )
    device: str | None = setting(None, "device to run on, e.g. cuda:0; unset: the CPU")
    batching: bool = setting(
        True,
        "onnxruntime engine: run concurrent tasks of one label as one batch "
        "(triton: the model's config.pbtxt decides)",
    )
    batch_delay_ms: float = setting(
        2.0,
        "onnxruntime engine: longest wait for a batch to fill, ms (a request that finds "
        "its label idle runs at once)",
    )
    state_dir: Path | None = setting(None, "directory for the engine's working files")
    # Simulated engine costs (milliseconds; see worker/engines/simulated.py).
    sim_load_ms: float | None = setting(
        None, "simulated engine: mean load time, ms", shown_default=_SIM_DEFAULT
    )
    sim_load_stddev_ms: float | None = setting(
        None, "simulated engine: load time stddev, ms", shown_default=_SIM_DEFAULT
    )
    sim_run_ms: float | None = setting(
        None, "simulated engine: mean run time, ms", shown_default=_SIM_DEFAULT
    )
    sim_run_stddev_ms: float | None = setting(
        None, "simulated engine: run time stddev, ms", shown_default=_SIM_DEFAULT
    )
    time_scale: float = setting(1.0, "multiplies simulated costs (1 = real time)")
    seed: int | None = setting(None, "seed of the simulated engine's draws")
    # Connection and shutdown.
    ping_interval_s: float = setting(10.0, "websocket keepalive ping interval")
    reconnect_max_backoff_s: float = setting(5.0, "longest wait between reconnect attempts")
    shutdown_timeout_s: float = setting(30.0, "graceful shutdown: how long running tasks may take")
    max_texts: int = setting(256, "most texts per task (more: INVALID_PARAMETERS)")
    max_text_chars: int = setting(20_000, "longest text, in characters")
    log_level: LogLevel = setting("info", "log level")
    log_format: LogFormat = setting(
        "text", "log lines: text, or json (one object per line, for log collectors)"
    )
    # Probes and metrics (worker/probes.py): off unless a port is given.
    http_port: int | None = setting(
        None, "serve /livez, /readyz and /metrics on this port", shown_default="off"
    )
    http_host: str = setting("0.0.0.0", "address of the /livez, /readyz and /metrics server")
    triton_log: TritonLog = setting(
        "file",
        "where tritonserver's output goes: file (tritonserver.log in the state directory) "
        "or stdout (the worker's own output, as in a container)",
    )
    worker_token: str | None = setting(
        None,
        "token sent as Authorization: Bearer on /worker-listen",
        env="SMARTROUTING_WORKER_TOKEN",
        secret=True,
    )

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {self.capacity}")
        if self.slots < 1:
            raise ConfigError(f"slots must be >= 1, got {self.slots}")
        if self.engine not in ("triton", "onnxruntime", "simulated"):
            raise ConfigError(f"unknown engine {self.engine!r}")
        if self.triton_model_config not in ("python", "onnxruntime"):
            raise ConfigError(f"unknown triton model config {self.triton_model_config!r}")
        if self.batch_delay_ms < 0:
            raise ConfigError(f"batch_delay_ms must be >= 0, got {self.batch_delay_ms}")
        if self.time_scale <= 0:
            raise ConfigError(f"time_scale must be > 0, got {self.time_scale}")
        if isinstance(self.dispatcher_url, str):  # the single-URL form
            self.dispatcher_url = (self.dispatcher_url,)
        # Order kept, duplicates dropped: two links to one dispatcher would be refused anyway.
        self.dispatcher_url = tuple(dict.fromkeys(u.strip() for u in self.dispatcher_url if u))
        if not self.dispatcher_url:
            raise ConfigError("at least one dispatcher_url is required")
        if self.dispatcher_discovery not in ("static", "dns"):
            raise ConfigError(f"unknown dispatcher discovery {self.dispatcher_discovery!r}")
        if not self.occupancy_hold_ms >= 0:
            raise ConfigError(f"occupancy_hold_ms must be >= 0, got {self.occupancy_hold_ms}")
        if not self.discovery_interval_s > 0:
            raise ConfigError(f"discovery_interval_s must be > 0, got {self.discovery_interval_s}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be in 0..65535, got {self.http_port}")
        if not self.worker_id:
            self.worker_id = default_worker_id(self.device)
        self.model_repository = Path(self.model_repository)


def build_parser(defaults: Mapping[str, object] | None = None) -> argparse.ArgumentParser:
    """The `python -m worker` argument parser; `defaults`: those computed at start-up."""
    return toolkit.build_parser(
        Config,
        prog="python -m worker",
        description="Smart-routing worker: runs tasks from the dispatcher on a local engine.",
        defaults=_start_up_defaults() if defaults is None else defaults,
    )


def _start_up_defaults() -> dict[str, object]:
    # Unlike Config's own default, the CLI's engine depends on what this machine has.
    return {"engine": default_engine()}


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """A Config from command-line flags over environment variables; exits 2 on a bad value."""
    defaults = _start_up_defaults()
    return toolkit.parse_args(
        Config,
        build_parser(defaults),
        argv,
        os.environ if env is None else env,
        defaults=defaults,
        invalid=(ConfigError, ValueError),
    )
