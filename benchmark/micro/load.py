"""Concurrent callers of one endpoint, back to back or paced, and what they measure."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LatencyResult:
    """Client-side latency of one endpoint at a given concurrency."""

    endpoint: str
    client: str
    concurrency: int
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int
    #: CPU time the dispatcher processes spent per request (None when they are not our
    #: children).
    server_cpu_ms_per_request: float | None = None


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of `values`; 0 when there are none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_load(
    client: Any,
    endpoint: str,
    concurrency: int,
    requests: int,
    labels: list[str],
    server_pids: Sequence[int] = (),
    rate: float | None = None,
) -> LatencyResult:
    """`requests` calls from `concurrency` callers, back to back, or paced so that all
    callers together offer `rate` requests per second (below saturation, the latency then
    shows the cost per request rather than queueing behind the other callers).

    `client` is an `httpx.AsyncClient`, a `RawClient` or a `RoundRobin` of either; `/health`
    is a bare GET, anything else a `/run-task` POST of a sample task on a random label.
    `server_pids`: the dispatcher processes whose CPU time is counted (all of them added).
    """
    latencies: list[float] = []
    failed = 0
    remaining = requests
    rng = random.Random(1)
    interval = concurrency / rate if rate else 0.0

    async def caller(index: int) -> None:
        nonlocal remaining, failed
        # Callers start spread over one interval so the offered load is smooth.
        next_at = time.perf_counter() + interval * index / concurrency
        while remaining > 0:
            remaining -= 1
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
            start = time.perf_counter()
            if endpoint == "/health":
                answer = await client.get("/health")
            else:
                body = {"task_type": "sample_task", "label": rng.choice(labels)}
                answer = await client.post("/run-task", json=body)
            latencies.append((time.perf_counter() - start) * 1000)
            if answer.status_code != 200:
                failed += 1

    cpu_before = sum(process_cpu_s(pid) for pid in server_pids)
    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu_ms = None
    if server_pids:
        cpu_s = sum(process_cpu_s(pid) for pid in server_pids) - cpu_before
        cpu_ms = round(cpu_s * 1000 / max(1, requests), 3)
    return LatencyResult(
        endpoint=endpoint,
        client=getattr(client, "name", type(client).__name__) + (f"@{rate:g}/s" if rate else ""),
        concurrency=concurrency,
        requests=len(latencies),
        seconds=round(seconds, 3),
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(percentile(latencies, 0.50), 3),
        p90_ms=round(percentile(latencies, 0.90), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        failed=failed,
        server_cpu_ms_per_request=cpu_ms,
    )
