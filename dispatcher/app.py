"""The dispatcher's Starlette application: HTTP API for callers, websocket for workers.

`create_app(config)` builds a fresh app with its own dispatcher and metrics registry, so tests
can run several side by side. Endpoints are listed in `dispatcher.openapi` and DESIGN.md 3.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from dispatcher.auth import AuthMiddleware, AuthSettings, presented_secret
from dispatcher.config import Config
from dispatcher.core import Dispatcher
from dispatcher.errors import (
    DispatcherError,
    InvalidJSON,
    PayloadTooLarge,
    TaskNotFound,
    UploaderNotConfigured,
    UploaderUnreachable,
    ValidationFailed,
    handle_dispatcher_error,
)
from dispatcher.limits import check_parameters, loads_bounded
from dispatcher.metrics import CONTENT_TYPE_LATEST
from dispatcher.openapi import openapi_document
from dispatcher.recovery import restore
from dispatcher.tasks import TaskRecord, TaskState
from dispatcher.views import stats_json, workers_json
from dispatcher.workers import WorkerEndpoint

log = logging.getLogger("dispatcher.app")

MAX_FIELD_CHARS = 256
#: Longest deadline a request may ask for (a day).
MAX_TIMEOUT_S = 86_400.0


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `limit` bytes, 400 if not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    try:
        body = loads_bounded(b"".join(chunks), "body")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON(f"body must be a JSON object, not {type(body).__name__}")
    return body


def _string_field(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationFailed({"field": name, "message": "is required"})
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed({"field": name, "message": "must be a non-empty string"})
    if len(value) > MAX_FIELD_CHARS:
        raise ValidationFailed({"field": name, "message": f"longer than {MAX_FIELD_CHARS}"})
    _require_utf8(name, value)
    return value


def _require_utf8(name: str, value: str) -> None:
    # JSON escapes can smuggle lone surrogates in, which protobuf strings cannot carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed({"field": name, "message": "is not valid Unicode"}) from None


def parse_task_body(body: dict[str, Any], config: Config | None = None) -> dict[str, Any]:
    """Validate a /run-task or /tasks body; returns the arguments of `Dispatcher.submit`."""
    config = config or Config()
    task_type = _string_field(body, "task_type", required=True)
    label = _string_field(body, "label", required=True)
    task_id = _string_field(body, "task_id", required=False)
    if "parameters_json" in body and body["parameters_json"] is not None:
        raw = body["parameters_json"]
        if not isinstance(raw, str):
            raise ValidationFailed({"field": "parameters_json", "message": "must be a string"})
        try:
            parameters = loads_bounded(raw, "parameters_json")
        except json.JSONDecodeError as exc:
            raise ValidationFailed(
                {"field": "parameters_json", "message": f"is not JSON: {exc}"}
            ) from None
        _require_utf8("parameters_json", raw)
        _check_parameters(parameters, config, "parameters_json")
        parameters_json = raw
    elif "parameters" in body and body["parameters"] is not None:
        if not isinstance(body["parameters"], dict):
            raise ValidationFailed({"field": "parameters", "message": "must be an object"})
        _check_parameters(body["parameters"], config, "parameters")
        # ensure_ascii (the default) escapes everything, lone surrogates included.
        parameters_json = json.dumps(body["parameters"])
    else:
        parameters_json = "{}"
    timeout_s = body.get("timeout_s")
    if timeout_s is not None and (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not math.isfinite(timeout_s)
        or not 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        raise ValidationFailed(
            {"field": "timeout_s", "message": f"must be a number in (0, {MAX_TIMEOUT_S}]"}
        )
    return {
        "task_type": task_type,
        "label": label,
        "parameters_json": parameters_json,
        "task_id": task_id,
        "timeout_s": float(timeout_s) if timeout_s is not None else None,
    }


def _check_parameters(parameters: Any, config: Config, field: str) -> None:
    check_parameters(
        parameters, config.max_json_depth, config.max_texts, config.max_text_chars, field
    )


def caller_of(request: Request) -> str:
    """Who a request comes from, for per-caller limits: its API key (hashed), else its address."""
    secret = presented_secret(request.headers)
    if secret:
        return "key:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


def task_answer(task: TaskRecord) -> Response:
    """The synchronous answer of a finished task: its result or its JSON error."""
    if task.state is TaskState.COMPLETED:
        return JSONResponse(task.completed_json())
    status, body = task.error or (500, {"error": "internal", "detail": "no answer"})
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(config: Config | None = None) -> Starlette:
    """A dispatcher app; `app.state.dispatcher` is its core."""
    config = config or Config()
    dispatcher_ref: dict[str, Dispatcher] = {}

    def core() -> Dispatcher:
        return dispatcher_ref["core"]

    async def health(request: Request) -> Response:
        return JSONResponse({"message": "OK"})

    async def workers(request: Request) -> Response:
        detail = request.query_params.get("detail", "").lower() in ("1", "true", "yes")
        return JSONResponse(workers_json(core(), detail))

    async def labels(request: Request) -> Response:
        return JSONResponse(core().registry.labels())

    async def run_task(request: Request) -> Response:
        args = parse_task_body(await read_json_object(request, config.max_body_bytes), config)
        d = core()
        task = d.submit(**args, caller=caller_of(request))
        await d.wait(task)
        return task_answer(task)

    async def submit_task(request: Request) -> Response:
        args = parse_task_body(await read_json_object(request, config.max_body_bytes), config)
        # With a state database the task is written there before the 202 goes out.
        task = core().submit(**args, caller=caller_of(request), persist=True)
        body = {"task_id": task.task_id, "status": "queued", "status_url": f"/tasks/{task.task_id}"}
        return JSONResponse(body, status_code=202)

    async def task_status(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        task = core().results.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task {task_id!r} (unknown, or its result expired)")
        return JSONResponse(task.status_json())

    async def upload_model(request: Request) -> Response:
        if not config.uploader_url:
            raise UploaderNotConfigured(
                "no uploader configured (--uploader-url / DISPATCHER_UPLOADER_URL)",
                retry_after_s=config.retry_after_s,
            )
        body = await read_json_object(request, config.max_body_bytes)
        url = config.uploader_url.rstrip("/") + "/upload-model"
        # The caller passed the dispatcher's admin check; the uploader checks the same key.
        headers = {"Authorization": f"Bearer {config.admin_key}"} if config.admin_key else {}
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as client:
                answer = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UploaderUnreachable(f"uploader at {config.uploader_url}: {exc!r}") from exc
        content_type = answer.headers.get("content-type", "application/json")
        return Response(answer.content, status_code=answer.status_code, media_type=content_type)

    async def metrics(request: Request) -> Response:
        d = core()
        d.metrics.queue_depth.set(len(d.queue))
        return Response(d.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        return JSONResponse(stats_json(core()))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def worker_listen(websocket: WebSocket) -> None:
        await endpoint(websocket)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        d = Dispatcher(config)
        dispatcher_ref["core"] = d
        app.state.dispatcher = d
        endpoint.bind(d, auth)
        restore(d)
        log.info("dispatcher %s up, policy %s", d.dispatcher_id, config.policy)
        try:
            yield
        finally:
            await d.shutdown()

    endpoint = _LazyEndpoint()
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/workers", workers, methods=["GET"]),
        Route("/labels", labels, methods=["GET"]),
        Route("/run-task", run_task, methods=["POST"]),
        Route("/tasks", submit_task, methods=["POST"]),
        Route("/tasks/{task_id}", task_status, methods=["GET"]),
        Route("/upload-model", upload_model, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        WebSocketRoute("/worker-listen", worker_listen),
    ]
    auth = AuthSettings(config.worker_token, tuple(config.api_keys), config.admin_key)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, settings=auth)],
        lifespan=lifespan,
        exception_handlers={
            DispatcherError: handle_dispatcher_error,
            404: _not_found,
            405: _method_not_allowed,
        },
    )
    app.state.config = config
    return app


class _LazyEndpoint:
    """The websocket endpoint, bound to the dispatcher the lifespan creates."""

    def __init__(self) -> None:
        self._endpoint: WorkerEndpoint | None = None

    def bind(self, dispatcher: Dispatcher, auth: AuthSettings) -> None:
        self._endpoint = WorkerEndpoint(dispatcher, auth)

    async def __call__(self, websocket: WebSocket) -> None:
        if self._endpoint is None:
            await websocket.close(1013, "dispatcher not started")
            return
        await self._endpoint(websocket)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found", "detail": f"no route {request.url.path}"}, 404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    detail = f"{request.method} not allowed on {request.url.path}"
    return JSONResponse({"error": "method_not_allowed", "detail": detail}, 405)
