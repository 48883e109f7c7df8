"""The asyncio client: `smartrouting.client.protocol`'s flows driven over `httpx.AsyncClient`.

The same operations, arguments and results as `smartrouting.client.sync.Client`, awaited.
"""

from __future__ import annotations

import asyncio
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
from smartrouting.client.sync import headers_of, http_timeout, response_body

T = TypeVar("T")


class AsyncClient:
    """A dispatcher's HTTP API for asyncio code, with retries (429/503 after `Retry-After`,
    connection errors with backoff; a task keeps its id across retries, so it runs once).

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.retry = retry or RetryPolicy()
        self.base_urls = BaseUrls(base_url)
        self._http = httpx.AsyncClient(headers=headers_of(api_key), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- tasks ---------------------------------------------------------------------------

    async def run_task(
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
            return await self._drive(protocol.run_durable(body, wait, time.monotonic))
        return await self._drive(protocol.run_task(body, self.task_timeout_s))

    async def submit(
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
        return await self._drive(protocol.submit(body))

    async def status(self, task_id: str, *, wait_s: float = 0.0) -> TaskStatus:
        """A task's state, waiting up to `wait_s` (at most 60) for it to finish."""
        return await self._drive(protocol.status(task_id, wait_s))

    async def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        """Wait for a submitted task's result; `TaskTimeout` after `timeout_s`."""
        limit = timeout_s if timeout_s is not None else self.task_timeout_s
        return await self._drive(protocol.result(task_id, limit, time.monotonic))

    async def cancel(self, task_id: str) -> TaskStatus:
        """Cancel a queued or running task; its state afterwards."""
        return await self._drive(protocol.cancel(task_id))

    async def embed(
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
        task = await self.run_task(
            "embed_texts", model, parameters, task_id=task_id, timeout_s=timeout_s
        )
        return protocol.embeddings(task)

    # -- models and workers --------------------------------------------------------------

    async def upload_model(
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
        return await self._drive(protocol.upload_model(body))

    async def models(self) -> list[str]:
        """The labels the dispatcher knows (`GET /v1/models`)."""
        return await self._drive(protocol.models())

    async def workers(self) -> list[WorkerInfo]:
        """The connected workers with their labels and counters."""
        return await self._drive(protocol.workers())

    # -- driving flows -------------------------------------------------------------------

    async def _drive(self, flow: Generator[Call, Reply, T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as stop:
            value: T = stop.value
            return value

    async def _send(self, call: Call) -> Reply:
        if call.delay_s:
            await asyncio.sleep(call.delay_s)
        attempts = Attempts(self.retry, call, time.monotonic)
        while True:
            try:
                response = await self._http.request(
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
            await asyncio.sleep(wait)
