"""Probes (/livez, /readyz) and the answer to tasks while no worker is connected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dispatcher.errors import DeadlineExceeded, NoWorkers
from dispatcher.tasks import TaskState
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.test_core import harness
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


# --- no worker connected: 503 after a grace, not at the deadline (sans-I/O core) -----------


def test_a_task_with_no_worker_fails_503_after_the_grace() -> None:
    """Queued with no worker, the task fails no_workers (with Retry-After) at the grace."""
    h = harness(no_worker_grace_s=5.0, retry_after_s=2.0)
    task = h.submit("a", timeout_s=300.0)
    h.advance(4.9)
    assert task.state is TaskState.QUEUED
    h.advance(0.2)
    assert task.state is TaskState.FAILED and isinstance(task.error, NoWorkers)
    assert task.error.http_status == 503 and task.error.retry_after_s == 2.0
    assert task.task_id not in h.core.queue


def test_a_worker_joining_within_the_grace_runs_the_task() -> None:
    """A worker that arrives before the grace ends gets the task; the grace then does nothing."""
    h = harness(no_worker_grace_s=5.0)
    task = h.submit("a", timeout_s=300.0)
    h.advance(1.0)
    link = h.join("w1", ("a",))
    assert [t.task_id for t in link.tasks()] == [task.task_id]
    h.advance(5.0)  # past the grace, before the soft timeout
    assert task.state is TaskState.RUNNING
    h.answer("w1", task.task_id, result_json="{}", labels_loaded=["a"])
    assert task.state is TaskState.COMPLETED


def test_the_grace_only_counts_when_no_worker_is_connected() -> None:
    """With a (busy) worker connected a queued task waits for it, past the grace."""
    h = harness(no_worker_grace_s=5.0)
    h.join("w1", ("a",))
    running = h.submit("a", timeout_s=300.0)
    queued = h.submit("a", timeout_s=300.0)
    h.advance(8.0)  # past the grace, before the soft timeout
    assert running.state is TaskState.RUNNING and queued.state is TaskState.QUEUED


def test_a_grace_of_zero_waits_for_the_deadline() -> None:
    """`--no-worker-grace-s 0` keeps the old behaviour: 504 at the deadline."""
    h = harness(no_worker_grace_s=0.0)
    task = h.submit("a", timeout_s=60.0)
    h.advance(59.0)
    assert task.state is TaskState.QUEUED
    h.advance(1.0)
    assert isinstance(task.error, DeadlineExceeded)


def test_a_restored_task_is_not_failed_by_the_grace() -> None:
    """After a restart workers need a moment to come back: restored tasks wait for them."""
    h = harness(no_worker_grace_s=5.0)
    task = h.admission.admit("t", "a", "{}", timeout_s=300.0)
    task.restored = True
    h.core.accept(task)
    h.advance(30.0)
    assert task.state is TaskState.QUEUED


# --- the probes over HTTP, with a real dispatcher and a protocol-speaking worker -----------


async def test_readyz_is_503_without_a_worker_and_200_with_one(
    dispatcher: RunningDispatcher, workers: Callable[..., Any]
) -> None:
    """/livez is 200 throughout; /readyz 503 (JSON, Retry-After) until a worker connects."""
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=10.0) as client:
        assert (await client.get("/livez")).json() == {"status": "alive"}
        answer = await client.get("/readyz")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json() == {
            "status": "not_ready",
            "workers": 0,
            "ready_min_workers": 1,
            "detail": "0 of the 1 workers needed are connected",
        }
        worker = await workers(dispatcher.ws_url, "w1")
        answer = await client.get("/readyz")
        assert answer.status_code == 200
        assert answer.json() == {
            "status": "ready",
            "workers": 1,
            "ready_min_workers": 1,
            "detail": None,
        }
        await worker.close()
        wait_until(lambda: not dispatcher.core.registry.workers, 10, "the worker to leave")
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/livez")).status_code == 200


async def test_readyz_waits_for_ready_min_workers(
    dispatcher_factory: Callable[..., RunningDispatcher], workers: Callable[..., Any]
) -> None:
    """With --ready-min-workers 2, one worker is not enough."""
    running = dispatcher_factory(ready_min_workers=2)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10.0) as client:
        await workers(running.ws_url, "w1")
        answer = await client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["workers"] == 1
        await workers(running.ws_url, "w2")
        assert (await client.get("/readyz")).status_code == 200


async def test_probes_need_no_key(dispatcher_factory: Callable[..., RunningDispatcher]) -> None:
    """With API keys on, the probes stay open (the kubelet has no key); /status.json does not."""
    running = dispatcher_factory(api_keys=("k1",), worker_token="t", ready_min_workers=0)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10.0) as client:
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/dashboard")).status_code == 200
        assert (await client.get("/status.json")).status_code == 401
        authorised = await client.get("/status.json", headers={"X-API-Key": "k1"})
        assert authorised.status_code == 200


async def test_run_task_without_workers_answers_503_after_the_grace(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """/run-task with no worker: 503 no_workers with Retry-After after the grace, long before
    the deadline."""
    running = dispatcher_factory(no_worker_grace_s=0.5, task_timeout_s=60.0, retry_after_s=3.0)
    body = {"task_type": "sample_task", "label": "a", "parameters_json": "{}"}
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30.0) as client:
        started = time.monotonic()
        answer = await client.post("/run-task", json=body)
        waited = time.monotonic() - started
    assert answer.status_code == 503 and answer.headers["retry-after"] == "3"
    assert answer.json()["error"] == "no_workers"
    assert 0.4 <= waited < 10.0
