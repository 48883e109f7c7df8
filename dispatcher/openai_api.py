"""The OpenAI-compatible embeddings API: `POST /v1/embeddings` and `GET /v1/models`.

Embedding servers users already know (text-embeddings-inference, Infinity, vLLM, Ollama) answer
OpenAI's embeddings API, so the `openai` client, LangChain and LlamaIndex work against them
unchanged; these endpoints make the dispatcher one of them. A request is an `embed_texts` task
routed exactly as `/run-task` routes one: `model` is the label, and admission, the policy,
metrics, per-caller limits and API keys (`Authorization: Bearer`) are the same.

- `input`: a string or a list of strings; token-id input (integers) is refused (400): the
  worker tokenizes with the model's own tokenizer.
- `encoding_format`: `float` (lists of numbers) or `base64` (little-endian float32 bytes, as
  OpenAI sends them; the `openai` client asks for this by default and decodes it).
- `dimensions`: no model here can shorten its embeddings, so it is refused (400
  `unsupported_parameter`) unless it equals the model's dimension.
- `usage`: the tokens the model's tokenizer made of the input (the worker counts them).

Errors under `/v1/` are rendered in OpenAI's shape (`dispatcher.errors.openai_error_json`);
an unknown model is 404 `model_not_found`. Bodies are described below as msgspec classes and
listed in `dispatcher.operations`, like every other endpoint (docs/architecture.md §4.1).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from array import array
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.config import Config
from dispatcher.errors import (
    DispatcherError,
    ModelNotFound,
    TaskFailed,
    UnsupportedParameter,
    ValidationFailed,
)
from dispatcher.runtime import Dispatcher
from dispatcher.schemas import Name, decode_body, read_body
from dispatcher.tasks import TaskRecord, TaskState
from smartrouting.texts import EMBED_TEXTS, TextLimits, texts_problem

OWNER = "smart-routing"

# --- bodies --------------------------------------------------------------------------------

#: What OpenAI's API takes as `input`; token ids (integers) are refused with a clear message.
Input = str | list[str | int | list[int]]


class EmbeddingsRequest(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """OpenAI's embeddings request; `model` is the label of the model to run."""

    model: Annotated[Name, Meta(description="the label", examples=["all-MiniLM-L6-v2"])]
    input: Annotated[
        Input, Meta(description="a text or a list of texts (token ids are not accepted)")
    ]
    encoding_format: Annotated[
        Literal["float", "base64"],
        Meta(description="`base64`: little-endian float32 bytes of each embedding"),
    ] = "float"
    dimensions: (
        Annotated[int, Meta(ge=1, description="must equal the model's dimension")] | None
    ) = None
    user: Annotated[str, Meta(description="accepted for compatibility, unused")] | None = None


class Embedding(Struct, forbid_unknown_fields=True):
    """One input's embedding."""

    object: Literal["embedding"]
    index: int
    embedding: Annotated[list[float] | str, Meta(description="floats, or base64 float32")]


class EmbeddingsUsage(Struct, forbid_unknown_fields=True):
    """Tokens the model's tokenizer made of the input."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsAnswer(Struct, forbid_unknown_fields=True):
    """OpenAI's embeddings answer."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class ModelCard(Struct, forbid_unknown_fields=True):
    """A label the dispatcher knows (held by a worker, or run since it started)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Struct, forbid_unknown_fields=True):
    """OpenAI's model list."""

    object: Literal["list"]
    data: list[ModelCard]


class OpenAIErrorDetail(Struct, forbid_unknown_fields=True):
    """What went wrong, as OpenAI's clients read it."""

    message: str
    type: Annotated[str, Meta(examples=["invalid_request_error"])]
    param: str | None
    code: Annotated[str | None, Meta(examples=["model_not_found"])]


class OpenAIError(Struct, forbid_unknown_fields=True):
    """Every error answer under /v1/."""

    error: OpenAIErrorDetail


