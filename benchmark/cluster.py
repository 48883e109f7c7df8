"""A local cluster for the benchmark and the demo: dispatchers, workers, uploader.

`LocalCluster` starts each part as a child process (`python -m dispatcher`,
`python -m worker`, `python -m uploader serve`, or one `python -m benchmark swarm`
process holding many SIMULATED workers), each with its output in a log file of
the run directory, waits until every dispatcher's `/health` answers and its `/workers`
lists every worker (polling: they are other processes), and stops everything
(SIGTERM, then SIGKILL after a deadline) when the `with` block ends, also on an
exception or Ctrl-C. Ports are chosen by the OS.

With `dispatchers` > 1 the dispatchers run active-active (docs/architecture.md §3.5.1, §6.6):
they share one PostgreSQL task store (`store_url`, else a throwaway server started for the
run, smartrouting/postgres.py) and every worker links to all of them.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx

from benchmark.errors import ClusterError, ClusterNotReady
from smartrouting.postgres import PostgresServer, PostgresUnavailable, start_postgres
from smartrouting.processes import ChildProcess, free_port

EngineName = Literal["simulated", "onnxruntime", "triton"]
PolicyName = Literal["routed", "random"]

ROOT = Path(__file__).resolve().parent.parent

# Variables of the parent's environment that would override the flags we pass.
_SCRUBBED_PREFIXES = ("DISPATCHER_", "WORKER_", "UPLOADER_")
_SCRUBBED_NAMES = {"RANDOM_DISPATCH", "MODEL_REPOSITORY", "NUM_WORKERS"}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without smart-routing settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra or {})
    return env


class ClusterState(enum.Enum):
    """Lifecycle of a LocalCluster."""

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class ClusterConfig:
    """What to start. `swarm=True` runs the workers as SIMULATED ones in one process."""

    run_dir: Path
    workers: int = 2
    capacity: int = 2
    engine: EngineName = "simulated"
    policy: PolicyName = "routed"
    time_scale: float = 1.0
    seed: int = 1
    model_repository: Path | None = None
    with_uploader: bool = False
    swarm: bool = False
    host: str = "127.0.0.1"
    #: Port of the (first) dispatcher; 0 lets the OS pick a free one.
    dispatcher_port: int = 0
    #: Dispatcher processes; with more than one they share a task store and every worker
    #: links to all of them.
    dispatchers: int = 1
    #: postgresql:// URL of the shared task store (also used by a single dispatcher when
    #: given); None with several dispatchers: a throwaway server is started for the cluster.
    store_url: str | None = None
    worker_prefix: str = "w-"
    sim_costs: dict[str, float] = field(default_factory=dict)
    dispatcher_args: list[str] = field(default_factory=list)
    worker_args: list[str] = field(default_factory=list)
    log_level: str = "warning"
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.dispatchers < 1:
            raise ValueError(f"a cluster needs at least one dispatcher, got {self.dispatchers}")

    def worker_ids(self) -> list[str]:
        """The ids the workers register under."""
        return [f"{self.worker_prefix}{i}" for i in range(self.workers)]


class LocalCluster:
    """Dispatcher + workers (+ uploader) as child processes; a context manager."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.state = ClusterState.NEW
        self.children: list[ChildProcess] = []
        self.dispatcher_ports: list[int] = []
        self.uploader_port = 0
        self.postgres: PostgresServer | None = None

    @property
    def dispatcher_port(self) -> int:
        """The (first) dispatcher's port; 0 before the start."""
        return self.dispatcher_ports[0] if self.dispatcher_ports else 0

    @property
    def base_url(self) -> str:
        """The (first) dispatcher's HTTP base URL."""
        return f"http://{self.config.host}:{self.dispatcher_port}"

    @property
    def base_urls(self) -> list[str]:
        """Every dispatcher's HTTP base URL."""
        return [f"http://{self.config.host}:{port}" for port in self.dispatcher_ports]

    @property
    def ws_urls(self) -> list[str]:
        """Every dispatcher's `/worker-listen` URL."""
        return [f"ws://{self.config.host}:{port}/worker-listen" for port in self.dispatcher_ports]

    @property
    def uploader_url(self) -> str | None:
        """The uploader's base URL, when one runs."""
        return f"http://{self.config.host}:{self.uploader_port}" if self.uploader_port else None

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------

    def start(self) -> None:
        """Start every part and wait until the cluster is ready."""
        if self.state is not ClusterState.NEW:
            raise ClusterError(f"cannot start a cluster in state {self.state.value}")
        self.state = ClusterState.STARTING
        cfg = self.config
        env = child_env()
        if cfg.with_uploader:
            if cfg.model_repository is None:
                raise ClusterError("the uploader needs a model repository")
            self.uploader_port = free_port(cfg.host)
            self._spawn(
                "uploader",
                ["-m", "uploader", "serve", "--host", cfg.host, "--port", str(self.uploader_port)]
                + ["--repository", str(cfg.model_repository)],
                env,
            )
            self._wait_http(f"{self.uploader_url}/health", "the uploader's /health")
        self._start_dispatchers(env)
        if cfg.swarm:
            self._spawn("swarm", self._swarm_args(self.ws_urls), env)
        else:
            for i, worker_id in enumerate(cfg.worker_ids()):
                args = self._worker_args(self.ws_urls, worker_id, i)
                self._spawn(f"worker-{worker_id}", args, env)
        self._wait_workers()
        self.state = ClusterState.READY

    def _start_dispatchers(self, env: dict[str, str]) -> None:
        """Start every dispatcher (all at once), then wait for each one's /health."""
        cfg = self.config
        shared = cfg.dispatchers > 1
        if shared or cfg.store_url:  # one dispatcher uses a store only when given one
            env = {**env, "DISPATCHER_STORE_URL": cfg.store_url or self._start_postgres()}
        self.dispatcher_ports = [cfg.dispatcher_port or free_port(cfg.host)]
        self.dispatcher_ports += [free_port(cfg.host) for _ in range(cfg.dispatchers - 1)]
        for n, port in enumerate(self.dispatcher_ports):
            args = ["-m", "dispatcher", "--host", cfg.host, "--port", str(port)]
            args += ["--policy", cfg.policy, "--log-level", cfg.log_level, "--seed", str(cfg.seed)]
            if shared:
                args += ["--dispatcher-id", f"dispatcher-{n}"]
            if self.uploader_url:
                args += ["--uploader-url", self.uploader_url]
            self._spawn(
                f"dispatcher-{n}" if shared else "dispatcher", args + cfg.dispatcher_args, env
            )
        for url in self.base_urls:
            self._wait_http(f"{url}/health", f"the dispatcher's /health at {url}")

    def _start_postgres(self) -> str:
        """A throwaway PostgreSQL server for the shared task store; its URL."""
        try:
            self.postgres = start_postgres()
        except PostgresUnavailable as exc:
            raise ClusterError(f"several dispatchers need PostgreSQL: {exc}") from exc
        return self.postgres.url()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> ChildProcess:
        """Start `python <args>` in the repository root, output in `run_dir/<name>.log`."""
        log_path = self.config.run_dir / f"{name}.log"
        child = ChildProcess.spawn([sys.executable, *args], log_path, name=name, env=env, cwd=ROOT)
        self.children.append(child)
        return child

    def _sim_args(self) -> list[str]:
        args = []
        for key, value in sorted(self.config.sim_costs.items()):
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def _worker_args(self, ws_urls: list[str], worker_id: str, index: int) -> list[str]:
        cfg = self.config
        args = ["-m", "worker", *_each("--dispatcher-url", ws_urls), "--worker-id", worker_id]
        args += ["--capacity", str(cfg.capacity), "--engine", cfg.engine]
        args += ["--log-level", cfg.log_level]
        if cfg.model_repository is not None:
            args += ["--model-repository", str(cfg.model_repository)]
        if cfg.engine == "simulated":
            args += ["--time-scale", str(cfg.time_scale), "--seed", str(cfg.seed * 1000 + index)]
            args += self._sim_args()
        return args + cfg.worker_args

    def _swarm_args(self, ws_urls: list[str]) -> list[str]:
        cfg = self.config
        args = ["-m", "benchmark", "swarm", *_each("--dispatcher-url", ws_urls)]
        args += ["--workers", str(cfg.workers), "--capacity", str(cfg.capacity)]
        args += ["--worker-prefix", cfg.worker_prefix, "--time-scale", str(cfg.time_scale)]
        args += ["--seed", str(cfg.seed)]
        return args + self._sim_args()

    def _check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise ClusterError(
                    f"{child.name} exited with code {child.returncode} "
                    f"(log {child.log_path}):\n{child.tail()}"
                )

    def _poll(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if predicate():
                return
            time.sleep(0.1)
        raise ClusterNotReady(
            f"timed out after {self.config.ready_timeout_s:.0f}s waiting for {what}\n"
            + self.log_tails(15)
        )

    def _wait_http(self, url: str, what: str) -> None:
        def ok() -> bool:
            try:
                return httpx.get(url, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False

        self._poll(ok, what)

    def registered_workers(self, base_url: str | None = None) -> list[str]:
        """The worker ids a dispatcher (the first one by default) lists at `/workers` now."""
        answer = httpx.get(f"{base_url or self.base_url}/workers", timeout=5.0)
        answer.raise_for_status()
        return list(answer.json()["workers"])

    def _wait_workers(self) -> None:
        expected = set(self.config.worker_ids())

        def all_registered() -> bool:
            try:
                return all(expected <= set(self.registered_workers(u)) for u in self.base_urls)
            except (httpx.HTTPError, KeyError, ValueError):
                return False

        self._poll(all_registered, f"all {len(expected)} workers at every /workers")

    # -- stop ----------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise ClusterError with the log tail if a child process has died."""
        self._check_alive()

    def stop(self) -> dict[str, int]:
        """Stop workers first, then the dispatchers, then the uploader (and the PostgreSQL
        server started for the cluster); exit codes by name."""
        if self.state in (ClusterState.STOPPED, ClusterState.STOPPING):
            return {}
        self.state = ClusterState.STOPPING
        codes: dict[str, int] = {}
        groups = [
            [c for c in self.children if c.name.startswith(("worker-", "swarm"))],
            [c for c in self.children if c.name.startswith("dispatcher")],
            [c for c in self.children if c.name == "uploader"],
        ]
        for group in groups:
            for child in group:  # SIGTERM the whole group, then wait: they stop in parallel.
                child.terminate()
            for child in group:
                codes[child.name] = child.wait_or_kill(self.config.stop_timeout_s)
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        self.state = ClusterState.STOPPED
        return codes

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of every child's log, for error reports."""
        return "\n".join(f"--- {c.name} ({c.log_path}):\n{c.tail(lines)}" for c in self.children)


def _each(flag: str, values: list[str]) -> list[str]:
    """`flag` before each value: a repeated flag."""
    return [item for value in values for item in (flag, value)]
