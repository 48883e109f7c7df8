"""HTTP load generators that replay a trace against a dispatcher.

Closed loop (the original system's producers): one asyncio task per producer;
each sends its requests in order with `POST /run-task`, waits for the answer, then
sleeps the entry's think time × `time_scale`. Open loop: every request is sent at
its Poisson arrival offset, whatever is still in flight.

With `submit="async"` a request is `POST /tasks` (202) followed by polling
`GET /tasks/{id}`; it counts as a dispatched job instead of a synchronous request.
With several dispatchers (`base_urls`), request i goes to dispatcher i mod N, all its
calls included (round robin over the trace, the same split whatever the timing).
Every request ends counted exactly once: completed (latency recorded) or failed
(with its error code). A rich progress bar shows completions.

The HTTP client is aiohttp: measured here against the dispatcher's /health with 200
requests in flight, httpx's AsyncClient managed ~200 requests/s on one core and
aiohttp ~7,000, and the open-loop scale run needs the client not to be the limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from benchmark.results import ProducerReport
from benchmark.trace import Trace, TraceEntry

SubmitMode = Literal["sync", "async"]

#: A short text for real `embed_texts` tasks.
SAMPLE_TEXT = "Smart routing sends each task to a worker that already holds its model."


def task_body(entry: TraceEntry, task_type: str, run_tag: str) -> dict[str, Any]:
    """The JSON body of the request for one trace entry."""
    params: dict[str, Any] = {}
    if task_type == "embed_texts":
        params = {"texts": [SAMPLE_TEXT]}
    return {
        "task_id": f"{run_tag}-{entry.index}",
        "task_type": task_type,
        "label": entry.label,
        "parameters_json": json.dumps(params),
    }


@dataclass
class ProducerSettings:
    """How to replay a trace; `base_url`: one dispatcher, or several (round robin)."""

    base_url: str | tuple[str, ...]
    task_type: str = "sample_task"
    time_scale: float = 1.0
    submit: SubmitMode = "sync"
    request_timeout_s: float = 600.0
    poll_interval_s: float = 0.01
    run_tag: str = "bench"
    max_connections: int = 1000

    @property
    def base_urls(self) -> tuple[str, ...]:
        """Every dispatcher's base URL, without a trailing slash."""
        urls = (self.base_url,) if isinstance(self.base_url, str) else self.base_url
        return tuple(url.rstrip("/") for url in urls)

    def base_url_of(self, entry: TraceEntry) -> str:
        """The dispatcher that gets `entry`'s request: round robin by trace index."""
        urls = self.base_urls
        return urls[entry.index % len(urls)]


class _Counter:
    """Accumulates one run's outcomes; one instance shared by all producers."""

    def __init__(self, on_done: Callable[[], None]) -> None:
        self.report = ProducerReport()
        self._on_done = on_done

    def sent(self, submit: SubmitMode) -> None:
        self.report.requests += 1
        if submit == "sync":
            self.report.synchronous += 1
        else:
            self.report.dispatched += 1

    def ok(self, latency_s: float, answer: dict[str, Any]) -> None:
        self.report.latencies_s.append(latency_s)
        if answer.get("label_miss"):
            self.report.label_misses += 1
        self._on_done()

    def failed(self, code: str) -> None:
        self.report.failed += 1
        self.report.errors[code] += 1
        self._on_done()


async def _json(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, None


def _error_code(status: int, data: Any) -> str:
    error = data.get("error", "?") if isinstance(data, dict) else "?"
    return f"{status}:{error}"


async def _send_sync(
    client: aiohttp.ClientSession, base: str, body: dict[str, Any], s: ProducerSettings
) -> tuple[dict[str, Any] | None, str]:
    async with client.post(f"{base}/run-task", json=body) as response:
        status, answer = await _json(response)
    if status != 200 or not isinstance(answer, dict):
        return None, _error_code(status, answer)
    if answer.get("status") != "completed":
        return None, f"200:{answer.get('status')}"
    return answer, ""


async def _send_async(
    client: aiohttp.ClientSession, base: str, body: dict[str, Any], s: ProducerSettings
) -> tuple[dict[str, Any] | None, str]:
    async with client.post(f"{base}/tasks", json=body) as response:
        status, accepted = await _json(response)
    if status != 202 or not isinstance(accepted, dict):
        return None, _error_code(status, accepted)
    task_id = accepted["task_id"]
    deadline = time.monotonic() + s.request_timeout_s
    while time.monotonic() < deadline:
        async with client.get(f"{base}/tasks/{task_id}") as response:
            status, answer = await _json(response)
        if status != 200 or not isinstance(answer, dict):
            return None, _error_code(status, answer)
        if answer.get("status") == "completed":
            return answer, ""
        if answer.get("status") == "failed":
            error = answer.get("error")
            code = error.get("error") if isinstance(error, dict) else error
            return None, f"failed:{code}"
        await asyncio.sleep(s.poll_interval_s)
    return None, "client_timeout"


async def _one(
    client: aiohttp.ClientSession, entry: TraceEntry, s: ProducerSettings, counter: _Counter
) -> None:
    body = task_body(entry, s.task_type, s.run_tag)
    counter.sent(s.submit)
    start = time.monotonic()
    try:
        send = _send_sync if s.submit == "sync" else _send_async
        answer, code = await send(client, s.base_url_of(entry), body, s)
    except (TimeoutError, aiohttp.ClientError) as exc:
        counter.failed(f"http:{type(exc).__name__}")
        return
    if answer is None:
        counter.failed(code)
    else:
        counter.ok(time.monotonic() - start, answer)


async def _closed_producer(
    client: aiohttp.ClientSession, entries: list[TraceEntry], s: ProducerSettings, counter: _Counter
) -> None:
    for n, entry in enumerate(entries):
        await _one(client, entry, s, counter)
        if n + 1 < len(entries):  # no think time after the last answer
            await asyncio.sleep(entry.wait_s * s.time_scale)


async def _open_loop(
    client: aiohttp.ClientSession, trace: Trace, s: ProducerSettings, counter: _Counter
) -> None:
    start = time.monotonic()
    running: set[asyncio.Task[None]] = set()  # hard references until each task is done
    for entry in trace.entries:
        delay = start + entry.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(client, entry, s, counter))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)


async def run_producers(
    trace: Trace,
    settings: ProducerSettings,
    progress_label: str | None = None,
) -> ProducerReport:
    """Replay `trace` against the dispatcher; returns the producers' own counts.

    `progress_label` shows a rich progress bar with that description; None: silent.
    """
    progress: Any = None
    task_id: Any = None
    if progress_label is not None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        task_id = progress.add_task(progress_label, total=len(trace.entries))

    def on_done() -> None:
        if progress is not None:
            progress.advance(task_id)

    counter = _Counter(on_done)
    connector = aiohttp.TCPConnector(limit=settings.max_connections)
    timeout = aiohttp.ClientTimeout(total=settings.request_timeout_s)
    start = time.monotonic()
    if progress is not None:
        progress.start()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            if trace.config.mode == "closed":
                await asyncio.gather(
                    *(
                        _closed_producer(client, trace.for_producer(p), settings, counter)
                        for p in range(trace.config.producers)
                    )
                )
            else:
                await _open_loop(client, trace, settings, counter)
    finally:
        if progress is not None:
            progress.stop()
    counter.report.duration_s = time.monotonic() - start
    return counter.report
