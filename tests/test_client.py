"""The Python client: its retry decisions, both drivers, and exactly-once across a SIGKILL.

The unit tests replace the network with `httpx.MockTransport`; the last test runs a real
dispatcher process with `--state-db`, kills it (SIGKILL) while the client waits for a task, and
restarts it: the client returns the task's result, and the worker ran the task once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartrouting.client import (
    APIError,
    AsyncClient,
    Client,
    ConnectionFailed,
    RetryPolicy,
    TaskTimeout,
)
from smartrouting.client.protocol import Attempts, Call, Reply
from tests.support import ProcessFactory, free_port, scaled, wait_until
from worker.config import Config as WorkerConfig
from worker.engines.simulated import SimulatedEngine
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(120)

FAST = RetryPolicy(attempts=5, budget_s=5.0, backoff_s=0.001, max_backoff_s=0.002)
DONE = {
    "status": "completed",
    "result": {"ok": 1},
    "worker_id": "w1",
    "label": "a",
    "label_miss": False,
    "timings_ms": {"total": 1.0},
}

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*steps: Any) -> tuple[Handler, list[httpx.Request]]:
    """A transport handler answering each request with the next step (an exception to raise,
    or (status, body, headers)); the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        status, body, headers = step
        if callable(body):
            body = body(request)
        return httpx.Response(status, json=body, headers=headers)

    return handle, seen


def echo_id(request: httpx.Request) -> dict[str, Any]:
    """A completed answer carrying the id the request sent."""
    return {**DONE, "task_id": json.loads(request.content)["task_id"]}


# --- retry decisions --------------------------------------------------------------------------


def test_retry_after_is_honoured_and_other_errors_are_not_retried() -> None:
    """429/503 wait Retry-After; 4xx other than 429 and 5xx other than 503 raise at once."""
    now = [0.0]
    attempts = Attempts(RetryPolicy(), Call("POST", "/run-task"), lambda: now[0])
    assert attempts.on_response(503, {"error": "shutting_down"}, "3") == 3.0
    assert attempts.on_response(429, {"error": "queue_full"}, "7") == 7.0
    assert attempts.on_response(200, {"x": 1}, None) == Reply(200, {"x": 1})
    for status, code in ((409, "task_id_conflict"), (502, "task_failed"), (422, "bad")):
        with pytest.raises(APIError) as info:
            attempts.on_response(status, {"error": code, "detail": "d"}, None)
        assert (info.value.status, info.value.code) == (status, code)


def test_retries_stop_at_the_budget() -> None:
    """Past `attempts` or `budget_s`, the last error is raised."""
    now = [0.0]
    policy = RetryPolicy(attempts=3, budget_s=10.0)
    attempts = Attempts(policy, Call("GET", "/x"), lambda: now[0])
    assert attempts.on_response(503, {"error": "no_workers"}, "1") == 1.0
    now[0] = 9.5
    with pytest.raises(APIError):
        attempts.on_response(503, {"error": "no_workers"}, "1")  # 9.5 + 1 > 10
    attempts = Attempts(policy, Call("GET", "/x"), lambda: 0.0)
    for _ in range(2):
        attempts.on_transport_error(httpx.ConnectError("refused"), connect=True)
    with pytest.raises(ConnectionFailed):
        attempts.on_transport_error(httpx.ConnectError("refused"), connect=True)


def test_a_non_idempotent_call_is_retried_only_when_it_never_left() -> None:
    """An upload is retried after a refused connection, not after one cut mid-request."""
    attempts = Attempts(FAST, Call("POST", "/upload-model", idempotent=False), lambda: 0.0)
    assert attempts.on_transport_error(httpx.ConnectError("refused"), connect=True) > 0
    with pytest.raises(ConnectionFailed, match="may have been run"):
        attempts.on_transport_error(httpx.ReadError("reset"), connect=False)


# --- the drivers ------------------------------------------------------------------------------


