"""The OpenAPI 3 document of the dispatcher HTTP API, written by hand (at /openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}
_TASK_BODY = {
    "type": "object",
    "required": ["task_type", "label"],
    "properties": {
        "task_id": {"type": "string", "maxLength": 256, "description": "assigned when absent"},
        "task_type": {"type": "string", "minLength": 1, "maxLength": 256},
        "label": {"type": "string", "minLength": 1, "maxLength": 256},
        "parameters_json": {"type": "string", "description": "task parameters as JSON text"},
        "parameters": {"type": "object", "description": "alternative to parameters_json"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    },
}
_COMPLETED = {
    "type": "object",
    "properties": {
        "task_id": {"type": "string"},
        "status": {"type": "string", "enum": ["completed"]},
        "result": {},
        "worker_id": {"type": "string"},
        "label": {"type": "string"},
        "label_miss": {"type": "boolean"},
        "timings_ms": {
            "type": "object",
            "properties": {k: {"type": "number"} for k in ("queue", "load", "run", "total")},
        },
    },
}
_STATUS = {
    "type": "object",
    "required": ["task_id", "status"],
    "properties": {
        "task_id": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "completed", "failed"]},
        "result": {},
        "error": {"$ref": "#/components/schemas/Error"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


_TASK_ERRORS = {
    "400": _err("body is not a JSON object"),
    "409": _err("a task with this id is queued or running"),
    "413": _err("body too large"),
    "422": _err("a field is missing or invalid"),
    "429": _err("queue full (Retry-After)"),
    "503": _err("shutting down, no workers, or attempts exhausted (Retry-After)"),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP endpoint (the websocket is described in text)."""
    task_body = {"required": True, "content": {"application/json": {"schema": _TASK_BODY}}}
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "smart-routing dispatcher",
            "version": "0.1.0",
            "description": (
                "Routes inference tasks to workers that hold the task's label. Workers connect "
                "to the websocket `/worker-listen` with a `Worker-Id` header and speak the "
                "protobuf protocol of proto/smartrouting.proto."
            ),
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"message": {"const": "OK"}}}, "alive"
                        )
                    },
                }
            },
            "/workers": {
                "get": {
                    "summary": "Connected workers",
                    "parameters": [
                        {"name": "detail", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"workers": {"type": "array"}}},
                            "worker ids, or records with ?detail=true",
                        )
                    },
                }
            },
            "/labels": {
                "get": {
                    "summary": "Label -> workers holding it",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                            },
                            "labels",
                        )
                    },
                }
            },
            "/run-task": {
                "post": {
                    "summary": "Run a task and wait for its result",
                    "requestBody": task_body,
                    "responses": {
                        "200": _json(_COMPLETED, "the task's result"),
                        **_TASK_ERRORS,
                        "404": _err("the worker knows no such model"),
                        "502": _err("the worker failed the task"),
                        "504": _err("deadline passed"),
                    },
                }
            },
            "/tasks": {
                "post": {
                    "summary": "Submit a task asynchronously",
                    "requestBody": task_body,
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "task_id": {"type": "string"},
                                    "status": {"const": "queued"},
                                    "status_url": {"type": "string"},
                                },
                            },
                            "accepted",
                        ),
                        **_TASK_ERRORS,
                    },
                }
            },
            "/tasks/{task_id}": {
                "get": {
                    "summary": "Status and result of a task (kept for a bounded time)",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": _json(_STATUS, "status"), "404": _err("unknown task id")},
                }
            },
            "/upload-model": {
                "post": {
                    "summary": "Convert and publish a model (forwarded to the uploader)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["model_id"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "model_id": {"type": "string"},
                                        "max_batch_size": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 1024,
                                        },
                                        "overwrite": {"type": "boolean"},
                                        "model_name": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string"},
                                    "model_name": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                            "the uploader's answer, passed through",
                        ),
                        "4XX": _err("the uploader's error, passed through"),
                        "502": _err("uploader unreachable"),
                        "503": _err("no uploader configured"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "text format", "content": {"text/plain": {}}}
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "Counters for the benchmark",
                    "responses": {
                        "200": _json({"type": "object"}, "see docs/interfaces.md section 3")
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {"schemas": {"Error": _ERROR}, "securitySchemes": _SECURITY_SCHEMES},
    }
    _add_security(document)
    return document


#: Optional authentication (dispatcher.auth): off unless SMARTROUTING_API_KEYS / _ADMIN_KEY set.
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
#: Open to probes and scrapers whatever the settings.
_OPEN = ("/health", "/metrics", "/openapi.json")


def _add_security(document: dict[str, Any]) -> None:
    """Every endpoint but the open ones: an optional key, 401 without a valid one (and 403
    for an API key on /upload-model when an admin key is set)."""
    for path, operations in document["paths"].items():
        if path in _OPEN:
            continue
        for operation in operations.values():
            operation["security"] = [{}, {"bearer": []}, {"apiKey": []}]
            operation["responses"]["401"] = _err("API key (or admin key) missing or invalid")
            if path == "/upload-model":
                operation["responses"]["403"] = _err("an API key where the admin key is needed")
