"""The client's logic without I/O: what to send, how to read the answers, when to retry.

Each operation is a *flow*: a generator that yields the `Call`s it needs and receives each
`Reply`, returning the typed result. `Client` and `AsyncClient` drive the same flows over
httpx (sync or async), so both behave alike by construction; tests can drive a flow by hand.
`RetryPolicy` says which failures are retried and how long to wait: 429 and 503 after the
`Retry-After` the dispatcher sent, connection errors with jittered exponential backoff. A
retried task keeps its task id, so the dispatcher answers the task it already has (running,
or completed and kept) instead of running it again (docs/architecture.md §3.3). `BaseUrls`
holds several dispatchers of one deployment (sharing a task store, §3.5.1): after a connection
error or a 503 the retry goes to the next one, with the same task id.

The model authors' calls (upload, its asynchronous status, the catalogue, rollback, delete:
docs/interfaces.md §3) are flows too; those that change the repository are marked `admin`, so
the driver sends the admin key on them (docs/architecture.md §4.1), and are not sent again
after a connection error that may have reached the dispatcher.
"""

from __future__ import annotations

import random
import urllib.parse
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smartrouting.client.models import (
    APIError,
    ConnectionFailed,
    DeletedModel,
    Embeddings,
    ModelInfo,
    RolledBack,
    TaskResult,
    TaskStatus,
    TaskTimeout,
    UploadedModel,
    UploadFailed,
    UploadStatus,
    UploadTimeout,
    WorkerInfo,
)