def test_run_task_retries_with_the_same_task_id() -> None:
    """503 (Retry-After 0) and a dropped connection are retried; every send has one id."""
    handle, seen = scripted(
        (503, {"error": "shutting_down", "detail": "x"}, {"Retry-After": "0"}),
        httpx.ReadError("connection reset"),
        (200, echo_id, {}),
    )
    with Client("http://d", retry=FAST, transport=httpx.MockTransport(handle)) as client:
        done = client.run_task("sample_task", "a", {"run_ms": 1})
    ids = {json.loads(r.content)["task_id"] for r in seen}
    assert len(seen) == 3 and ids == {done.task_id}
    assert done.result == {"ok": 1} and done.worker_id == "w1"


def test_several_dispatchers_fail_over_in_turn_with_the_same_task_id() -> None:
    """A dropped connection on A and a 503 on B move on to C, which then stays current; a 429
    (the caller's own limit) retries the same dispatcher."""
    handle, seen = scripted(
        httpx.ReadError("connection reset"),
        (503, {"error": "shutting_down", "detail": "x"}, {"Retry-After": "0"}),
        (429, {"error": "caller_busy", "detail": "x"}, {"Retry-After": "0"}),
        (200, echo_id, {}),
        (200, echo_id, {}),
    )
    urls = ["http://a", "http://b/", "http://c"]
    with Client(urls, retry=FAST, transport=httpx.MockTransport(handle)) as client:
        first = client.run_task("sample_task", "x")
        client.run_task("sample_task", "x")
    assert [r.url.host for r in seen] == ["a", "b", "c", "c", "c"]
    assert {json.loads(r.content)["task_id"] for r in seen[:4]} == {first.task_id}
    with pytest.raises(ValueError):
        Client([])


def test_embed_models_workers_and_errors() -> None:
    """Typed results of embed, models and workers; an error answer is an APIError."""
    embedded = {
        **DONE,
        "task_id": "e",
        "result": {
            "embeddings": [[0.1, 0.2]],
            "dimension": 2,
            "model": "m",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        },
    }
    worker = {
        "worker_id": "w1", "state": "ready", "capacity": 2, "slots": 1, "engine": "triton",
        "device": "cpu", "labels": ["m"], "labels_loading": [], "in_flight": 0,
        "completed": 3, "misses": 1,
    }  # fmt: skip
    handle, seen = scripted(
        (200, embedded, {}),
        (200, {"object": "list", "data": [{"id": "m", "object": "model"}]}, {}),
        (200, {"workers": [worker]}, {}),
        (404, {"error": {"message": "gone", "type": "t", "param": None, "code": "nope"}}, {}),
    )
    with Client("http://d", api_key="k", transport=httpx.MockTransport(handle)) as client:
        vectors = client.embed(["hello"], model="m")
        assert client.models() == ["m"]
        assert client.workers()[0].completed == 3
        with pytest.raises(APIError) as info:
            client.cancel("x")
    assert vectors.vectors == [[0.1, 0.2]] and vectors.prompt_tokens == 4
    assert json.loads(seen[0].content)["parameters"] == {"texts": ["hello"], "normalize": True}
    assert seen[0].headers["authorization"] == "Bearer k"
    assert (info.value.status, info.value.code) == (404, "nope")


