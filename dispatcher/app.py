"""The dispatcher's Starlette application: HTTP API for callers, websocket for workers.

`create_app(config)` builds a fresh app; its lifespan creates the dispatcher (with its own
metrics registry, so tests can run several side by side) and hands it to every request as
lifespan state (`request.state.dispatcher`). Endpoints are listed in `dispatcher.operations` and
docs/architecture.md §4.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from dispatcher.access import AccessMiddleware
from dispatcher.auth import AuthMiddleware, AuthSettings, matches, presented_secret
from dispatcher.config import Config
from dispatcher.docs_page import docs_page
from dispatcher.errors import (
    EXCEPTION_HANDLERS,
    CallerGone,
    ModelNotFound,
    TaskCancelled,
    TaskNotFound,
    error_response,
)
from dispatcher.metrics import CONTENT_TYPE_LATEST
from dispatcher.model_admin import ModelAdmin
from dispatcher.openai_api import openai_routes
from dispatcher.openapi import openapi_document
from dispatcher.probes import livez, readyz
from dispatcher.runtime import Dispatcher
from dispatcher.schemas import parse_task_request, parse_upload_request, parse_wait, read_body
from dispatcher.status_page import dashboard_endpoint, root_endpoint, status_endpoint
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


def status_url(task_id: str) -> str:
    """Where an asynchronous task's state is read (the id percent-encoded as a path segment)."""
    return "/tasks/" + quote(task_id, safe="")


