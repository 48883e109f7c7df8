"""Limits: each bad input class gets its own clear 4xx/429 from a real dispatcher.

Already covered in test_integration.py: 413 with a declared Content-Length, 429 queue_full on
/run-task, 1008 on garbage frames. Here: the rest of issue 7's list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from dispatcher.limits import check_parameters, json_depth
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker

pytestmark = pytest.mark.timeout(60)


def embed(texts: list[str]) -> dict[str, object]:
    return {"task_type": "embed_texts", "label": "m", "parameters": {"texts": texts}}


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
async def client(dispatcher: RunningDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as c:
        yield c


async def test_streamed_body_over_limit_gets_413(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """A chunked body with no Content-Length is cut off at the limit with 413 JSON."""
    d = dispatcher_factory(max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"task_type": "t", "label": "a", "parameters_json": "'
        for _ in range(64):
            yield b"x" * 100

    async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
        answer = await client.post("/tasks", content=chunks())
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (embed(["t"] * 257), "parameters.texts"),
        (embed(["ok", "x" * 20_001]), "parameters.texts[1]"),
        (
            {
                "task_type": "embed_texts",
                "label": "m",
                "parameters_json": json.dumps({"texts": ["t"] * 300}),
            },
            "parameters_json.texts",
        ),
        ({"task_type": "t", "label": "a", "parameters": nested(33)}, "parameters"),
        (
            {"task_type": "t", "label": "a", "parameters_json": json.dumps(nested(40))},
            "parameters_json",
        ),
    ],
    ids=["too-many-texts", "text-too-long", "texts-in-json-string", "depth-33", "depth-json"],
)
async def test_oversized_parameters_get_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    """Too many texts, a too long text or nesting past 32 is refused early with 422."""
    for path in ("/run-task", "/tasks"):
        answer = await client.post(path, json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "validation_failed"
        assert answer.json()["detail"]["field"] == field


async def test_limits_at_the_boundary_are_accepted(client: httpx.AsyncClient) -> None:
    """256 texts of 20,000 characters and depth 32 are still accepted (202)."""
    ok = await client.post("/tasks", json=embed(["x" * 20_000] + ["t"] * 255))
    assert ok.status_code == 202, ok.text
    deep = await client.post(
        "/tasks", json={"task_type": "t", "label": "a", "parameters": nested(31)}
    )
    assert deep.status_code == 202, deep.text


async def test_json_nested_past_the_parser_gets_4xx_not_500(client: httpx.AsyncClient) -> None:
    """100,000 nested arrays (Python's parser recursion limit) is a 422, not a crash."""
    deep = "[" * 100_000 + "]" * 100_000
    body = b'{"task_type": "t", "label": "a", "parameters_json": "' + deep.encode() + b'"}'
    for content in (body, deep.encode()):
        answer = await client.post("/run-task", content=content)
        assert answer.status_code == 422, answer.text[:200]
        assert answer.json()["error"] == "validation_failed"
    assert (await client.get("/health")).status_code == 200


async def test_per_caller_limit_answers_429_and_spares_others(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """Past max_tasks_per_caller unfinished tasks: 429 caller_busy; another key still gets in."""
    d = dispatcher_factory(max_tasks_per_caller=2, api_keys=("k1", "k2"), task_timeout_s=10.0)
    body = {"task_type": "sample_task", "label": "a"}
    async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
        k1 = {"X-API-Key": "k1"}
        mine = [(await client.post("/tasks", json=body, headers=k1)) for _ in range(2)]
        assert [a.status_code for a in mine] == [202, 202]
        busy = await client.post("/tasks", json=body, headers=k1)
        assert (busy.status_code, busy.json()["error"]) == (429, "caller_busy")
        assert busy.headers["retry-after"] == "1"
        other = await client.post("/tasks", json=body, headers={"X-API-Key": "k2"})
        assert other.status_code == 202
        # Once k1's tasks have finished, k1 may submit again.
        worker = await FakeWorker(d.ws_url, "w1", labels=["a"]).start()
        try:
            await worker.wait_for_tasks(3)
            for answer in mine:
                url = answer.json()["status_url"]
                for _ in range(500):  # each GET yields to the server; a result is moments away
                    if (await client.get(url, headers=k1)).json()["status"] == "completed":
                        break
                else:
                    pytest.fail(f"{url} never completed")
            again = await client.post("/run-task", json=body, headers=k1)
            assert again.status_code == 200, again.text
        finally:
            await worker.close()


async def test_async_queue_full_answers_429(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """POST /tasks past max_queue: 429 queue_full with Retry-After, nothing half-accepted."""
    d = dispatcher_factory(max_queue=2)
    async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
        body = {"task_type": "t", "label": "a"}
        ids = [(await client.post("/tasks", json=body)).json()["task_id"] for _ in range(2)]
        full = await client.post("/tasks", json={**body, "task_id": "third"})
        assert (full.status_code, full.json()["error"]) == (429, "queue_full")
        assert "retry-after" in full.headers
        assert (await client.get("/tasks/third")).status_code == 404
        for task_id in ids:
            assert (await client.get(f"/tasks/{task_id}")).json()["status"] == "queued"


def test_depth_and_text_checks_are_pure() -> None:
    """json_depth counts containers; check_parameters ignores non-text parameters."""
    assert [json_depth(v) for v in (1, [], {}, [[1]], {"a": [{"b": 2}]})] == [0, 1, 1, 2, 3]
    check_parameters({"texts": "not a list"}, 32, 1, 1, "p")  # the worker judges this one
    check_parameters([1, 2, 3], 32, 1, 1, "p")