#: Statuses retried after `Retry-After` (queue full, caller busy; shutting down, no workers).
RETRY_STATUSES = frozenset({429, 503})
#: Error codes never retried whatever their status: a 503 that only a new configuration
#: ends (retrying it would only spend the budget).
PERMANENT_CODES = frozenset({"uploader_not_configured"})
#: Statuses after which the retry goes to the next dispatcher (this one is going away or has
#: no workers); a 429 stays: the limit it reports is the caller's own.
FAILOVER_STATUSES = frozenset({503})
#: Error codes of a failed asynchronous task that a restarted dispatcher runs again: keep
#: waiting for it (the state database kept it queued).
RESUMED_CODES = frozenset({"shutting_down"})
#: Longest long poll of `GET /tasks/{id}?wait_s=` the dispatcher allows.
MAX_WAIT_S = 60.0
#: Added to a task's deadline for the HTTP read timeout of a call that waits for it.
READ_MARGIN_S = 10.0
#: Read timeout of a synchronous upload, and the default wait for an asynchronous one: a
#: conversion of a large model takes minutes.
UPLOAD_TIMEOUT_S = 900.0
#: Read timeout of a model delete: it waits for the tasks running on the model to finish.
DELETE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Call:
    """One HTTP request a flow needs. `idempotent`: safe to send again after a connection
    error that may have reached the server (a task call with its id is). `admin`: a call
    that needs the admin key when the dispatcher has one (uploads, rollback, delete)."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    read_timeout_s: float | None = None
    delay_s: float = 0.0
    idempotent: bool = True
    admin: bool = False


@dataclass(frozen=True)
class Reply:
    """A successful (2xx) answer; error answers become `APIError` in the driver."""

    status: int
    body: Any


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and for how long.

    `attempts`: sends of one call at most (the first included); `budget_s`: total time spent
    waiting between them; backoff for connection errors doubles from `backoff_s` to
    `max_backoff_s` with full jitter; 429/503 wait `Retry-After` (else the backoff).
    """

    attempts: int = 20
    budget_s: float = 120.0
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """The wait before attempt `attempt + 1` after a connection error (attempt >= 1)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def delay(self, attempt: int, status: int | None, retry_after: str | None) -> float:
        """The wait before retrying after `status` (None: a connection error)."""
        if status is not None and retry_after:
            try:
                return min(self.max_backoff_s * 4, max(0.0, float(retry_after)))
            except ValueError:  # an HTTP date: rare, take the backoff
                pass
        return self.backoff(attempt)


def retryable(status: int) -> bool:
    """Whether an error status is retried (the request was refused, not run)."""
    return status in RETRY_STATUSES


def fails_over(status: int | None) -> bool:
    """Whether the retry after `status` (None: a connection error) goes to the next
    dispatcher rather than the same one."""
    return status is None or status in FAILOVER_STATUSES


class BaseUrls:
    """The dispatchers a client calls: one URL, or several of one deployment that share a task
    store (docs/architecture.md §3.5.1), so that any of them answers for any task id.

    Calls go to the current one; `failed()` moves on to the next in turn, which stays current
    until it fails in its turn (a dead dispatcher costs one failed attempt, not one per call).
    """

    def __init__(self, base_url: str | Sequence[str]) -> None:
        urls = (base_url,) if isinstance(base_url, str) else tuple(base_url)
        if not urls or not all(urls):
            raise ValueError("at least one dispatcher base URL is needed")
        self.urls = tuple(url.rstrip("/") for url in urls)
        self.index = 0

    @property
    def current(self) -> str:
        """The base URL calls go to now."""
        return self.urls[self.index]

    def url(self, path: str) -> str:
        """The absolute URL of `path` on the current dispatcher."""
        return self.current + path

    def failed(self) -> None:
        """The current dispatcher failed: move on to the next (a no-op with one URL)."""
        self.index = (self.index + 1) % len(self.urls)


def error_of(status: int, body: Any, retry_after: str | None) -> APIError:
    """The `APIError` of an error answer."""
    try:
        seconds = float(retry_after) if retry_after else None
    except ValueError:
        seconds = None
    return APIError.from_body(status, body, seconds)


# --- flows ---------------------------------------------------------------------------------

Flow = Generator[Call, Reply, Any]


def task_body(
    task_type: str,
    label: str,
    parameters: Mapping[str, Any] | None,
    task_id: str | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    """A /run-task or /tasks body; the id is chosen here when absent, so retries reuse it."""
    body: dict[str, Any] = {
        "task_type": task_type,
        "label": label,
        "task_id": task_id or uuid.uuid4().hex,
        "parameters": dict(parameters or {}),
    }
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return body


def run_task(body: dict[str, Any], default_timeout_s: float) -> Generator[Call, Reply, TaskResult]:
    """`POST /run-task`, waiting for the answer (a retry attaches to the same task)."""
    timeout = float(body.get("timeout_s") or default_timeout_s)
    reply = yield Call("POST", "/run-task", body, read_timeout_s=timeout + READ_MARGIN_S)
    return TaskResult.from_json(reply.body)


def submit(body: dict[str, Any]) -> Generator[Call, Reply, str]:
    """`POST /tasks`: the task id once the dispatcher has accepted (and stored) the task."""
    reply = yield Call("POST", "/tasks", body)
    return str(reply.body["task_id"])


def status(task_id: str, wait_s: float = 0.0) -> Generator[Call, Reply, TaskStatus]:
    """`GET /tasks/{id}`, waiting up to `wait_s` for it to finish."""
    params = {"wait_s": min(wait_s, MAX_WAIT_S)} if wait_s > 0 else None
    read = (params["wait_s"] if params else 0.0) + READ_MARGIN_S
    reply = yield Call("GET", f"/tasks/{task_id}", params=params, read_timeout_s=read)
    return TaskStatus.from_json(reply.body)


def result(task_id: str, timeout_s: float, clock: Any) -> Generator[Call, Reply, TaskResult]:
    """Wait for an asynchronous task's result by long polling; `TaskTimeout` after
    `timeout_s`, `APIError` when it failed. A failure a restarted dispatcher undoes (it was
    shutting down; the state database keeps the task queued) is waited out, not raised."""
    deadline = clock() + timeout_s
    delay = 0.0
    while True:
        left = deadline - clock()
        if left <= 0:
            raise TaskTimeout(f"task {task_id} did not finish within {timeout_s:g}s")
        params = {"wait_s": round(min(left, MAX_WAIT_S), 3)}
        call = Call(
            "GET",
            f"/tasks/{task_id}",
            params=params,
            read_timeout_s=params["wait_s"] + READ_MARGIN_S,
            delay_s=delay,
        )
        state = TaskStatus.from_json((yield call).body)
        if state.status == "completed" and state.result is not None:
            return state.result
        if state.status == "failed" and state.error is not None:
            if state.error.code not in RESUMED_CODES:
                raise state.error
            delay = 1.0  # the dispatcher is going away; its successor will run the task
        else:
            delay = 0.0


def cancel(task_id: str) -> Generator[Call, Reply, TaskStatus]:
    """`DELETE /tasks/{id}`: the task's state after the cancel."""
    reply = yield Call("DELETE", f"/tasks/{task_id}")
    return TaskStatus.from_json(reply.body)


def upload_body(
    model_id: str,
    *,
    overwrite: bool = False,
    max_batch_size: int | None = None,
    model_name: str | None = None,
    background: bool = False,
) -> dict[str, Any]:
    """A `/upload-model` body; what is left out takes the uploader's default."""
    body: dict[str, Any] = {"model_id": model_id, "overwrite": overwrite}
    if max_batch_size is not None:
        body["max_batch_size"] = max_batch_size
    if model_name is not None:
        body["model_name"] = model_name
    if background:
        body["async"] = True
    return body


def upload_model(
    body: dict[str, Any], read_timeout_s: float = UPLOAD_TIMEOUT_S
) -> Generator[Call, Reply, UploadedModel]:
    """`POST /upload-model`, waiting for the publish: not idempotent (a second upload is
    409), so a connection error that may have reached the uploader is not retried."""
    call = Call(
        "POST", "/upload-model", body, read_timeout_s=read_timeout_s, idempotent=False, admin=True
    )
    return UploadedModel.from_json((yield call).body)


def start_upload(body: dict[str, Any]) -> Generator[Call, Reply, UploadStatus]:
    """`POST /upload-model` with `"async": true`: the queued upload (202), with its id."""
    call = Call("POST", "/upload-model", {**body, "async": True}, idempotent=False, admin=True)
    return UploadStatus.from_json((yield call).body)


