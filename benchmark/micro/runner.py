"""The dispatcher under test (a child process, or one already running) and the plan of
HTTP measurements against it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx

from benchmark.micro.clients import RawClient
from benchmark.micro.load import LatencyResult, run_load
from benchmark.micro.peers import noop_worker
from smartrouting.processes import ChildProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def start_dispatcher(port: int, policy: str, log_path: Path) -> ChildProcess:
    """`python -m dispatcher` on 127.0.0.1:`port`, its output in `log_path`."""
    cmd = [sys.executable, "-m", "dispatcher", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--policy", policy, "--log-level", "warning"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return ChildProcess.spawn(cmd, log_path, name="dispatcher", env=env, cwd=ROOT)


def wait_health(base_url: str, child: ChildProcess | None = None, timeout: float = 30.0) -> None:
    """Poll `/health` (another process: nothing to await) until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"dispatcher exited with {child.returncode} ({child.log_path}):\n{child.tail(20)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"dispatcher at {base_url} did not become healthy")


def measure_http(args: argparse.Namespace) -> list[LatencyResult]:
    """The HTTP measurements against `--dispatcher-url`, or against a dispatcher child
    started (and stopped) for them."""
    if args.dispatcher_url:
        wait_health(args.dispatcher_url)
        return asyncio.run(http_benchmark(args, args.dispatcher_url, None))
    port = free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dispatcher-micro-{port}.log"
    with start_dispatcher(port, args.policy, log_path) as child:
        base_url = f"http://127.0.0.1:{port}"
        wait_health(base_url, child)
        return asyncio.run(http_benchmark(args, base_url, child.pid))


async def http_benchmark(
    args: argparse.Namespace, base_url: str, server_pid: int | None
) -> list[LatencyResult]:
    """Connect no-op workers, warm up, then measure /health and /run-task: both clients at
    concurrency 1 and `--concurrency`, then the raw one paced at each `--paced-rate`."""
    ws_url = base_url.replace("http://", "ws://") + "/worker-listen"
    labels = [f"label-{i}" for i in range(args.labels)]
    worker_jobs = [
        asyncio.create_task(noop_worker(ws_url, f"noop-{i}", labels, args.slots))
        for i in range(args.workers)
    ]
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    results: list[LatencyResult] = []
    try:
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
            for _ in range(200):
                workers = (await client.get("/workers")).json()["workers"]
                if len(workers) == args.workers:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("no-op workers did not connect")
            await run_load(client, "/run-task", args.concurrency, args.warmup, labels)
            raw = RawClient(base_url)
            try:
                for concurrency in (1, args.concurrency):
                    n = args.requests if concurrency > 1 else max(200, args.requests // 10)
                    for caller in (client, raw):
                        for endpoint in ("/health", "/run-task"):
                            results.append(
                                await run_load(caller, endpoint, concurrency, n, labels, server_pid)
                            )
                # Paced: the same callers offering a fixed rate below saturation.
                for rate in args.paced_rate:
                    for endpoint in ("/health", "/run-task"):
                        results.append(
                            await run_load(
                                raw,
                                endpoint,
                                args.concurrency,
                                args.requests,
                                labels,
                                server_pid,
                                rate=rate,
                            )
                        )
            finally:
                await raw.aclose()
    finally:
        for job in worker_jobs:
            job.cancel()
        for job in worker_jobs:
            with contextlib.suppress(BaseException):
                await job
    return results
