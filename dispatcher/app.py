"""The dispatcher's Starlette application: HTTP API for callers, websocket for workers.

`create_app(config)` builds a fresh app; its lifespan creates the dispatcher (with its own
metrics registry, so tests can run several side by side) and hands it to every request as
lifespan state (`request.state.dispatcher`). Endpoints are listed in `dispatcher.openapi` and
docs/architecture.md §2.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from dispatcher.auth import AuthMiddleware, AuthSettings, presented_secret
from dispatcher.config import Config
from dispatcher.docs_page import docs_page
from dispatcher.errors import (
    EXCEPTION_HANDLERS,
    TaskCancelled,
    TaskNotFound,
    UploaderNotConfigured,
    UploaderUnreachable,
    error_response,
)
from dispatcher.metrics import CONTENT_TYPE_LATEST
from dispatcher.openai_api import openai_routes
from dispatcher.openapi import openapi_document
from dispatcher.runtime import Dispatcher
from dispatcher.schemas import parse_task_request, parse_upload_request, parse_wait, read_body
from dispatcher.tasks import TaskRecord, TaskState
from dispatcher.views import stats_json, workers_json
from dispatcher.workers import WorkerEndpoint

log = logging.getLogger("dispatcher.app")


def caller_of(request: Request) -> str:
    """Who a request comes from, for per-caller limits: its API key (hashed), else its address."""
    secret = presented_secret(request.headers)
    if secret:
        return "key:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


def task_answer(task: TaskRecord) -> Response:
    """The synchronous answer of a finished task: its result or its JSON error."""
    if task.state is TaskState.COMPLETED or task.error is None:
        return JSONResponse(task.completed_json())
    return error_response(task.error)


def create_app(config: Config | None = None) -> Starlette:
    """A dispatcher app; while it runs, `app.state.dispatcher` is its `Dispatcher` too."""
    config = config or Config()

    def core(request: Request) -> Dispatcher:
        dispatcher: Dispatcher = request.state.dispatcher
        return dispatcher

    async def health(request: Request) -> Response:
        return JSONResponse({"message": "OK"})

    async def workers(request: Request) -> Response:
        detail = request.query_params.get("detail", "").lower() in ("1", "true", "yes")
        return JSONResponse(workers_json(core(request), detail))

    async def labels(request: Request) -> Response:
        return JSONResponse(core(request).core.registry.labels())

    async def run_task(request: Request) -> Response:
        args = parse_task_request(await read_body(request, config.max_body_bytes), config)
        d = core(request)
        task = await d.submit(**args.submit_args(), caller=caller_of(request))
        await d.wait(task)
        return task_answer(task)

    async def submit_task(request: Request) -> Response:
        args = parse_task_request(await read_body(request, config.max_body_bytes), config)
        # With a state database the task is written there before the 202 goes out.
        task = await core(request).submit(
            **args.submit_args(), caller=caller_of(request), persist=True
        )
        # A retry of a known task (same id and body) gets that task's state, not a new run.
        status = task.state.value
        body = {"task_id": task.task_id, "status": status, "status_url": f"/tasks/{task.task_id}"}
        return JSONResponse(body, status_code=202)

    async def task_status(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        wait_s = parse_wait(request.query_params.get("wait_s"))
        d = core(request)
        task = d.task(task_id)
        if task is None:
            raise TaskNotFound(f"no task {task_id!r} (unknown, or its result expired)")
        if wait_s and not task.state.finished:
            # Long poll: answer as soon as the task finishes, or with its state after wait_s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(d.wait(task), wait_s)
        return JSONResponse(task.status_json())

    async def task_endpoint(request: Request) -> Response:
        if request.method == "DELETE":
            return await cancel_task(request)
        return await task_status(request)

    async def cancel_task(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        error = TaskCancelled(f"task {task_id!r} was cancelled (DELETE /tasks/{task_id})")
        task = core(request).core.cancel(task_id, error)
        if task is None:
            raise TaskNotFound(f"no task {task_id!r} (unknown, or its result expired)")
        return JSONResponse(task.status_json())  # a task finished before stays as it ended

    async def upload_model(request: Request) -> Response:
        if not config.uploader_url:
            raise UploaderNotConfigured(
                "no uploader configured (--uploader-url / DISPATCHER_UPLOADER_URL)",
                retry_after_s=config.retry_after_s,
            )
        raw = await read_body(request, config.max_body_bytes)
        # Unknown or mistyped fields are refused here (422); the uploader judges the model id
        # and gets the body as the caller wrote it.
        parse_upload_request(raw)
        url = config.uploader_url.rstrip("/") + "/upload-model"
        # The caller passed the dispatcher's admin check; the uploader checks the same key.
        headers = {"Content-Type": "application/json"}
        if config.admin_key:
            headers["Authorization"] = f"Bearer {config.admin_key}"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as client:
                answer = await client.post(url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            raise UploaderUnreachable(f"uploader at {config.uploader_url}: {exc!r}") from exc
        content_type = answer.headers.get("content-type", "application/json")
        return Response(answer.content, status_code=answer.status_code, media_type=content_type)

    async def metrics(request: Request) -> Response:
        return Response(core(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        return JSONResponse(stats_json(core(request)))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        d = Dispatcher(config)
        app.state.dispatcher = d
        d.restore()
        log.info("dispatcher %s up, policy %s", d.dispatcher_id, config.policy)
        try:
            yield {"dispatcher": d}
        finally:
            await d.shutdown()  # a no-op when the server already ran it (dispatcher.server)

    auth = AuthSettings(config.worker_token, tuple(config.api_keys), config.admin_key)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/workers", workers, methods=["GET"]),
        Route("/labels", labels, methods=["GET"]),
        Route("/run-task", run_task, methods=["POST"]),
        Route("/tasks", submit_task, methods=["POST"]),
        Route("/tasks/{task_id}", task_endpoint, methods=["GET", "DELETE"]),
        Route("/upload-model", upload_model, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *openai_routes(config, caller_of),
        Route("/docs", docs_page, methods=["GET"]),
        # A bound method, so Starlette wraps it as a websocket endpoint (not a raw ASGI app).
        WebSocketRoute("/worker-listen", WorkerEndpoint(auth).__call__),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, settings=auth)],
        lifespan=lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.config = config
    return app
