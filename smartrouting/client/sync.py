"""The blocking client: `smartrouting.client.protocol`'s flows driven over `httpx.Client`."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from smartrouting.client import protocol
from smartrouting.client.models import (
    Embeddings,
    TaskResult,
    TaskStatus,
    UploadedModel,
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
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        task_timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.retry = retry or RetryPolicy()
        self.base_urls = BaseUrls(base_url)
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

    def upload_model(
        self,
        model_id: str,
        *,
        max_batch_size: int = 32,
        overwrite: bool = False,
        model_name: str | None = None,
    ) -> UploadedModel:
        """Convert and publish a SentenceTransformer (needs the admin key when one is set)."""
        body: dict[str, Any] = {
            "model_id": model_id,
            "max_batch_size": max_batch_size,
            "overwrite": overwrite,
        }
        if model_name is not None:
            body["model_name"] = model_name
        return self._drive(protocol.upload_model(body))

    def models(self) -> list[str]:
        """The labels the dispatcher knows (`GET /v1/models`)."""
        return self._drive(protocol.models())

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
