"""Typed configuration of a worker; the CLI and the environment fill it in.

Flags follow docs/interfaces.md section 2; every flag has an environment variable
(`WORKER_<FLAG>` unless the interface names another one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from worker.errors import ConfigError

EngineName = Literal["triton", "onnxruntime", "simulated"]
TritonModelConfig = Literal["python", "onnxruntime"]


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


@dataclass
class Config:
    """Everything a worker needs to run; defaults suit a local CPU machine."""

    dispatcher_url: str = "ws://127.0.0.1:8080/worker-listen"
    worker_id: str = ""
    capacity: int = 2
    slots: int = 1
    engine: EngineName = "triton"
    model_repository: Path = Path("var/models")
    tritonserver: Path | None = None
    triton_model_config: TritonModelConfig = "python"
    device: str | None = None
    state_dir: Path | None = None
    # Simulated engine costs (milliseconds; see worker/engines/simulated.py).
    sim_load_ms: float | None = None
    sim_load_stddev_ms: float | None = None
    sim_run_ms: float | None = None
    sim_run_stddev_ms: float | None = None
    time_scale: float = 1.0
    seed: int | None = None
    # Connection and shutdown.
    ping_interval_s: float = 10.0
    reconnect_max_backoff_s: float = 5.0
    shutdown_timeout_s: float = 30.0
    max_texts: int = 256
    max_text_chars: int = 20_000
    log_level: str = "info"
    #: Shared token sent as `Authorization: Bearer` on /worker-listen (SMARTROUTING_WORKER_TOKEN).
    worker_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {self.capacity}")
        if self.slots < 1:
            raise ConfigError(f"slots must be >= 1, got {self.slots}")
        if self.engine not in ("triton", "onnxruntime", "simulated"):
            raise ConfigError(f"unknown engine {self.engine!r}")
        if self.triton_model_config not in ("python", "onnxruntime"):
            raise ConfigError(f"unknown triton model config {self.triton_model_config!r}")
        if self.time_scale <= 0:
            raise ConfigError(f"time_scale must be > 0, got {self.time_scale}")
        if not self.worker_id:
            self.worker_id = default_worker_id(self.device)
        self.model_repository = Path(self.model_repository)


def _env_default(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The `python -m worker` argument parser; defaults come from `env`."""
    default_engine = "triton" if find_tritonserver() else "onnxruntime"

    def e(flag: str, *extra: str) -> str | None:
        return _env_default(env, f"WORKER_{flag.upper().replace('-', '_')}", *extra)

    p = argparse.ArgumentParser(
        prog="python -m worker",
        description="Smart-routing worker: runs tasks from the dispatcher on a local engine.",
        epilog=(
            "Environment variables mirror the flags: WORKER_DISPATCHER_URL, WORKER_ID, "
            "WORKER_CAPACITY, WORKER_SLOTS, WORKER_ENGINE, MODEL_REPOSITORY, "
            "WORKER_TRITONSERVER, WORKER_TRITON_MODEL_CONFIG, WORKER_DEVICE, WORKER_STATE_DIR, "
            "WORKER_SIM_LOAD_MS, WORKER_SIM_LOAD_STDDEV_MS, WORKER_SIM_RUN_MS, "
            "WORKER_SIM_RUN_STDDEV_MS, WORKER_TIME_SCALE, WORKER_SEED, "
            "WORKER_SHUTDOWN_TIMEOUT_S, WORKER_PING_INTERVAL_S, WORKER_LOG_LEVEL, "
            "SMARTROUTING_WORKER_TOKEN."
        ),
    )
    p.add_argument(
        "--dispatcher-url",
        default=e("dispatcher-url") or "ws://127.0.0.1:8080/worker-listen",
    )
    p.add_argument("--worker-id", default=e("id", "WORKER_WORKER_ID") or "")
    p.add_argument("--capacity", type=int, default=int(e("capacity") or 2))
    p.add_argument("--slots", type=int, default=int(e("slots") or 1))
    p.add_argument(
        "--engine",
        choices=["triton", "onnxruntime", "simulated"],
        default=e("engine") or default_engine,
    )
    p.add_argument(
        "--model-repository",
        type=Path,
        default=Path(e("model-repository", "MODEL_REPOSITORY") or "var/models"),
    )
    p.add_argument("--tritonserver", type=Path, default=e("tritonserver"))
    p.add_argument(
        "--triton-model-config",
        choices=["python", "onnxruntime"],
        default=e("triton-model-config") or "python",
    )
    p.add_argument("--device", default=e("device"))
    p.add_argument("--state-dir", type=Path, default=e("state-dir"))
    for flag in ("sim-load-ms", "sim-load-stddev-ms", "sim-run-ms", "sim-run-stddev-ms"):
        value = e(flag)
        p.add_argument(f"--{flag}", type=float, default=float(value) if value else None)
    p.add_argument("--time-scale", type=float, default=float(e("time-scale") or 1.0))
    seed = e("seed")
    p.add_argument("--seed", type=int, default=int(seed) if seed else None)
    p.add_argument(
        "--shutdown-timeout-s", type=float, default=float(e("shutdown-timeout-s") or 30.0)
    )
    p.add_argument("--ping-interval-s", type=float, default=float(e("ping-interval-s") or 10.0))
    p.add_argument("--log-level", default=e("log-level") or "info")
    p.add_argument(
        "--worker-token",
        default=env.get("SMARTROUTING_WORKER_TOKEN") or None,
        help="token the dispatcher asks for on /worker-listen (SMARTROUTING_WORKER_TOKEN)",
    )
    return p


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from command-line flags over environment variables."""
    environ = os.environ if env is None else env
    ns = build_parser(environ).parse_args(sys.argv[1:] if argv is None else list(argv))
    return Config(
        dispatcher_url=ns.dispatcher_url,
        worker_id=ns.worker_id,
        capacity=ns.capacity,
        slots=ns.slots,
        engine=cast(EngineName, ns.engine),
        model_repository=ns.model_repository,
        tritonserver=ns.tritonserver,
        triton_model_config=cast(TritonModelConfig, ns.triton_model_config),
        device=ns.device,
        state_dir=ns.state_dir,
        sim_load_ms=ns.sim_load_ms,
        sim_load_stddev_ms=ns.sim_load_stddev_ms,
        sim_run_ms=ns.sim_run_ms,
        sim_run_stddev_ms=ns.sim_run_stddev_ms,
        time_scale=ns.time_scale,
        seed=ns.seed,
        shutdown_timeout_s=ns.shutdown_timeout_s,
        ping_interval_s=ns.ping_interval_s,
        log_level=ns.log_level,
        worker_token=ns.worker_token or None,
    )
