"""Supervisor of one `tritonserver` child process.

Starts it on free ports with explicit model control, captures its output to a log
file (or leaves it on the worker's stdout, `log_to_stdout`, as in a container), waits
for `/v2/health/ready` with a timeout, stops it with SIGTERM then SIGKILL, and restarts
it with exponential backoff when it dies on its own (calling `on_death` first, so the
worker can report its labels as gone). Spawning, the log and
the signals are `smartrouting.processes.ChildProcess`'s; the lifecycle is decided here.
With `metrics` (the worker runs on a GPU) Triton serves its own Prometheus metrics, GPU ones
included, on `metrics_port` (a free port, in the log and in `tritonserver.json`).

    STOPPED --start--> STARTING --ready--> READY --died--> RESTARTING --ready--> READY
                          |                  |                  |
                          +--failed--> FAILED  +--stop--> STOPPING --> STOPPED
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from smartrouting.processes import ChildProcess, free_port
from worker.errors import EngineUnavailableError, IllegalTransitionError

log = logging.getLogger(__name__)


class TritonState(enum.Enum):
    """Lifecycle of the supervised tritonserver."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"


_ALLOWED: dict[TritonState, set[TritonState]] = {
    TritonState.STOPPED: {TritonState.STARTING},
    TritonState.STARTING: {TritonState.READY, TritonState.FAILED, TritonState.STOPPING},
    TritonState.READY: {TritonState.RESTARTING, TritonState.STOPPING},
    TritonState.RESTARTING: {TritonState.READY, TritonState.STOPPING, TritonState.FAILED},
    TritonState.STOPPING: {TritonState.STOPPED},
    TritonState.FAILED: {TritonState.STOPPING, TritonState.STARTING, TritonState.RESTARTING},
}


def prepare_backends(binary: Path, state_dir: Path) -> Path:
    """A private backend directory for the PyTriton build, without touching site-packages.

    PyTriton ships the Python backend stub per interpreter version; Triton expects it
    next to `libtriton_python.so`. We link the backend's files and our version's stub
    into `state_dir/backends/python/`. For a Triton image (no stubs dir) the binary's
    own `backends/` is returned.
    """
    root = binary.resolve().parent.parent
    stubs = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    source = root / "backends"
    if not (stubs / "triton_python_backend_stub").exists():
        return source if source.is_dir() else Path("/opt/tritonserver/backends")
    target = state_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in (source / "python").iterdir() if p.is_file()}
    wanted["triton_python_backend_stub"] = stubs / "triton_python_backend_stub"
    for name, src in wanted.items():
        link = target / name
        if not link.exists():
            with contextlib.suppress(FileExistsError):
                link.symlink_to(src.resolve())
    return target.parent


