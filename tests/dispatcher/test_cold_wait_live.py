"""The cold wait in a real dispatcher: uvicorn, asyncio timers, fake workers over websockets.

The policy's tables (tests/dispatcher/test_placement.py) and the simulator show what the wait
decides; here the decision's re-check runs on the server's own clock, and a waiting task is
answered either way: loaded once its wait is over, or 504 when its deadline comes first.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.dispatcher.test_logs import samples, value

pytestmark = pytest.mark.timeout(60)


def task(label: str, **extra: Any) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters_json": "{}", **extra}


async def _warm_up(client: httpx.AsyncClient) -> None:
    """Both workers' only labels in demand: evicting either costs more than a new label is
    worth, so a task for a label nobody holds must wait."""
    for _ in range(5):
        for label in ("a", "b"):
            answer = await client.post("/run-task", json=task(label))
            assert answer.status_code == 200 and answer.json()["label_miss"] is False


def _cold_waits(metrics: str) -> float:
    return (
        value(samples(metrics), "smartrouting_routing_decisions_total", reason="cold_wait") or 0.0
    )


@pytest.mark.parametrize("cold_wait_ms", [0.0, 300.0])
async def test_a_cold_task_waits_then_loads(dispatcher_factory, workers, cold_wait_ms) -> None:
    """With the wait on, the task for "c" is queued as a cold wait, then loaded on one of
    the workers once the wait is over (the server's re-check timer, no worker frees up);
    with it off, it is loaded at once. Either way it is answered with its result."""
    d = dispatcher_factory(task_timeout_s=20.0, cold_wait_ms=cold_wait_ms, cold_wait_adaptive=False)
    await workers(d.ws_url, "w-a", capacity=1, labels=["a"])
    await workers(d.ws_url, "w-b", capacity=1, labels=["b"])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30.0) as client:
        await _warm_up(client)
        answer = await client.post("/run-task", json=task("c"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label_miss"] is True
        assert body["result"] == {"label": "c", "worker": body["worker_id"]}
        metrics = (await client.get("/metrics")).text
        assert _cold_waits(metrics) == (1.0 if cold_wait_ms else 0.0)
        # The hold ran out with no cheap worker: it did not pay, and the gauge says so.
        assert d.core.cold_payoff.holds_total == (1 if cold_wait_ms else 0)
        assert d.core.cold_payoff.paid_total == 0
        assert value(samples(metrics), "smartrouting_cold_wait_paid_share") == 0.0
        labels = (await client.get("/labels")).json()
        assert labels["c"] == [body["worker_id"]]


async def test_a_cold_task_past_its_deadline_is_answered(dispatcher_factory, workers) -> None:
    """A task still waiting for a cheap place when its deadline passes gets 504, and no
    worker was sent it: the wait never drops a task."""
    d = dispatcher_factory(task_timeout_s=20.0, cold_wait_ms=30_000.0, cold_wait_adaptive=False)
    wa = await workers(d.ws_url, "w-a", capacity=1, labels=["a"])
    wb = await workers(d.ws_url, "w-b", capacity=1, labels=["b"])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30.0) as client:
        await _warm_up(client)
        answer = await client.post("/run-task", json=task("c", timeout_s=0.5))
        assert answer.status_code == 504, answer.text
        assert answer.json()["error"] == "deadline_exceeded"
        assert _cold_waits((await client.get("/metrics")).text) == 1.0
        stats = (await client.get("/stats")).json()
        assert stats["queue_depth"] == 0
    assert all(frame.label != "c" for frame in wa.received + wb.received)
