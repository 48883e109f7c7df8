"""The OpenAPI 3.1 document of the dispatcher's HTTP API (served at /openapi.json, shown at /docs).

Generated, not written by hand: `dispatcher.operations.OPERATIONS` lists each endpoint
(summary, description, request type, documented answers, examples) and the schemas come from
the `dispatcher.schemas` classes the app decodes requests into
(`msgspec.json.schema_components`). The worker websocket
(`/worker-listen`) speaks protobuf and is described in the document's text only.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from dispatcher.auth import OPEN_PATHS, admin_only
from dispatcher.operations import OPERATIONS, Answer, Operation, error
from dispatcher.schemas import TaskRequest

VERSION = "0.1.0"
_REF = "#/components/schemas/{name}"


#: Rules a JSON Schema can state that msgspec's classes do not, by component name.
_EXTRA_SCHEMA: dict[str, dict[str, Any]] = {
    TaskRequest.__name__: {
        "not": {
            "description": "`parameters` and `parameters_json` both given (contradictory)",
            "required": ["parameters", "parameters_json"],
            "properties": {"parameters": {"type": "object"}, "parameters_json": {"type": "string"}},
        }
    }
}

_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key or the admin key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def body_types() -> list[Any]:
    """Every type a documented body decodes into, requests first (each once)."""
    found: list[Any] = []
    for op in OPERATIONS:
        candidates = [op.request] + [
            t for a in op.answers for t in (a.body if isinstance(a.body, tuple) else (a.body,))
        ]
        found.extend(t for t in candidates if t is not None and t not in found)
    return found


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP endpoint (the websocket is described in text)."""
    types = body_types()
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(_key, types), schemas, strict=True))
    for name, schema in components.items():
        _clean_descriptions(schema)
        schema.update(_EXTRA_SCHEMA.get(name, {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smart-routing dispatcher",
            "version": VERSION,
            "summary": "Routes inference tasks to the workers that hold their model.",
            "description": (
                "Callers submit tasks over HTTP; the dispatcher queues each and sends it to a "
                "worker, preferring one that already holds the task's label (its model). Workers "
                "connect to the websocket `/worker-listen` with a `Worker-Id` header and speak "
                "the protobuf protocol of proto/smartrouting.proto. Every error answer is JSON "
                '`{"error": code, "detail": ...}` (under /v1/, OpenAI\'s `{"error": {"message", '
                '"type", "param", "code"}}`). With API keys configured, every endpoint but '
                + ", ".join(sorted(OPEN_PATHS | {"/docs"}))
                + " needs one (docs/architecture.md)."
            ),
        },
        "tags": [
            {"name": "tasks", "description": "Run tasks and read their results."},
            {"name": "workers", "description": "The connected workers and their labels."},
            {"name": "admin", "description": "Needs the admin key when one is set."},
            {"name": "openai", "description": "OpenAI-compatible; errors in OpenAI's shape."},
            {"name": "meta", "description": "Probes, metrics and this description."},
        ],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }


def _key(t: Any) -> str:
    return repr(t)


def _schema(body: Any, schema_of: dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, tuple):
        return {"anyOf": [schema_of[_key(t)] for t in body]}
    schema: dict[str, Any] = schema_of[_key(body)]
    return schema


def _content(
    media_type: str, schema: dict[str, Any] | None, examples: dict[str, Any]
) -> dict[str, Any]:
    media: dict[str, Any] = {} if schema is None else {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {media_type: media}


def _response(answer: Answer, schema_of: dict[str, Any]) -> dict[str, Any]:
    schema = None if answer.body is None else _schema(answer.body, schema_of)
    return {
        "description": answer.description,
        "content": _content(answer.media_type, schema, answer.examples),
    }


def _operation(op: Operation, schema_of: dict[str, Any]) -> dict[str, Any]:
    responses = {answer.status: _response(answer, schema_of) for answer in op.answers}
    operation: dict[str, Any] = {
        "operationId": op.method + op.path.replace("/", "_").replace("{", "").replace("}", ""),
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
    }
    if op.parameters:
        operation["parameters"] = [dict(p) for p in op.parameters]
    if op.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _content(
                "application/json", _schema(op.request, schema_of), op.request_examples
            ),
        }
    if op.path not in OPEN_PATHS:
        # Optional: no key at all is fine while no API keys are configured.
        operation["security"] = [{}, {"bearer": []}, {"apiKey": []}]
        unauthorized = error(
            "401", "An API key (or the admin key) is missing or wrong.", "unauthorized", "API key"
        )
        # Kept when the operation documents its own 401 (OpenAI's error shape under /v1/).
        responses.setdefault("401", _response(unauthorized, schema_of))
        if admin_only(op.path, op.method):
            responses["403"] = _response(
                error(
                    "403",
                    "An API key where the admin key is needed.",
                    "forbidden",
                    "admin key required",
                ),
                schema_of,
            )
    operation["responses"] = responses
    return operation


def _clean_descriptions(schema: dict[str, Any]) -> None:
    """Docstrings as msgspec copies them keep their indentation; dedent them."""
    if isinstance(schema.get("description"), str):
        schema["description"] = inspect.cleandoc(schema["description"])
