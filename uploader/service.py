"""The uploader's HTTP service (Starlette).

- `POST /upload-model` `{"model_id", "max_batch_size"?: 1..1024 (32), "overwrite"?: false,
  "model_name"?}` → 200 `{"status": "success", "model_name", "message", "dimension",
  "max_abs_diff", "seconds", "onnx_bytes", ...}` once the model is published.
  With `"async": true` → 202 `{"upload_id", "state": "queued", "phase", "phases",
  "status_url"}` and `Location: /uploads/{id}` at once; the conversion runs in the background
  (`uploader.jobs`: phases queued, load, export, validate, publish).
- `GET /uploads/{id}[?wait_s=]` → the job's state, ending `success` with the synchronous
  answer as `result`, or `failed` with its `error` and `http_status`; `wait_s` (≤ 60)
  long-polls an unfinished job.
- `POST /models/{name}/rollback` → the previous version made current.
- `DELETE /models/{name}` → the entry and every version deleted (`uploader.versions`).
- `GET /models` → `{"models": [<smartrouting.json of each entry>, ...]}`.
- `GET /health` → `{"message": "OK"}`.

With an admin key (`SMARTROUTING_ADMIN_KEY`, `create_app(admin_key=...)`), `/upload-model`
needs `Authorization: Bearer <key>` (or `X-API-Key: <key>`): 401 without it or with another
key, and so do `/uploads/{id}`, rollback and delete; `/models` and `/health` stay open. The
dispatcher forwards these calls with the same key.

Endpoints raise `UploaderError`s and never build error answers: `handle_error`, the app's one
exception handler, renders every error (unknown routes and methods and unexpected exceptions
included) as `{"error": code, "detail": detail}` with the status of its class
(`uploader.errors`; docs/architecture.md §4.2). Conversions run in a worker thread,
`max_concurrent` at a time (CPU-bound; one by default), so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uploader.convert import (
    Builder,
    BuildReport,
    Progress,
    PublishResult,
    build_entry,
    check_batch_size,
    convert_model,
)
from uploader.errors import (
    BodyTooLarge,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    RouteNotFound,
    Unauthorized,
    UploaderError,
    UploadNotFound,
)
from uploader.jobs import LOAD, PUBLISH, UploadJob, UploadJobs, status_url
from uploader.names import validate_model_id, validate_model_name
from uploader.repository import DEFAULT_BATCH_DELAY_MS, list_models
from uploader.sources import ResolvedSource
from uploader.versions import remove_model, rollback

logger = logging.getLogger(__name__)

_FIELDS = {"model_id", "max_batch_size", "overwrite", "model_name", "async"}
#: Largest request body read.
MAX_BODY_BYTES = 64 * 1024
#: Longest long poll of `GET /uploads/{id}?wait_s=` (seconds).
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class UploadRequest:
    """A checked `POST /upload-model` body."""

    model_id: str
    max_batch_size: int = 32
    overwrite: bool = False
    model_name: str | None = None
    #: `"async": true`: answer 202 at once and convert in the background.
    background: bool = False

    @classmethod
    def from_json(cls, data: Any) -> UploadRequest:
        """Check field presence and types (400) and the id and name (422)."""
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown fields {unknown}; allowed: {sorted(_FIELDS)}")
        if "model_id" not in data:
            raise InvalidRequest("model_id is required")
        if not isinstance(data["model_id"], str):
            raise InvalidRequest("model_id must be a string")
        overwrite = data.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise InvalidRequest("overwrite must be true or false")
        model_name = data.get("model_name")
        if model_name is not None and not isinstance(model_name, str):
            raise InvalidRequest("model_name must be a string")
        background = data.get("async", False)
        if not isinstance(background, bool):
            raise InvalidRequest("async must be true or false")
        return cls(
            model_id=validate_model_id(data["model_id"]),
            max_batch_size=check_batch_size(data.get("max_batch_size", 32)),
            overwrite=overwrite,
            model_name=None if model_name is None else validate_model_name(model_name),
            background=background,
        )


@dataclass
class UploaderService:
    """State of the service: where models go, where they come from, how they are built."""

    repository: Path
    local_roots: Sequence[Path] = ()
    builder: Builder | None = None
    max_concurrent: int = 1
    batch_delay_ms: float | None = DEFAULT_BATCH_DELAY_MS
    jobs: UploadJobs = field(default_factory=UploadJobs)
    limiter: anyio.CapacityLimiter = field(init=False)
    #: The asynchronous uploads running (a reference keeps each task alive).
    running: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.limiter = anyio.CapacityLimiter(self.max_concurrent)

    def convert(self, request: UploadRequest, job: UploadJob | None = None) -> PublishResult:
        """Run one conversion (blocking; called in a worker thread); `job`: told its phases.

        Raises only `UploaderError`s: anything else the conversion lets through (torch,
        onnx, the file system) is wrapped here, at the boundary, as `InternalError`.
        """
        builder = self.builder if job is None else self._tracking(job)
        try:
            return convert_model(
                request.model_id,
                self.repository,
                model_name=request.model_name,
                max_batch_size=request.max_batch_size,
                overwrite=request.overwrite,
                batch_delay_ms=self.batch_delay_ms,
                allow_local_paths=False,
                local_roots=self.local_roots,
                builder=builder,
                progress=partial(_progress, request.model_id),
            )
        except UploaderError:
            raise
        except Exception as exc:
            raise InternalError.wrap(exc) from exc

    def _tracking(self, job: UploadJob) -> Builder:
        """The builder, telling `job` its phases: load when it starts, export and validate
        from its progress messages, publish once it returned (convert_model publishes next)."""
        inner = self.builder or build_entry

        def build(
            source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
        ) -> BuildReport:
            self.jobs.enter(job, LOAD)

            def tracked(message: str) -> None:
                self.jobs.progress(job, message)
                progress(message)

            report = inner(source, entry, max_batch_size, tracked)
            self.jobs.enter(job, PUBLISH)
            return report

        return build

    async def run(self, upload: UploadRequest, job: UploadJob | None = None) -> dict[str, Any]:
        """Convert (waiting for a slot of `limiter`) and answer the success body."""
        result = await anyio.to_thread.run_sync(self.convert, upload, job, limiter=self.limiter)
        return success_body(result)

    def start_job(self, upload: UploadRequest) -> UploadJob:
        """Queue an asynchronous upload (TooManyUploads at the bound) and start it."""
        job = self.jobs.create(upload.model_id)
        task = asyncio.create_task(self._run_job(upload, job), name=f"upload-{job.upload_id}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return job

    async def _run_job(self, upload: UploadRequest, job: UploadJob) -> None:
        try:
            self.jobs.succeed(job, await self.run(upload, job))
        except asyncio.CancelledError:
            self.jobs.fail(job, InternalError("the uploader stopped during the conversion"))
            raise
        except Exception as exc:
            error = exc if isinstance(exc, UploaderError) else InternalError.wrap(exc)
            log = logger.error if error.status >= 500 else logger.warning
            log("upload %s (%s): %s %s", job.upload_id, upload.model_id, error.code, error.detail)
            self.jobs.fail(job, error)
        else:
            logger.info("upload %s (%s): success", job.upload_id, upload.model_id)


def success_body(result: PublishResult) -> dict[str, Any]:
    """The answer of a successful upload (synchronous, or an asynchronous one's `result`)."""
    verb = "replaced" if result.replaced else "published"
    return {
        "status": "success",
        "message": f"{result.model_id} {verb} as {result.model_name} "
        f"(dimension {result.dimension}, max abs diff {result.max_abs_diff:.2g})",
        **result.to_json(),
    }


def _progress(model_id: str, message: str) -> None:
    logger.info("upload %s: %s", model_id, message)


async def _read_json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc


def _check_admin_key(request: Request, admin_key: str | None) -> None:
    """Raise Unauthorized when an admin key is set and the request does not carry it."""
    if not admin_key:
        return
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    given = given or request.headers.get("x-api-key", "").strip()
    if given and hmac.compare_digest(given.encode(), admin_key.encode()):
        return
    raise Unauthorized("admin key required" if not given else "invalid admin key")


async def upload_model(request: Request) -> JSONResponse:
    """POST /upload-model: convert and publish, answering once the model is in place; with
    `"async": true`, 202 at once and the conversion in the background."""
    service: UploaderService = request.app.state.service
    _check_admin_key(request, request.app.state.admin_key)
    upload = UploadRequest.from_json(await _read_json(request))
    logger.info(
        "upload %s requested (overwrite=%s, async=%s)",
        upload.model_id,
        upload.overwrite,
        upload.background,
    )
    if upload.background:
        job = service.start_job(upload)
        url = status_url(job.upload_id)
        return JSONResponse(job.status_json(), status_code=202, headers={"Location": url})
    return JSONResponse(await service.run(upload))


async def upload_status(request: Request) -> JSONResponse:
    """GET /uploads/{id}[?wait_s=]: an asynchronous upload's phase, result or error."""
    service: UploaderService = request.app.state.service
    _check_admin_key(request, request.app.state.admin_key)
    upload_id = request.path_params["upload_id"]
    wait_s = _wait_seconds(request.query_params.get("wait_s"))
    job = service.jobs.get(upload_id)
    if job is None:
        raise UploadNotFound(f"no upload {upload_id!r} (unknown, or its status expired)")
    if wait_s and not job.finished:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), wait_s)
    return JSONResponse(job.status_json())