def triton_env(binary: Path) -> dict[str, str]:
    """Environment for tritonserver: our venv's bin first on PATH, PyTriton's libs found."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    root = binary.resolve().parent.parent
    libs = [root / "external_libs", root.parent.parent / "nvidia_pytriton.libs"]
    extra = ":".join(str(p) for p in libs if p.is_dir())
    if extra:
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{old}:{extra}" if old else extra
    return env


@dataclass
class TritonProcess:
    """One supervised tritonserver; `http_url` is valid while READY."""

    binary: Path
    model_repository: Path
    state_dir: Path
    model_config_name: str | None = None
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    max_backoff_s: float = 10.0
    on_death: Callable[[int | None], None] | None = None
    on_ready: Callable[[], None] | None = None
    #: Serve Triton's own /metrics (GPU utilisation, memory, inference counts) on a free port.
    metrics: bool = False
    #: tritonserver's output on the worker's stdout instead of `log_path`.
    log_to_stdout: bool = False
    state: TritonState = TritonState.STOPPED
    http_port: int = 0
    metrics_port: int = 0
    restarts: int = 0
    _proc: ChildProcess | None = None
    _watch: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "tritonserver.log"

    @property
    def log_where(self) -> str:
        """Where its output goes, for error messages."""
        return "the worker's output" if self.log_to_stdout else str(self.log_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __post_init__(self) -> None:
        # Absolute paths: they end up on tritonserver's command line and in its stubs'.
        self.state_dir = Path(self.state_dir).resolve()
        self.model_repository = Path(self.model_repository).resolve()

    def _set(self, new: TritonState) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransitionError(f"tritonserver: {self.state.value} -> {new.value}")
        log.debug("tritonserver %s -> %s", self.state.value, new.value)
        self.state = new
        if new is TritonState.READY:
            self._ready.set()
        else:
            self._ready.clear()

    async def start(self) -> None:
        """Start tritonserver and wait until it is ready; raises EngineUnavailableError."""
        self._set(TritonState.STARTING)
        try:
            await self._spawn_and_wait()
        except BaseException:
            self._set(TritonState.FAILED)
            raise
        self._set(TritonState.READY)
        self._watch = asyncio.create_task(self._supervise(), name="triton-supervisor")

    async def wait_ready(self, timeout: float) -> None:
        """Wait until READY (e.g. across a restart); EngineUnavailableError on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError as exc:
            raise EngineUnavailableError(f"tritonserver not ready ({self.state.value})") from exc

    def command(self, backends: Path) -> list[str]:
        """The tritonserver command line (explicit model control, HTTP on 127.0.0.1 only)."""
        args = [
            str(self.binary),
            f"--model-repository={self.model_repository.resolve()}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--allow-grpc=false",
            "--disable-auto-complete-config",
            "--exit-timeout-secs=5",
        ]
        if self.metrics:
            args += [
                "--allow-metrics=true",
                "--allow-gpu-metrics=true",
                f"--metrics-port={self.metrics_port}",
            ]
        else:
            args.append("--allow-metrics=false")
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        return args

    async def _spawn_and_wait(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        if self.metrics:
            # On every address: Prometheus scrapes it from outside the pod.
            self.metrics_port = free_port("0.0.0.0")
        args = self.command(prepare_backends(self.binary, self.state_dir))
        # Its own process group (its Python-backend stubs join it, and go with it), and
        # SIGKILLed by the kernel if the worker dies, even by SIGKILL: no orphans.
        self._proc = ChildProcess.spawn(
            args,
            None if self.log_to_stdout else self.log_path,
            name="tritonserver",
            env=triton_env(self.binary),
            own_session=True,
            die_with_parent=True,
        )
        # Where operators (and tests) find the running server.
        (self.state_dir / "tritonserver.json").write_text(
            json.dumps(
                {
                    "pid": self._proc.pid,
                    "http_port": self.http_port,
                    "metrics_port": self.metrics_port,
                }
            )
        )
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    raise EngineUnavailableError(
                        f"tritonserver exited with {self._proc.returncode}; see {self.log_where}"
                        f":\n{self._proc.tail(5)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        self._log_ready()
                        return
                await asyncio.sleep(0.05)
        await self._terminate()
        raise EngineUnavailableError(
            f"tritonserver not ready after {self.ready_timeout_s}s; see {self.log_where}"
        )

    def _log_ready(self) -> None:
        fields: dict[str, object] = {"pid": self.pid, "http_port": self.http_port}
        if self.metrics:
            fields["metrics_port"] = self.metrics_port
        if not self.log_to_stdout:
            fields["log"] = str(self.log_path)
        metrics = f", its metrics on port {self.metrics_port}" if self.metrics else ""
        log.info("tritonserver ready on port %d%s", self.http_port, metrics, extra=fields)

    async def _supervise(self) -> None:
        backoff = 0.5
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait_async()
            if self.state in (TritonState.STOPPING, TritonState.STOPPED):
                return
            # Reaping it SIGKILLed the rest of its process group: no Python-backend stub is left.
            log.warning("tritonserver died (exit %s); restarting", code)
            self._set(TritonState.RESTARTING)
            if self.on_death is not None:
                self.on_death(code)
            while self.state is TritonState.RESTARTING or self.state is TritonState.FAILED:
                try:
                    await self._spawn_and_wait()
                except EngineUnavailableError as exc:
                    log.warning("tritonserver restart failed: %s; retry in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                    continue
                self.restarts += 1
                backoff = 0.5
                self._set(TritonState.READY)
                if self.on_ready is not None:
                    self.on_ready()

    async def _terminate(self) -> None:
        # SIGTERM, then SIGKILL to the process group: no Python-backend stub is left behind.
        if self._proc is not None:
            await self._proc.stop_async(self.stop_timeout_s)

    async def stop(self) -> None:
        """SIGTERM, wait, SIGKILL; no restart after this. Safe to call twice."""
        if self.state in (TritonState.STOPPED, TritonState.STOPPING):
            return
        self._set(TritonState.STOPPING)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self._terminate()
        self._set(TritonState.STOPPED)


def find_binary(explicit: Path | None) -> Path:
    """The tritonserver to run: the one given, else on PATH, else PyTriton's."""
    from worker.config import find_tritonserver

    binary = explicit or find_tritonserver()
    if binary is None or not Path(binary).exists():
        raise EngineUnavailableError("no tritonserver binary found (install nvidia-pytriton)")
    return Path(binary)