# --- endpoints -----------------------------------------------------------------------------


def openai_routes(config: Config, caller_of: Callable[[Request], str]) -> list[Route]:
    """The /v1 routes of one app; `caller_of` names the caller for per-caller limits."""
    #: Label -> the dimension its embeddings have, learned from answers (for `dimensions`).
    dimensions: dict[str, int] = {}
    limits = TextLimits(config.max_texts, config.max_text_chars, config.max_json_depth)

    async def embeddings(request: Request) -> Response:
        body = decode_body(await read_body(request, config.max_body_bytes), EmbeddingsRequest)
        texts = input_texts(body.input, limits)
        _check_dimensions(body, dimensions.get(body.model))
        d: Dispatcher = request.state.dispatcher
        parameters = json.dumps({"texts": texts})
        task = await d.submit(EMBED_TEXTS, body.model, parameters, caller=caller_of(request))
        await d.wait(task)
        vectors, dimension, tokens = _embedding_result(task)
        dimensions[body.model] = dimension
        _check_dimensions(body, dimension)
        answer = EmbeddingsAnswer(
            object="list",
            data=[
                Embedding("embedding", i, _encode(v, body.encoding_format))
                for i, v in enumerate(vectors)
            ],
            model=body.model,
            usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
        return Response(msgspec.json.encode(answer), media_type="application/json")

    async def models(request: Request) -> Response:
        d: Dispatcher = request.state.dispatcher
        created = int(time.time() - (time.monotonic() - d.started_at))
        per_label = d.stats.counters.per_label
        known = set(d.core.registry.labels()) | {k for k, s in per_label.items() if s.completed}
        cards = [ModelCard(label, "model", created, OWNER) for label in sorted(known)]
        return Response(
            msgspec.json.encode(ModelList("list", cards)), media_type="application/json"
        )

    return [
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def input_texts(value: Any, limits: TextLimits) -> list[str]:
    """The texts of an `input`; `ValidationFailed` naming the field for token ids, an empty
    list, or texts breaking the limits of `embed_texts` (smartrouting.texts)."""
    texts = [value] if isinstance(value, str) else list(value)
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise ValidationFailed(
                {
                    "field": "input" if isinstance(value, str) else f"input[{i}]",
                    "message": "token-id input is not supported: send the text as a string "
                    "(the worker tokenizes with the model's own tokenizer)",
                }
            )
    problem = texts_problem(texts, limits)
    if problem is not None:
        where = problem.path.replace("texts", "input", 1)
        raise ValidationFailed({"field": where, "message": problem.message})
    return texts


def _check_dimensions(body: EmbeddingsRequest, dimension: int | None) -> None:
    if body.dimensions is None or dimension is None or body.dimensions == dimension:
        return
    raise UnsupportedParameter(
        {
            "field": "dimensions",
            "message": f"model {body.model!r} makes {dimension}-dimensional embeddings and "
            "cannot shorten them; leave `dimensions` out",
        }
    )


def _embedding_result(task: TaskRecord) -> tuple[list[list[float]], int, int]:
    """(embeddings, dimension, prompt tokens) of a finished `embed_texts` task, or its error
    (a missing model as OpenAI's 404 `model_not_found`)."""
    if task.state is not TaskState.COMPLETED:
        error = task.error or DispatcherError(f"task {task.task_id} ended {task.state.value}")
        if isinstance(error, TaskFailed) and error.worker_code == "MODEL_NOT_FOUND":
            raise ModelNotFound(f"The model `{task.label}` does not exist") from error
        raise error
    result = task.result if isinstance(task.result, dict) else {}
    vectors = result.get("embeddings") or []
    usage = result.get("usage") or {}
    dimension = int(result.get("dimension") or (len(vectors[0]) if vectors else 0))
    return vectors, dimension, int(usage.get("prompt_tokens", 0))


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    packed = array("f", vector)  # float32, as OpenAI's base64 carries them
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
