"""Errors of the dispatcher, each carrying its HTTP status, and the one handler mapping them.

Exception tree::

    DispatcherError (500 internal)
    ├── RegistryError (500 registry_error: an impossible registry operation, a bug)
    ├── ProtocolViolation (400 protocol_violation: a worker broke the protocol; close 1008)
    ├── BadRequest (400 bad_request)
    │   └── InvalidJSON (400 invalid_json)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── ValidationFailed (422 validation_failed)
    │   └── UnsupportedParameter (422 unsupported_parameter: e.g. `dimensions` on /v1)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── NotFound (404 not_found: no such route)
    │   ├── TaskNotFound (404 task_not_found)
    │   └── ModelNotFound (404 model_not_found: a label not in the model catalogue)
    ├── ModelDeleted (410 model_deleted: DELETE /models/{name} is removing the model)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── DuplicateTask (409 duplicate_task)
    │   └── TaskIdConflict (409 task_id_conflict: the id is in use with another body)
    ├── TaskCancelled (409 task_cancelled: DELETE /tasks/{id} answered it)
    │   └── CallerGone (409 caller_gone: the /run-task caller disconnected before the answer)
    ├── QueueFull (429 queue_full, Retry-After)
    ├── CallerBusy (429 caller_busy, Retry-After)
    ├── Unavailable (503 unavailable, Retry-After)
    │   ├── NoWorkers (503 no_workers)
    │   ├── ShuttingDown (503 shutting_down)
    │   ├── AttemptsExhausted (503 attempts_exhausted)
    │   ├── UploaderNotConfigured (503 uploader_not_configured)
    │   ├── UploaderUnavailable (503 uploader_unavailable: a delete could not reach it)
    │   └── StoreFailed (503 store_failed: the state database cannot be written)
    ├── UpstreamError (502 upstream_error)
    │   ├── TaskFailed (502 task_failed; status chosen from the worker's error code)
    │   ├── ModelLoadFailed (502 model_load_failed: its load failed lately; not tried again)
    │   └── UploaderUnreachable (502 uploader_unreachable)
    └── DeadlineExceeded (504 deadline_exceeded)

Under `/v1/` (the OpenAI-compatible API, `dispatcher.openai_api`) the same errors are rendered
in OpenAI's shape instead, `{"error": {"message", "type", "param", "code"}}`, by
`openai_error_response`; the choice is made here, by path, for every handler.

Errors are values as well as exceptions: a failed task keeps its error object (`code`,
`detail`, `retry_after_s`), the state database stores `to_record()`, and `from_record()` builds
the same error back after a restart. `error_response` is the one place that renders an error
as HTTP (docs/architecture.md §4).
"""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class DispatcherError(Exception):
    """Base of every dispatcher error; `status` and `code` say how HTTP shows it."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, detail: Any = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        """The status of this instance (a class default, or chosen per instance)."""
        return self.status

    def to_json(self) -> dict[str, Any]:
        """The JSON body `{"error": ..., "detail": ...}`."""
        return {"error": self.code, "detail": self.detail}

    def to_record(self) -> dict[str, Any]:
        """What the state database keeps of this error (`from_record` reads it back)."""
        return {"code": self.code, "detail": self.detail, "retry_after_s": self.retry_after_s}

    @staticmethod
    def from_record(record: dict[str, Any]) -> DispatcherError:
        """The error `to_record()` described; an unknown code becomes the base class."""
        cls = _CLASS_BY_CODE.get(str(record.get("code")), DispatcherError)
        detail, retry = record.get("detail"), record.get("retry_after_s")
        retry_after_s = float(retry) if isinstance(retry, (int, float)) else None
        if cls is TaskFailed and isinstance(detail, dict):
            return TaskFailed(str(detail.get("code")), str(detail.get("message")))
        error = cls.__new__(cls)
        DispatcherError.__init__(error, detail, retry_after_s=retry_after_s)
        return error


class RegistryError(DispatcherError):
    """An impossible registry operation (unknown worker, illegal state change): a bug."""

    code = "registry_error"


class ProtocolViolation(DispatcherError):
    """A worker broke the wire protocol; only its connection is closed (1008)."""

    status = 400
    code = "protocol_violation"


class BadRequest(DispatcherError):
    """The request cannot be understood."""

    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    """The body is not JSON, or not a JSON object."""

    code = "invalid_json"


class Unauthorized(DispatcherError):
    """No credentials, or wrong ones, for an endpoint that needs them."""

    status = 401
    code = "unauthorized"


class Forbidden(DispatcherError):
    """Valid credentials that do not allow this endpoint (an API key on an admin endpoint)."""

    status = 403
    code = "forbidden"


class ValidationFailed(DispatcherError):
    """The body is JSON but a field is missing or has the wrong type."""

    status = 422
    code = "validation_failed"


class UnsupportedParameter(ValidationFailed):
    """A parameter the endpoint knows but cannot honour for this model (`dimensions`)."""

    code = "unsupported_parameter"


class PayloadTooLarge(DispatcherError):
    """The body exceeds the configured limit."""

    status = 413
    code = "payload_too_large"


class NotFound(DispatcherError):
    """No route answers this path."""

    status = 404
    code = "not_found"


class TaskNotFound(NotFound):
    """No task (queued, running or kept result) has this id."""

    code = "task_not_found"


class ModelNotFound(NotFound):
    """No model has this label (not in the catalogue, or no worker has it); with a hint."""

    code = "model_not_found"


class ModelDeleted(DispatcherError):
    """The model is being deleted (`DELETE /models/{name}`): no new task for it."""

    status = 410
    code = "model_deleted"


class MethodNotAllowed(DispatcherError):
    """The route exists but not for this method."""

    status = 405
    code = "method_not_allowed"


class DuplicateTask(DispatcherError):
    """A task with this id is already queued or running."""

    status = 409
    code = "duplicate_task"


class TaskIdConflict(DuplicateTask):
    """The task id is in use (queued, running, or completed and kept) with another body."""

    code = "task_id_conflict"


class TaskCancelled(DispatcherError):
    """The task was cancelled (`DELETE /tasks/{id}`) before it finished."""

    status = 409
    code = "task_cancelled"


class CallerGone(TaskCancelled):
    """The synchronous caller disconnected before its task finished: the task was cancelled
    (its worker is sent Cancel) instead of running for nobody."""

    code = "caller_gone"


class QueueFull(DispatcherError):
    """The queue holds its limit of tasks; try again after Retry-After seconds."""

    status = 429
    code = "queue_full"


class CallerBusy(DispatcherError):
    """The caller already has its limit of unfinished tasks; retry after Retry-After seconds."""

    status = 429
    code = "caller_busy"


class Unavailable(DispatcherError):
    """The dispatcher cannot serve this now."""

    status = 503
    code = "unavailable"


class NoWorkers(Unavailable):
    """No worker is connected and the dispatcher is configured not to wait for one."""

    code = "no_workers"


class ShuttingDown(Unavailable):
    """The dispatcher is shutting down and takes no more tasks."""

    code = "shutting_down"


class AttemptsExhausted(Unavailable):
    """Every attempt of the task ended with its worker gone."""

    code = "attempts_exhausted"


class UploaderNotConfigured(Unavailable):
    """`/upload-model` was called but no `--uploader-url` is set."""

    code = "uploader_not_configured"


class UploaderUnavailable(Unavailable):
    """A model delete could not reach the uploader; the detail says what state it left."""

    code = "uploader_unavailable"


class StoreFailed(Unavailable):
    """The state database (DISPATCHER_STATE_DB) cannot be opened or written."""

    code = "store_failed"


class UpstreamError(DispatcherError):
    """A worker or the uploader failed."""

    status = 502
    code = "upstream_error"


class TaskFailed(UpstreamError):
    """The worker answered the task with an error; the status follows its error code."""

    code = "task_failed"

    #: Worker error code name -> HTTP status; anything else is 502.
    STATUS_BY_WORKER_CODE: ClassVar[dict[str, int]] = {
        "MODEL_NOT_FOUND": 404,
        "INVALID_PARAMETERS": 422,
        "UNKNOWN_TASK_TYPE": 422,
        "DEADLINE_EXCEEDED": 504,
        "ENGINE_UNAVAILABLE": 503,
    }

    def __init__(self, worker_code: str, message: str) -> None:
        super().__init__({"code": worker_code, "message": message})
        self.worker_code = worker_code

    @property
    def http_status(self) -> int:
        return self.STATUS_BY_WORKER_CODE.get(self.worker_code, self.status)


class ModelLoadFailed(UpstreamError):
    """The model failed to load lately; answered at once, without a worker, until the
    catalogue forgets the failure or a new version is published (Retry-After)."""

    code = "model_load_failed"


class UploaderUnreachable(UpstreamError):
    """The uploader did not answer."""

    code = "uploader_unreachable"


class DeadlineExceeded(DispatcherError):
    """The task's deadline passed before it finished."""

    status = 504
    code = "deadline_exceeded"


