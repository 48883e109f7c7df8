"""The blocking client: `smartrouting.client.protocol`'s flows driven over `httpx.Client`."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import httpx

from smartrouting.client import protocol
from smartrouting.client.models import (
    DeletedModel,
    Embeddings,
    ModelInfo,
    RolledBack,
    TaskResult,
    TaskStatus,
    UploadedModel,
    UploadStatus,
    WorkerInfo,
)
from smartrouting.client.protocol import Attempts, BaseUrls, Call, Reply, RetryPolicy

T = TypeVar("T")


def http_timeout(default_s: float, call: Call) -> httpx.Timeout:
    """The timeouts of one call: `default_s`, with a longer read for calls that wait."""
    return httpx.Timeout(default_s, read=max(default_s, call.read_timeout_s or 0.0))


def response_body(response: httpx.Response) -> Any:
    """The JSON body of an answer (its text when it is not JSON)."""
    try:
        return response.json()
    except ValueError:
        return response.text


def headers_of(api_key: str | None) -> dict[str, str]:
    """The request headers: the API key as `Authorization: Bearer`."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """A dispatcher's HTTP API, with retries (429/503 after `Retry-After`, connection errors
    with backoff; a task keeps its id across retries, so it runs once).

    `base_url`: one dispatcher, or several of one deployment (they share a task store): calls
    go to one until it fails (connection error, 503), then to the next, with the same task id.
    `timeout_s` bounds connecting and each call that does not wait for a task;
    `task_timeout_s` is the deadline assumed for tasks sent without their own `timeout_s`
    (the dispatcher's default). `transport` replaces the network (tests).
    `admin_key`: sent instead of `api_key` on the calls that need it (uploads, rollback,
    delete) when the dispatcher has an admin key (docs/architecture.md §4.1).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout_s: float = 30.0,
        task_timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.retry = retry or RetryPolicy()
        self.base_urls = BaseUrls(base_url)
        # The admin key replaces the API key on admin calls only: a caller's key keeps
        # serving tasks, and the admin key is not sent where it is not needed.
        self._admin_headers = headers_of(admin_key) if admin_key else None
        self._http = httpx.Client(headers=headers_of(api_key), transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- tasks ---------------------------------------------------------------------------

    def run_task(
        self,
        task_type: str,
        label: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        timeout_s: float | None = None,
        durable: bool = False,
    ) -> TaskResult:
        """Run a task and return its result; `APIError` when it failed.

        `durable=False`: one `POST /run-task` (fastest). `durable=True`: `POST /tasks` and a
        long poll of its result, so the task survives a dispatcher restart (`--state-db`).
        """
        body = protocol.task_body(task_type, label, parameters, task_id, timeout_s)
        if durable:
            wait = (timeout_s or self.task_timeout_s) + protocol.READ_MARGIN_S
            return self._drive(protocol.run_durable(body, wait, time.monotonic))
        return self._drive(protocol.run_task(body, self.task_timeout_s))

    def submit(
        self,
        task_type: str,
        label: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Queue a task (`POST /tasks`); its id, to pass to `result`, `status` or `cancel`."""
        body = protocol.task_body(task_type, label, parameters, task_id, timeout_s)
        return self._drive(protocol.submit(body))

    def status(self, task_id: str, *, wait_s: float = 0.0) -> TaskStatus:
        """A task's state, waiting up to `wait_s` (at most 60) for it to finish."""
        return self._drive(protocol.status(task_id, wait_s))

    def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        """Wait for a submitted task's result; `TaskTimeout` after `timeout_s`."""
        limit = timeout_s if timeout_s is not None else self.task_timeout_s
        return self._drive(protocol.result(task_id, limit, time.monotonic))

    def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a queued or running task; its state afterwards."""
        return self._drive(protocol.cancel(task_id))

    def embed(
        self,
        texts: Sequence[str],
        model: str,
        *,
        normalize: bool = True,
        task_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Embeddings:
        """Embeddings of `texts` with the model labelled `model` (an `embed_texts` task)."""
        parameters = {"texts": list(texts), "normalize": normalize}
        task = self.run_task("embed_texts", model, parameters, task_id=task_id, timeout_s=timeout_s)
        return protocol.embeddings(task)

    # -- models and workers --------------------------------------------------------------

    @overload
    def upload_model(
        self,
        model_id: str,
        *,
        overwrite: bool = ...,
        max_batch_size: int | None = ...,
        model_name: str | None = ...,
        wait: Literal[True] = ...,
        timeout_s: float = ...,
    ) -> UploadedModel: ...

    @overload
    def upload_model(
        self,
        model_id: str,
        *,
        overwrite: bool = ...,
        max_batch_size: int | None = ...,
        model_name: str | None = ...,
        wait: Literal[False],
        timeout_s: float = ...,
    ) -> UploadStatus: ...

    def upload_model(
        self,
        model_id: str,
        *,
        overwrite: bool = False,
        max_batch_size: int | None = None,
        model_name: str | None = None,
        wait: bool = True,
        timeout_s: float = protocol.UPLOAD_TIMEOUT_S,
    ) -> UploadedModel | UploadStatus:
        """Convert and publish a SentenceTransformer (the admin key when one is set).

        `wait=True`: one `POST /upload-model` answered once the model is published (at most
        `timeout_s`); its `UploadedModel` (version, content hash). `wait=False`: sent with
        `"async": true`, answered at once with the queued upload's `UploadStatus`; pass its
        `upload_id` to `upload_status` or `wait_for_upload`. Left out, `max_batch_size` and
        `model_name` take the uploader's defaults (32; the label derived from the id).
        """
        body = protocol.upload_body(
            model_id, overwrite=overwrite, max_batch_size=max_batch_size, model_name=model_name
        )
        if wait:
            return self._drive(protocol.upload_model(body, timeout_s))
        return self._drive(protocol.start_upload(body))

    def upload_status(self, upload_id: str, wait_s: float | None = None) -> UploadStatus:
        """An asynchronous upload's state and phases, waiting up to `wait_s` (at most 60) for
        an unfinished one to end."""
        return self._drive(protocol.upload_status(upload_id, wait_s or 0.0))

    def wait_for_upload(
        self, upload_id: str, timeout_s: float = protocol.UPLOAD_TIMEOUT_S
    ) -> UploadedModel:
        """Wait for an asynchronous upload to end: its publish result; `UploadFailed` (an
        `APIError` with the uploader's status, code and detail) when it failed,
        `UploadTimeout` after `timeout_s`."""
        return self._drive(protocol.wait_for_upload(upload_id, timeout_s, time.monotonic))

    def models(self) -> list[ModelInfo]:
        """The model catalogue (`GET /models`): versions, holders and learned costs."""
        return self._drive(protocol.models())

    def model(self, name: str) -> ModelInfo:
        """One model of the catalogue; `APIError` 404 `model_not_found` when unknown."""
        return self._drive(protocol.model(name))

    def rollback_model(self, name: str) -> RolledBack:
        """Make the previous version of a model current (the admin key when one is set);
        409 `no_previous_version` when none is left."""
        return self._drive(protocol.rollback_model(name))

    def delete_model(self, name: str) -> DeletedModel:
        """Unload a model everywhere and remove it (the admin key when one is set); tasks for
        it are answered 410 while it runs, 404 afterwards."""
        return self._drive(protocol.delete_model(name))

    def workers(self) -> list[WorkerInfo]:
        """The connected workers with their labels and counters."""
        return self._drive(protocol.workers())

    # -- driving flows -------------------------------------------------------------------

    def _drive(self, flow: Generator[Call, Reply, T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _send(self, call: Call) -> Reply:
        if call.delay_s:
            time.sleep(call.delay_s)
        attempts = Attempts(self.retry, call, time.monotonic)
        while True:
            try:
                response = self._http.request(
                    call.method,
                    self.base_urls.url(call.path),
                    json=call.json,
                    params=call.params,
                    headers=self._admin_headers if call.admin else None,
                    timeout=http_timeout(self.timeout_s, call),
                )
            except httpx.TransportError as exc:
                wait = attempts.on_transport_error(exc, isinstance(exc, httpx.ConnectError))
                self.base_urls.failed()
            else:
                retry_after = response.headers.get("retry-after")
                outcome = attempts.on_response(
                    response.status_code, response_body(response), retry_after
                )
                if isinstance(outcome, Reply):
                    return outcome
                if protocol.fails_over(response.status_code):
                    self.base_urls.failed()
                wait = outcome
            time.sleep(wait)