def _wait_seconds(raw: str | None) -> float:
    """`wait_s` as seconds in [0, MAX_WAIT_S] (InvalidRequest otherwise)."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT_S:  # NaN fails too
        raise InvalidRequest(f"wait_s must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return value


async def delete_model(request: Request) -> JSONResponse:
    """DELETE /models/{name}: the entry and every version of it deleted from the repository."""
    service: UploaderService = request.app.state.service
    _check_admin_key(request, request.app.state.admin_key)
    name = validate_model_name(request.path_params["name"])
    removed = await anyio.to_thread.run_sync(remove_model, service.repository, name)
    logger.info("deleted %s (versions %s)", name, removed["versions"])
    return JSONResponse(
        {
            "status": "success",
            "message": f"{name} deleted from the repository",
            **removed,
        }
    )


async def rollback_model(request: Request) -> JSONResponse:
    """POST /models/{name}/rollback: make the version before the current one current."""
    service: UploaderService = request.app.state.service
    _check_admin_key(request, request.app.state.admin_key)
    name = validate_model_name(request.path_params["name"])
    metadata = await anyio.to_thread.run_sync(rollback, service.repository, name)
    return JSONResponse(
        {
            "status": "success",
            "message": f"{name} rolled back from version {metadata['rolled_back_from']}"
            f" to version {metadata['version']}",
            "model_name": name,
            "version": metadata["version"],
            "content_hash": metadata.get("content_hash", ""),
            "rolled_back_from": metadata["rolled_back_from"],
        }
    )


async def models(request: Request) -> JSONResponse:
    """GET /models: the published entries."""
    service: UploaderService = request.app.state.service
    found = await anyio.to_thread.run_sync(list_models, service.repository)
    return JSONResponse({"models": found})


async def health(request: Request) -> JSONResponse:
    """GET /health."""
    return JSONResponse({"message": "OK"})


def as_uploader_error(request: Request, exc: Exception) -> UploaderError:
    """`exc` as a class of the uploader's tree (the one mapping of foreign exceptions).

    Starlette's routing raises `HTTPException` 404 and 405; any other exception reaching
    the handler is a bug, reported as `InternalError` rather than an HTML 500.
    """
    if isinstance(exc, UploaderError):
        return exc
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return RouteNotFound(f"no route {request.url.path}")
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return MethodNotAllowed(
            f"{request.method} not allowed on {request.url.path}", headers=exc.headers
        )
    return InternalError.wrap(exc)


async def handle_error(request: Request, exc: Exception) -> Response:
    """The app's one exception handler: every error becomes `{"error", "detail"}` JSON."""
    error = as_uploader_error(request, exc)
    where = f"{request.method} {request.url.path}"
    if error.status >= 500:
        # A 5xx is something that broke: keep its traceback (the chained cause included).
        logger.error("%s: %s %s", where, error.code, error.detail, exc_info=exc)
    else:
        logger.warning("%s: %s %s", where, error.code, error.detail)
    return JSONResponse(error.to_json(), status_code=error.status, headers=error.headers)