async def caller_disconnected(request: Request) -> None:
    """Return when the HTTP client goes away (ASGI `http.disconnect`); for a request whose
    body was read already, so nothing else arrives on its channel."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def task_answer(task: TaskRecord) -> Response:
    """The synchronous answer of a finished task: its result or its JSON error."""
    if task.state is TaskState.COMPLETED or task.error is None:
        return JSONResponse(task.completed_json())
    return error_response(task.error)


def create_app(config: Config | None = None) -> Starlette:
    """A dispatcher app; while it runs, `app.state.dispatcher` is its `Dispatcher` too."""
    config = config or Config()
    admin = ModelAdmin(config)  # uploads, rollback and delete through the uploader

    def core(request: Request) -> Dispatcher:
        dispatcher: Dispatcher = request.state.dispatcher
        return dispatcher

    def owner_of(request: Request) -> str | None:
        """Who a task belongs to: with API keys on, the key that submitted it; else anyone."""
        return caller_of(request) if config.api_keys else None

    async def visible_task(request: Request, task_id: str) -> TaskRecord:
        """The task `task_id` as this caller may see it: another key's task is unknown to it
        (404, as for an id never used), except to the admin key. A task this dispatcher does
        not have is read from a shared task store (`Dispatcher.find`)."""
        task = await core(request).find(task_id)
        if task is not None and task.owner is not None and task.owner != owner_of(request):
            admin = bool(config.admin_key) and matches(
                presented_secret(request.headers), (config.admin_key or "",)
            )
            task = task if admin else None
        if task is None:
            raise TaskNotFound(f"no task {task_id!r} (unknown, or its result expired)")
        return task

    async def wait_or_cancel(request: Request, d: Dispatcher, task: TaskRecord) -> None:
        """Wait for a synchronous task's answer; when its caller disconnects first, cancel it
        (its worker is sent Cancel) unless another caller is waiting for it too."""
        answered = asyncio.ensure_future(d.wait(task))
        gone = asyncio.ensure_future(caller_disconnected(request))
        try:
            await asyncio.wait((answered, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (answered, gone):
                future.cancel()
            await asyncio.gather(answered, gone, return_exceptions=True)
        if not task.state.finished and not d.waiting(task.task_id):
            log.info("task %s: its caller disconnected; cancelled", task.task_id)
            d.core.cancel(task.task_id, CallerGone(f"the caller of task {task.task_id!r} left"))

    async def health(request: Request) -> Response:
        return JSONResponse({"message": "OK"})

    async def workers(request: Request) -> Response:
        detail = request.query_params.get("detail", "").lower() in ("1", "true", "yes")
        return JSONResponse(workers_json(core(request), detail))

    async def labels(request: Request) -> Response:
        d = core(request)
        if request.query_params.get("detail", "").lower() in ("1", "true", "yes"):
            return JSONResponse(d.catalogue.label_details(d.core.registry))
        return JSONResponse(d.core.registry.labels())

    async def run_task(request: Request) -> Response:
        args = parse_task_request(await read_body(request, config.max_body_bytes), config)
        d = core(request)
        known = d.task(args.task_id) if args.task_id else None
        task = await d.submit(
            **args.submit_args(), caller=caller_of(request), owner=owner_of(request)
        )
        if task is not known:  # run for this caller: cancelled if it leaves before the answer
            await wait_or_cancel(request, d, task)
        else:  # a retry of a known task: another caller may want its answer
            await d.wait(task)
        return task_answer(task)

    async def submit_task(request: Request) -> Response:
        args = parse_task_request(await read_body(request, config.max_body_bytes), config)
        # With a state database the task is written there before the 202 goes out.
        task = await core(request).submit(
            **args.submit_args(), caller=caller_of(request), persist=True, owner=owner_of(request)
        )
        # A retry of a known task (same id and body) gets that task's state, not a new run.
        status = task.state.value
        body = {"task_id": task.task_id, "status": status, "status_url": status_url(task.task_id)}
        return JSONResponse(body, status_code=202)

    async def task_status(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        wait_s = parse_wait(request.query_params.get("wait_s"))
        d = core(request)
        task = await visible_task(request, task_id)
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
        await visible_task(request, task_id)  # another key's task is unknown to this caller
        error = TaskCancelled(f"task {task_id!r} was cancelled (DELETE /tasks/{task_id})")
        task = core(request).core.cancel(task_id, error)
        if task is None:
            raise TaskNotFound(f"no task {task_id!r} (unknown, or its result expired)")
        return JSONResponse(task.status_json())  # a task finished before stays as it ended

    async def upload_model(request: Request) -> Response:
        admin.base_url()  # 503 first when no uploader is configured
        raw = await read_body(request, config.max_body_bytes)
        # Unknown or mistyped fields are refused here (422); the uploader judges the model id
        # and gets the body as the caller wrote it.
        parse_upload_request(raw)
        return await admin.forward(core(request), "/upload-model", raw)

    async def upload_status(request: Request) -> Response:
        """GET /uploads/{id}: an asynchronous upload's phase and result, from the uploader."""
        wait_s = parse_wait(request.query_params.get("wait_s"))
        upload_id = request.path_params["upload_id"]
        wait = f"{wait_s:g}" if wait_s else None
        return await admin.upload_status(core(request), upload_id, wait)

    async def rollback_model(request: Request) -> Response:
        """POST /models/{name}/rollback: the uploader makes the previous version current."""
        # Quoted: the uploader judges the name (422), whatever characters it has.
        name = quote(request.path_params["name"], safe="")
        return await admin.forward(core(request), f"/models/{name}/rollback", b"{}")

    async def models(request: Request) -> Response:
        return JSONResponse({"models": catalogue_json(core(request))})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            return await admin.delete(core(request), name)
        for entry in catalogue_json(core(request)):
            if entry["name"] == name:
                return JSONResponse(entry)
        raise ModelNotFound(core(request).catalogue.not_found_detail(name))

    def catalogue_json(d: Dispatcher) -> list[dict[str, Any]]:
        return d.catalogue.describe(d.core.registry, d.core.estimates, d.core.clock.monotonic())

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
        d.start()  # restore the state database's tasks, start expiring kept results
        admin.start(d)  # the uploader's published models into the catalogue
        log.info("dispatcher %s up, policy %s", d.dispatcher_id, config.policy)
        try:
            yield {"dispatcher": d}
        finally:
            await admin.close()  # stop watching asynchronous uploads
            await d.shutdown()  # a no-op when the server already ran it (dispatcher.server)

    auth = AuthSettings(config.worker_token, tuple(config.api_keys), config.admin_key)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/", root_endpoint, methods=["GET"]),
        Route("/dashboard", dashboard_endpoint, methods=["GET"]),
        Route("/status.json", status_endpoint, methods=["GET"]),
        Route("/workers", workers, methods=["GET"]),
        Route("/labels", labels, methods=["GET"]),
        Route("/run-task", run_task, methods=["POST"]),
        Route("/tasks", submit_task, methods=["POST"]),
        Route("/tasks/{task_id}", task_endpoint, methods=["GET", "DELETE"]),
        Route("/upload-model", upload_model, methods=["POST"]),
        Route("/uploads/{upload_id}", upload_status, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/models/{name}", model, methods=["GET", "DELETE"]),
        Route("/models/{name}/rollback", rollback_model, methods=["POST"]),
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
        # Outermost, so refused requests are counted and logged too.
        middleware=[
            Middleware(AccessMiddleware, routes=routes),
            Middleware(AuthMiddleware, settings=auth),
        ],
        lifespan=lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.config = config
    app.state.model_admin = admin
    return app