def _headers(exc: DispatcherError) -> dict[str, str]:
    if exc.retry_after_s is None:
        return {}
    return {"Retry-After": str(max(1, round(exc.retry_after_s)))}


def error_response(exc: DispatcherError) -> Response:
    """The JSON response for `exc`, with Retry-After when it has one."""
    return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=_headers(exc))


#: Paths answered in OpenAI's error shape (the OpenAI-compatible API).
OPENAI_PREFIX = "/v1/"
#: OpenAI's names for our codes, where its clients know one.
_OPENAI_CODES = {"unauthorized": "invalid_api_key"}


def openai_error_status(exc: DispatcherError) -> int:
    """The status under /v1: OpenAI answers 400 to every malformed request (we say 422)."""
    status = exc.http_status
    return 400 if status == 422 else status


def openai_error_json(exc: DispatcherError) -> dict[str, Any]:
    """`exc` in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""
    status = openai_error_status(exc)
    detail, param = exc.detail, None
    if isinstance(detail, dict) and "field" in detail:  # ValidationFailed: name the field
        param = str(detail["field"])
        message = f"{param}: {detail.get('message')}"
    elif isinstance(detail, dict) and "message" in detail:  # TaskFailed: the worker's words
        message = f"{detail.get('code')}: {detail['message']}"
    else:
        message = str(detail)
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    code = _OPENAI_CODES.get(exc.code, exc.code)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_response(exc: DispatcherError) -> Response:
    """The OpenAI-shaped JSON response for `exc`, with Retry-After when it has one."""
    status = openai_error_status(exc)
    return JSONResponse(openai_error_json(exc), status_code=status, headers=_headers(exc))


def render_error(path: str, exc: DispatcherError) -> Response:
    """`exc` as HTTP for a request to `path`: OpenAI's shape under /v1/, else ours."""
    if path.startswith(OPENAI_PREFIX):
        return openai_error_response(exc)
    return error_response(exc)


async def handle_dispatcher_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every `DispatcherError`."""
    assert isinstance(exc, DispatcherError)
    return render_error(request.url.path, exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 405:
        return render_error(path, MethodNotAllowed(f"{request.method} not allowed on {path}"))
    if exc.status_code == 404:
        return render_error(path, NotFound(f"no route {path}"))
    error = DispatcherError(exc.detail)
    return JSONResponse(error.to_json(), status_code=exc.status_code, headers=exc.headers)


#: Exception handlers of the dispatcher app: every error goes through `error_response`.
EXCEPTION_HANDLERS = {
    DispatcherError: handle_dispatcher_error,
    HTTPException: handle_http_exception,
}


def all_error_classes() -> list[type[DispatcherError]]:
    """Every class of the tree, the base included (tests check each has a status)."""
    seen: list[type[DispatcherError]] = []
    stack: list[type[DispatcherError]] = [DispatcherError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


_CLASS_BY_CODE: dict[str, type[DispatcherError]] = {cls.code: cls for cls in all_error_classes()}