def create_app(
    repository: Path,
    *,
    local_roots: Sequence[Path] = (),
    builder: Builder | None = None,
    max_concurrent: int = 1,
    admin_key: str | None = None,
    batch_delay_ms: float | None = DEFAULT_BATCH_DELAY_MS,
) -> Starlette:
    """The uploader app publishing into `repository`.

    `local_roots`: directories whose sub-directories are offered as model ids
    (`<root>/<owner>/<name>`); arbitrary local paths are never accepted over HTTP.
    `builder`: replaces the real torch conversion (tests of the HTTP layer).
    `admin_key`: when set, `/upload-model` needs it (401 otherwise).
    `batch_delay_ms`: Triton's dynamic batching delay of published models (None: off).
    """
    app = Starlette(
        routes=[
            Route("/upload-model", upload_model, methods=["POST"]),
            Route("/models", models, methods=["GET"]),
            Route("/models/{name}/rollback", rollback_model, methods=["POST"]),
            Route("/models/{name}", delete_model, methods=["DELETE"]),
            Route("/uploads/{upload_id}", upload_status, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        # One handler for everything: Starlette looks handlers up by class, and `Exception`
        # is its last resort (ServerErrorMiddleware answers with it, then re-raises).
        exception_handlers={
            UploaderError: handle_error,
            HTTPException: handle_error,
            Exception: handle_error,
        },
    )
    app.state.admin_key = admin_key or None
    app.state.service = UploaderService(
        Path(repository),
        tuple(Path(r) for r in local_roots),
        builder,
        max_concurrent,
        batch_delay_ms,
    )
    return app
