"""The OpenAI-compatible API against a real dispatcher and a protocol-level fake worker.

The fake's "model" embeds a text as `[len(text), 0.5, -1.25]` and counts one token per word,
so every number the endpoint passes on can be checked exactly; the real model and tokenizer
are checked in tests/worker/test_openai_triton.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import msgspec
import openai
import pytest

from dispatcher.openai_api import EmbeddingsAnswer, ModelList, OpenAIError
from proto import frames
from proto import smartrouting_pb2 as pb
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker

pytestmark = pytest.mark.timeout(60)


@dataclass
class EmbeddingWorker(FakeWorker):
    """A fake worker answering `embed_texts` as a 3-dimensional model (label "missing": no
    such model)."""

    async def _run(self, task: pb.Task) -> None:
        texts = json.loads(task.parameters_json)["texts"]
        if task.label == "missing":
            result = pb.TaskResult(
                task_id=task.task_id,
                ok=False,
                error_code=pb.MODEL_NOT_FOUND,
                error_message=f"no model {task.label!r}",
            )
        else:
            tokens = sum(len(t.split()) for t in texts)
            body = {
                "embeddings": [[float(len(t)), 0.5, -1.25] for t in texts],
                "dimension": 3,
                "model": task.label,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            result = pb.TaskResult(
                task_id=task.task_id, ok=True, result_json=json.dumps(body), label=task.label
            )
        result.labels_loaded.extend(self.loaded)
        assert self.ws is not None
        await self.ws.send(frames.encode(pb.WorkerMessage(task_result=result)))


@pytest.fixture
async def embedder(dispatcher: RunningDispatcher) -> AsyncIterator[EmbeddingWorker]:
    worker = await EmbeddingWorker(dispatcher.ws_url, "emb-1", labels=["tiny"]).start()
    yield worker
    await worker.close()


@pytest.fixture
async def client(dispatcher: RunningDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as c:
        yield c


def error_of(answer: httpx.Response) -> dict[str, object]:
    """The OpenAI error of an answer, decoded strictly."""
    detail = msgspec.json.decode(answer.content, type=OpenAIError).error
    return msgspec.structs.asdict(detail)


async def test_float_embeddings_in_openai_shape(
    dispatcher: RunningDispatcher, embedder: EmbeddingWorker, client: httpx.AsyncClient
) -> None:
    """A list input answers one embedding per text, in order, with the worker's token count;
    the task was routed as embed_texts (it is counted in /stats)."""
    body = {"model": "tiny", "input": ["one two", "three"]}
    answer = await client.post("/v1/embeddings", json=body)
    assert answer.status_code == 200, answer.text
    decoded = msgspec.json.decode(answer.content, type=EmbeddingsAnswer)
    assert [d.index for d in decoded.data] == [0, 1]
    assert [d.embedding for d in decoded.data] == [[7.0, 0.5, -1.25], [5.0, 0.5, -1.25]]
    assert (decoded.model, decoded.usage.prompt_tokens, decoded.usage.total_tokens) == (
        "tiny",
        3,
        3,
    )
    task = embedder.received[0]
    assert task.task_type == "embed_texts" and json.loads(task.parameters_json) == {
        "texts": ["one two", "three"]
    }
    stats = (await client.get("/stats")).json()
    assert stats["per_label"]["tiny"]["completed"] == 1


async def test_base64_is_little_endian_float32(
    embedder: EmbeddingWorker, client: httpx.AsyncClient
) -> None:
    """`encoding_format: base64` carries the same numbers as float32 bytes; a string input is
    one text."""
    answer = await client.post(
        "/v1/embeddings", json={"model": "tiny", "input": "abc", "encoding_format": "base64"}
    )
    raw = base64.b64decode(answer.json()["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (3.0, 0.5, -1.25)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "tiny", "input": [101, 2023]}, "input[0]", "token-id input"),
        ({"model": "tiny", "input": [[101, 2023]]}, "input[0]", "token-id input"),
        ({"model": "tiny", "input": []}, "input", "non-empty"),
        ({"model": "tiny", "input": "x", "encoding_format": "int8"}, "encoding_format", ""),
        ({"model": "tiny", "input": "x", "extra": 1}, "extra", "not a known field"),
        ({"input": "x"}, "model", "required"),
    ],
)
async def test_bad_requests_are_400_naming_the_parameter(
    client: httpx.AsyncClient, body: dict[str, object], param: str, words: str
) -> None:
    """Malformed bodies and token-id input are 400 invalid_request_error with `param` set."""
    answer = await client.post("/v1/embeddings", json=body)
    error = error_of(answer)
    assert answer.status_code == 400, answer.text
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in str(error["message"])


async def test_unknown_model_is_404_model_not_found(
    embedder: EmbeddingWorker, client: httpx.AsyncClient
) -> None:
    """A label no worker has: OpenAI's 404 with code model_not_found."""
    answer = await client.post("/v1/embeddings", json={"model": "missing", "input": "x"})
    assert answer.status_code == 404
    assert error_of(answer) == {
        "message": "The model `missing` does not exist",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert error_of(await client.get("/v1/nothing-here"))["code"] == "not_found"


async def test_dimensions_only_as_the_models_own(
    embedder: EmbeddingWorker, client: httpx.AsyncClient
) -> None:
    """`dimensions` equal to the model's is accepted; another is refused, before running once
    the dimension is known."""
    ok = await client.post("/v1/embeddings", json={"model": "tiny", "input": "x", "dimensions": 3})
    assert ok.status_code == 200
    bad = await client.post("/v1/embeddings", json={"model": "tiny", "input": "x", "dimensions": 2})
    assert bad.status_code == 400
    assert error_of(bad)["code"] == "unsupported_parameter"
    assert error_of(bad)["param"] == "dimensions"
    assert len(embedder.received) == 1


async def test_models_lists_the_known_labels(
    embedder: EmbeddingWorker, client: httpx.AsyncClient
) -> None:
    """/v1/models lists the labels workers hold."""
    models = msgspec.json.decode((await client.get("/v1/models")).content, type=ModelList)
    assert [m.id for m in models.data] == ["tiny"] and models.data[0].owned_by


async def test_api_keys_and_limits_apply_in_openai_shape(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """API keys are Bearer keys here too (401 in OpenAI's shape); a full queue is 429 with
    Retry-After, as on /run-task."""
    d = dispatcher_factory(api_keys=("k1",), max_queue=1, task_timeout_s=5.0)
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30.0) as client:
        refused = await client.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
        assert refused.status_code == 401 and error_of(refused)["code"] == "invalid_api_key"
        headers = {"Authorization": "Bearer k1"}
        body = {"model": "tiny", "input": "x"}
        first = asyncio.create_task(client.post("/v1/embeddings", json=body, headers=headers))
        for _ in range(500):  # no worker: the first task waits in the queue
            if (await client.get("/stats", headers=headers)).json()["queue_depth"] == 1:
                break
        full = await client.post("/v1/embeddings", json=body, headers=headers)
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert error_of(full)["type"] == "rate_limit_error"
        worker = await EmbeddingWorker(d.ws_url, "emb-2", labels=["tiny"]).start()
        try:
            assert (await asyncio.wait_for(first, 10)).status_code == 200
        finally:
            await worker.close()


async def test_the_official_openai_client(
    dispatcher: RunningDispatcher, embedder: EmbeddingWorker
) -> None:
    """The `openai` package works unchanged: base64 (its default) and float, models, errors."""
    async with openai.AsyncOpenAI(
        base_url=dispatcher.base_url + "/v1", api_key="unused", max_retries=0
    ) as client:
        default = await client.embeddings.create(model="tiny", input=["hello world"])
        floats = await client.embeddings.create(model="tiny", input="hi", encoding_format="float")
        listed = await client.models.list()
        with pytest.raises(openai.NotFoundError) as missing:
            await client.embeddings.create(model="missing", input="x")
    assert default.data[0].embedding == [11.0, 0.5, -1.25]
    assert default.usage.prompt_tokens == 2
    assert floats.data[0].embedding == [2.0, 0.5, -1.25]
    assert [m.id for m in listed.data] == ["tiny"]
    assert missing.value.code == "model_not_found"