def _upload_path(upload_id: str) -> str:
    return f"/uploads/{urllib.parse.quote(upload_id, safe='')}"


def upload_status(upload_id: str, wait_s: float = 0.0) -> Generator[Call, Reply, UploadStatus]:
    """`GET /uploads/{id}`, waiting up to `wait_s` (at most 60) for an unfinished one to end."""
    params = {"wait_s": min(wait_s, MAX_WAIT_S)} if wait_s > 0 else None
    read = (params["wait_s"] if params else 0.0) + READ_MARGIN_S
    call = Call("GET", _upload_path(upload_id), params=params, read_timeout_s=read, admin=True)
    return UploadStatus.from_json((yield call).body)


def wait_for_upload(
    upload_id: str, timeout_s: float, clock: Any
) -> Generator[Call, Reply, UploadedModel]:
    """Long-poll an asynchronous upload until it ends: its publish result on success,
    `UploadFailed` (the uploader's error) on failure, `UploadTimeout` after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        left = deadline - clock()
        if left <= 0:
            raise UploadTimeout(f"upload {upload_id} did not end within {timeout_s:g}s")
        state = yield from upload_status(upload_id, round(min(left, MAX_WAIT_S), 3))
        if state.state == "success" and state.result is not None:
            return state.result
        if state.state == "failed":
            raise UploadFailed(state)


def _model_path(name: str) -> str:
    return f"/models/{urllib.parse.quote(name, safe='')}"


def models() -> Generator[Call, Reply, list[ModelInfo]]:
    """`GET /models`: the catalogue (every model a worker declared or the uploader published)."""
    reply = yield Call("GET", "/models")
    return [ModelInfo.from_json(entry) for entry in reply.body.get("models", [])]


def model(name: str) -> Generator[Call, Reply, ModelInfo]:
    """`GET /models/{name}`: one model of the catalogue (404 `model_not_found`)."""
    reply = yield Call("GET", _model_path(name))
    return ModelInfo.from_json(reply.body)


def rollback_model(name: str) -> Generator[Call, Reply, RolledBack]:
    """`POST /models/{name}/rollback`: not sent again after a connection error that may have
    reached the dispatcher (a second rollback would go back one more version)."""
    call = Call("POST", _model_path(name) + "/rollback", idempotent=False, admin=True)
    return RolledBack.from_json((yield call).body)


def delete_model(name: str) -> Generator[Call, Reply, DeletedModel]:
    """`DELETE /models/{name}`: waits for the tasks running on the model; not sent again after
    a connection error that may have reached the dispatcher (the retry would answer 404)."""
    call = Call(
        "DELETE",
        _model_path(name),
        read_timeout_s=DELETE_TIMEOUT_S,
        idempotent=False,
        admin=True,
    )
    return DeletedModel.from_json((yield call).body)


def workers() -> Generator[Call, Reply, list[WorkerInfo]]:
    """`GET /workers?detail=true`."""
    reply = yield Call("GET", "/workers", params={"detail": "true"})
    return [WorkerInfo.from_json(w) for w in reply.body.get("workers", [])]


def embeddings(task: TaskResult) -> Embeddings:
    """The typed result of an `embed_texts` task."""
    return Embeddings.from_task(task)


def run_durable(
    body: dict[str, Any], timeout_s: float, clock: Any
) -> Generator[Call, Reply, TaskResult]:
    """`submit`, then `result`: the task survives a dispatcher restart (with `--state-db`)."""
    task_id = yield from submit(body)
    return (yield from result(task_id, timeout_s, clock))


class Attempts:
    """The retry decisions for one `Call`: each outcome gives a `Reply`, a wait before the
    next attempt, or raises (`APIError`, `ConnectionFailed`) when no retry is allowed."""

    def __init__(self, policy: RetryPolicy, call: Call, clock: Any) -> None:
        self.policy = policy
        self.call = call
        self.clock = clock
        self.started = clock()
        self.count = 0

    def on_transport_error(self, exc: Exception, connect: bool) -> float:
        """A connection error; `connect`: it failed before the request was sent."""
        self.count += 1
        what = f"{self.call.method} {self.call.path}: {exc!r} (attempt {self.count})"
        if not (connect or self.call.idempotent):
            raise ConnectionFailed(f"{what}; not retried: the request may have been run")
        wait = self.policy.delay(self.count, None, None)
        if not self._allowed(wait):
            raise ConnectionFailed(f"{what}; out of retries") from exc
        return wait

    def on_response(self, status: int, body: Any, retry_after: str | None) -> Reply | float:
        """An answer: the `Reply` of a 2xx, else a wait (429/503) or the `APIError`."""
        self.count += 1
        if 200 <= status < 300:
            return Reply(status, body)
        error = error_of(status, body, retry_after)
        if not retryable(status) or error.code in PERMANENT_CODES:
            raise error
        wait = self.policy.delay(self.count, status, retry_after)
        if not self._allowed(wait):
            raise error
        return wait

    def _allowed(self, wait: float) -> bool:
        spent = self.clock() - self.started
        return self.count < self.policy.attempts and spent + wait <= self.policy.budget_s
