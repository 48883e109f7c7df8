"""Fixtures of the dispatcher tests: a real uvicorn dispatcher on an ephemeral port."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from dispatcher.config import Config
from dispatcher.server import DispatcherServer
from tests.dispatcher.fake_worker import FakeWorker
from tests.support import scaled, wait_until


@dataclass
class RunningDispatcher:
    """A dispatcher served by uvicorn in a background thread."""

    config: Config
    server: DispatcherServer
    thread: threading.Thread
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/worker-listen"

    @property
    def dispatcher(self) -> Any:
        """The running `Dispatcher` (read it only from the server's loop, or for counters)."""
        return self.server.dispatcher

    @property
    def core(self) -> Any:
        """The dispatcher's sans-I/O `Core` (registry, queue, running tasks)."""
        dispatcher = self.server.dispatcher
        assert dispatcher is not None, "the dispatcher has not started"
        return dispatcher.core

    def stop(self, timeout: float = 20.0) -> None:
        self.server.stop()
        self.thread.join(scaled(timeout))
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(scaled(timeout))


def start_dispatcher(config: Config) -> RunningDispatcher:
    """Start a dispatcher on 127.0.0.1 with an OS-chosen port."""
    cfg = replace(config, host="127.0.0.1", port=0, log_level="warning")
    server = DispatcherServer(cfg)
    thread = threading.Thread(target=server.run, daemon=True, name="dispatcher-test")
    thread.start()
    wait_until(lambda: bool(server.started) or not thread.is_alive(), 15, "dispatcher to start")
    assert server.started, "dispatcher failed to start"
    port = int(server.servers[0].sockets[0].getsockname()[1])
    return RunningDispatcher(cfg, server, thread, port)


@pytest.fixture
def dispatcher_factory() -> Iterator[Callable[..., RunningDispatcher]]:
    """Starts dispatchers (`factory(**config_fields)`); all are stopped at teardown."""
    started: list[RunningDispatcher] = []

    def factory(**fields: Any) -> RunningDispatcher:
        running = start_dispatcher(Config(**fields))
        started.append(running)
        return running

    yield factory
    for running in reversed(started):
        running.stop()


@pytest.fixture
def dispatcher(dispatcher_factory: Callable[..., RunningDispatcher]) -> RunningDispatcher:
    """A routed dispatcher with default settings (short deadline for fast failures)."""
    return dispatcher_factory(task_timeout_s=20.0)


@pytest.fixture
async def client(dispatcher: RunningDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the `dispatcher` fixture."""
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as c:
        yield c


@pytest.fixture
async def workers() -> AsyncIterator[Callable[..., Any]]:
    """Factory of started fake workers (`await workers(url, worker_id, **fields)`), closed
    at teardown."""
    made: list[FakeWorker] = []

    async def make(url: str, worker_id: str, **kwargs: Any) -> FakeWorker:
        worker = FakeWorker(url, worker_id, **kwargs)
        made.append(worker)
        return await worker.start()

    yield make
    for worker in made:
        await worker.close()
