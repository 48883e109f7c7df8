"""Errors of the dispatcher, each carrying its HTTP status, and the one handler mapping them.

Exception tree::

    DispatcherError (500 internal)
    ├── BadRequest (400 bad_request)
    │   └── InvalidJSON (400 invalid_json)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── ValidationFailed (422 validation_failed)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── TaskNotFound (404 task_not_found)
    ├── DuplicateTask (409 duplicate_task)
    ├── QueueFull (429 queue_full, Retry-After)
    ├── CallerBusy (429 caller_busy, Retry-After)
    ├── Unavailable (503 unavailable, Retry-After)
    │   ├── NoWorkers (503 no_workers)
    │   ├── ShuttingDown (503 shutting_down)
    │   ├── AttemptsExhausted (503 attempts_exhausted)
    │   ├── UploaderNotConfigured (503 uploader_not_configured)
    │   └── StoreFailed (503 store_failed: the state database cannot be written)
    ├── UpstreamError (502 upstream_error)
    │   ├── TaskFailed (502 task_failed; status chosen from the worker's error code)
    │   └── UploaderUnreachable (502 uploader_unreachable)
    └── DeadlineExceeded (504 deadline_exceeded)
"""

from __future__ import annotations

from typing import Any, ClassVar

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


class PayloadTooLarge(DispatcherError):
    """The body exceeds the configured limit."""

    status = 413
    code = "payload_too_large"


class TaskNotFound(DispatcherError):
    """No task (queued, running or kept result) has this id."""

    status = 404
    code = "task_not_found"


class DuplicateTask(DispatcherError):
    """A task with this id is already queued or running."""

    status = 409
    code = "duplicate_task"


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


class UploaderUnreachable(UpstreamError):
    """The uploader did not answer."""

    code = "uploader_unreachable"


class DeadlineExceeded(DispatcherError):
    """The task's deadline passed before it finished."""

    status = 504
    code = "deadline_exceeded"


def error_response(exc: DispatcherError) -> Response:
    """The JSON response for `exc`, with Retry-After when it has one."""
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)


async def handle_dispatcher_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every `DispatcherError`."""
    assert isinstance(exc, DispatcherError)
    return error_response(exc)


def all_error_classes() -> list[type[DispatcherError]]:
    """Every class of the tree, the base included (tests check each has a status)."""
    seen: list[type[DispatcherError]] = []
    stack: list[type[DispatcherError]] = [DispatcherError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
