"""Helpers shared by the test suite: free ports, real servers, child processes.

Everything here cleans up what it starts. Timeouts are multiplied by
`SMARTROUTING_TEST_TIMEOUT_SCALE` (default 1) so a slow CI machine can stretch
them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from smartrouting import processes
from smartrouting.processes import free_port

__all__ = [
    "ROOT",
    "TIMEOUT_SCALE",
    "ChildProcess",
    "ProcessFactory",
    "ThreadedServer",
    "free_port",
    "run_async",
    "run_server",
    "scaled",
    "until",
    "wait_for_http",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SCALE = float(os.environ.get("SMARTROUTING_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout stretched by the environment's scale factor."""
    return seconds * TIMEOUT_SCALE


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `predicate` until it holds; fail with `what` after `timeout` (scaled) seconds.

    For conditions in another process, where no event can be awaited.
    """
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")


async def until(
    predicate: Callable[[], object], what: str, timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll an in-process condition, yielding to the running loop between checks; fail with
    `what` after `timeout` (scaled) seconds. For state that changes without an event to await
    (a registry, a worker's counters)."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Wait until GET `url` answers 200."""

    def ok() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, timeout, f"GET {url} to answer 200")


@dataclass
class ThreadedServer:
    """A uvicorn server running an ASGI app in a background thread on an ephemeral port."""

    app: Any
    host: str = "127.0.0.1"
    port: int = 0
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ThreadedServer:
        import uvicorn

        config = uvicorn.Config(
            self.app, host=self.host, port=0, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="uvicorn-test")
        self._thread.start()
        wait_until(lambda: bool(self._server.started), timeout, "uvicorn to start")
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(scaled(timeout))
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(scaled(timeout))


@contextlib.contextmanager
def run_server(app: Any) -> Iterator[ThreadedServer]:
    """Run `app` under a real uvicorn on an ephemeral port for the `with` block."""
    server = ThreadedServer(app).start()
    try:
        yield server
    finally:
        server.stop()


class ChildProcess(processes.ChildProcess):
    """The shared launcher's child, with the tests' short names and scaled timeouts."""

    def log(self) -> str:
        """Everything the child has written so far."""
        return self.read_log()

    def signal(self, signum: int) -> None:
        """Send `signum` to the process if it still runs."""
        self.send_signal(signum)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, wait `timeout_s` (scaled), then SIGKILL; returns the exit code."""
        return super().stop(scaled(timeout_s))


@dataclass
class ProcessFactory:
    """Starts Python modules as child processes; `close()` stops every one of them."""

    log_dir: Path
    children: list[ChildProcess] = field(default_factory=list)

    def python_module(
        self, name: str, module: str, *args: str, env: dict[str, str] | None = None
    ) -> ChildProcess:
        """`python -m <module> <args>` in the repository root, output in `log_dir/<name>.log`."""
        child = ChildProcess.spawn(
            [sys.executable, "-m", module, *args],
            self.log_dir / f"{name}.log",
            name=name,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=ROOT,
        )
        self.children.append(child)
        return child

    def dispatcher(
        self, port: int, *args: str, name: str = "dispatcher", env: dict[str, str] | None = None
    ) -> ChildProcess:
        """`python -m dispatcher` on 127.0.0.1:`port`; returns once its /health answers."""
        child = self.python_module(
            name, "dispatcher", "--host", "127.0.0.1", "--port", str(port), *args, env=env
        )
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30)
        return child

    def worker(
        self,
        ws_url: str,
        worker_id: str,
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ChildProcess:
        """`python -m worker` connecting to `ws_url` as `worker_id`; the engine etc. in `args`."""
        return self.python_module(
            name or worker_id,
            "worker",
            "--dispatcher-url",
            ws_url,
            "--worker-id",
            worker_id,
            *args,
            env=env,
        )

    def close(self) -> None:
        """Stop every child, the last started first (SIGKILL after a scaled deadline)."""
        for child in reversed(self.children):
            child.stop()


def run_async(coro: Any, timeout: float = 60.0) -> Any:
    """Run a coroutine to completion from synchronous test code, with a scaled timeout."""
    return asyncio.run(asyncio.wait_for(coro, scaled(timeout)))
