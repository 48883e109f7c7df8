"""Task ids are safe, unique while kept, and belong to the key that made them (hardening review,
finding 7), and a synchronous caller that leaves has its task cancelled (finding 10).

Before: reusing the id of a finished task replaced its stored result, and another API key could
read it; ids like `a/b` or `..` were accepted (202) but could never be read; `status_url` was
not percent-encoded; a /run-task caller that disconnected left its task queued and running.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial
from operator import contains
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.support import scaled

pytestmark = pytest.mark.timeout(60)

BODY = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}


@pytest.fixture
async def keyed(
    dispatchers: Callable[..., RunningDispatcher],
) -> AsyncIterator[tuple[RunningDispatcher, httpx.AsyncClient, httpx.AsyncClient]]:
    """A dispatcher with two API keys and a worker; a client for each key."""
    running = dispatchers(api_keys=("key-a", "key-b"), task_timeout_s=20.0)
    worker = await FakeWorker(running.ws_url, "w1", labels=["a"]).start()
    async with (
        httpx.AsyncClient(base_url=running.base_url, headers={"X-API-Key": "key-a"}) as a,
        httpx.AsyncClient(base_url=running.base_url, headers={"X-API-Key": "key-b"}) as b,
    ):
        yield running, a, b
    await worker.close()


@pytest.mark.parametrize(
    "task_id", ["a/b", "..", ".", "a b", "a%2Fb", "-lead", "é", "x" * 129, "a?b", "a#b"]
)
async def test_unsafe_task_ids_are_refused_422(
    dispatchers: Callable[..., RunningDispatcher], task_id: str
) -> None:
    """Finding 7: ids like `a/b` or `..` were accepted (202) and could never be read. Anything
    outside letters, digits and `._~-` (starting with a letter or digit, 128 at most) is 422
    naming task_id, on both task endpoints."""
    running = dispatchers()
    async with httpx.AsyncClient(base_url=running.base_url) as client:
        for path in ("/tasks", "/run-task"):
            refused = await client.post(path, json={**BODY, "task_id": task_id})
            assert refused.status_code == 422, (path, refused.text)
            assert refused.json()["detail"]["field"] == "task_id"


async def test_a_safe_id_round_trips_through_its_encoded_status_url(
    dispatchers: Callable[..., RunningDispatcher],
) -> None:
    """Finding 7: `status_url` is the id percent-encoded, and it reads the task back."""
    running = dispatchers()
    task_id = "Job-1.2_3~4"
    async with httpx.AsyncClient(base_url=running.base_url) as client:
        accepted = (await client.post("/tasks", json={**BODY, "task_id": task_id})).json()
        assert accepted["status_url"] == "/tasks/" + quote(task_id, safe="")
        state = await client.get(accepted["status_url"])
        assert (state.status_code, state.json()["task_id"]) == (200, task_id)


async def test_another_key_can_neither_read_nor_replace_a_finished_task(
    keyed: tuple[RunningDispatcher, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Finding 7: reusing a finished task's id replaced its stored result, and another API key
    could read it. Another key gets 404 on GET and DELETE, 409 on reuse (same body or not);
    the owner still reads its own result, unchanged."""
    _, a, b = keyed
    first = await a.post("/run-task", json={**BODY, "task_id": "mine"})
    assert first.status_code == 200, first.text
    assert (await b.get("/tasks/mine")).status_code == 404
    assert (await b.delete("/tasks/mine")).status_code == 404
    for body in (BODY, {**BODY, "parameters": {"run_ms": 2}}):
        for path in ("/tasks", "/run-task"):
            reused = await b.post(path, json={**body, "task_id": "mine"})
            assert (reused.status_code, reused.json()["error"]) == (409, "task_id_conflict")
            assert "completed" not in reused.text  # nothing of the task is told
    own = await a.get("/tasks/mine")
    assert own.status_code == 200 and own.json()["result"] == first.json()["result"]
    assert (await a.post("/tasks", json={**BODY, "task_id": "mine"})).json()["status"] == (
        "completed"
    )


async def test_another_key_cannot_see_a_running_task(
    keyed: tuple[RunningDispatcher, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Finding 7: a queued or running task is the submitting key's alone (404 to another)."""
    _, a, b = keyed
    accepted = await a.post("/tasks", json={**BODY, "task_id": "live-1"})
    assert accepted.status_code == 202
    assert (await b.get(accepted.json()["status_url"])).status_code == 404
    done = await a.get(accepted.json()["status_url"], params={"wait_s": 10})
    assert done.json()["status"] == "completed"


async def test_a_disconnected_sync_caller_has_its_task_cancelled(
    dispatchers: Callable[..., RunningDispatcher],
) -> None:
    """Finding 10: a /run-task caller that disconnected left its task queued and running. The
    worker holding it receives Cancel, and the task leaves the running set at once; a queued
    one leaves the queue."""
    running = dispatchers(task_timeout_s=30.0)
    worker = await FakeWorker(running.ws_url, "w1", labels=["a"]).start()
    worker.hold()
    try:
        host, port = "127.0.0.1", running.port
        callers = []
        for task_id in ("held", "queued"):  # the worker has one slot: the second one queues
            callers.append(await raw_post(host, port, {**BODY, "task_id": task_id}))
            await wait_for(partial(contains, running.core.results, task_id), "the task")
        await worker.wait_for_tasks(1)
        assert "held" in running.core.running and "queued" in running.core.queue
        for sock in callers:
            sock.close()  # the callers go away
        await wait_for(lambda: [c.task_id for c in worker.cancels] == ["held"], "Cancel")
        await wait_for(lambda: not running.core.running and not running.core.queue, "cleanup")
        for task_id in ("held", "queued"):
            assert running.core.results.get(task_id).error.code == "caller_gone"
    finally:
        worker.release()
        await worker.close()


async def raw_post(host: str, port: int, body: dict[str, Any]) -> socket.socket:
    """Send a /run-task request on a raw socket and return it, unread."""
    payload = httpx.Request("POST", f"http://{host}:{port}/run-task", json=body)
    content = payload.read()
    head = (
        f"POST /run-task HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port))
    sock.sendall(head + content)
    return sock


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait (yielding to the loop) until `condition()` holds."""
    deadline = asyncio.get_running_loop().time() + scaled(timeout)
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # the server runs in another thread: poll its state