async def test_async_client_submits_and_waits_through_a_shutdown() -> None:
    """The async driver: submit, a long poll, a task failed by a dispatcher shutting down is
    waited out (its successor runs it), then the result; a timeout is TaskTimeout."""
    failed = {"task_id": "t", "status": "failed", "error": {"error": "shutting_down"}}
    handle, seen = scripted(
        (202, {"task_id": "t", "status": "queued", "status_url": "/tasks/t"}, {}),
        (200, {"task_id": "t", "status": "running"}, {}),
        (200, failed, {}),
        httpx.ConnectError("refused"),
        (200, {**DONE, "task_id": "t"}, {}),
    )
    retry = RetryPolicy(attempts=5, budget_s=5.0, backoff_s=0.001, max_backoff_s=0.002)
    transport = httpx.MockTransport(handle)
    async with AsyncClient("http://d", retry=retry, transport=transport) as client:
        client_wait = asyncio.create_task(
            client.run_task("sample_task", "a", task_id="t", durable=True)
        )
        done = await asyncio.wait_for(client_wait, scaled(10))
    assert done.task_id == "t" and done.result == {"ok": 1}
    assert [r.method for r in seen] == ["POST", "GET", "GET", "GET", "GET"]
    assert float(seen[1].url.params["wait_s"]) > 0

    queued = httpx.Response(200, json={"task_id": "t", "status": "queued"})
    async with AsyncClient("http://d", transport=httpx.MockTransport(lambda r: queued)) as client:
        with pytest.raises(TaskTimeout):
            await client.result("t", timeout_s=0.001)


# --- exactly once across a dispatcher SIGKILL -------------------------------------------------


def recorded(db: Path) -> list[str | None]:
    """The worker ids the state database keeps for its tasks (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT worker_id FROM tasks")]


class CountingEngine(SimulatedEngine):
    """The simulated engine, counting each execution of `sample_task`."""

    def __init__(self) -> None:
        super().__init__(load_ms=0.0, load_stddev_ms=0.0, run_ms=0.0, run_stddev_ms=0.0)
        self.executions = 0
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    async def sample(self, label: str, run_ms: float | None) -> dict[str, Any]:
        self.executions += 1
        self.started.set()
        try:
            return await super().sample(label, run_ms)
        finally:
            self.finished.set()


async def test_client_retries_across_a_dispatcher_sigkill_and_the_task_runs_once(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    """kill -9 of the dispatcher (state DB on) while the client waits for a durable task; the
    worker finishes it meanwhile; after the restart the client gets the result, and the
    worker ran it exactly once (its buffered result answered the restored task)."""
    port = free_port()
    db = tmp_path / "state.db"
    args = ["--state-db", str(db), "--log-level", "warning"]
    args += ["--ws-ping-interval-s", "1", "--ws-ping-timeout-s", "2"]
    first = await asyncio.to_thread(processes.dispatcher, port, *args, name="dispatcher-1")
    engine = CountingEngine()
    config = WorkerConfig(
        dispatcher_url=(f"ws://127.0.0.1:{port}/worker-listen",),
        worker_id="w-once",
        engine="simulated",
        reconnect_max_backoff_s=0.3,
        state_dir=tmp_path / "worker",
    )
    worker = Worker(config, engine=engine)
    running = asyncio.create_task(worker.run())
    retry = RetryPolicy(attempts=200, budget_s=scaled(60), max_backoff_s=0.5)
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", retry=retry) as client:
            waiting = asyncio.create_task(
                client.run_task("sample_task", "a", {"run_ms": 1500}, durable=True, timeout_s=60)
            )
            await asyncio.wait_for(engine.started.wait(), scaled(30))
            # The dispatch is recorded off the event loop; kill once it is on disk (the kill
            # is meant to catch the task running, not that write in flight).
            await asyncio.to_thread(wait_until, lambda: recorded(db) == ["w-once"], 10, "row")
            first.signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, scaled(10))
            # The worker finishes while no dispatcher runs: its result waits in its outbox.
            await asyncio.wait_for(engine.finished.wait(), scaled(30))
            assert not waiting.done()
            await asyncio.to_thread(processes.dispatcher, port, *args, name="dispatcher-2")
            done = await asyncio.wait_for(waiting, scaled(60))
            stats = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/stats")).json()
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, scaled(30))
    assert done.result["label"] == "a" and done.worker_id == "w-once"
    assert engine.executions == 1 and worker.tasks_run == 1
    assert stats["tasks_completed"] == 1 and stats["tasks_submitted"] == 1
