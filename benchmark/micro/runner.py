"""The dispatchers under test (child processes, or one already running) and the plan of
HTTP measurements against them.

With `--dispatchers N` > 1 the children run active-active on one shared task store (a
throwaway PostgreSQL server, smartrouting/postgres.py), every no-op worker links to each, and
the callers go to them in turn (`RoundRobin`): the dispatchers' throughput side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx

from benchmark.micro.clients import RawClient, RoundRobin
from benchmark.micro.load import LatencyResult, run_load
from benchmark.micro.peers import noop_worker
from smartrouting.postgres import PostgresServer, start_postgres
from smartrouting.processes import ChildProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def start_dispatcher(
    port: int, policy: str, log_path: Path, store_url: str | None = None
) -> ChildProcess:
    """`python -m dispatcher` on 127.0.0.1:`port`, its output in `log_path`; with
    `store_url`, on that shared task store under the id `micro-<port>`."""
    cmd = [sys.executable, "-m", "dispatcher", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--policy", policy, "--log-level", "warning"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if store_url:
        cmd += ["--dispatcher-id", f"micro-{port}"]
        env["DISPATCHER_STORE_URL"] = store_url
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
    """The HTTP measurements against `--dispatcher-url`, or against `--dispatchers` children
    started (and stopped) for them."""
    if args.dispatcher_url:
        wait_health(args.dispatcher_url)
        return asyncio.run(http_benchmark(args, [args.dispatcher_url], ()))
    count = getattr(args, "dispatchers", 1)
    postgres: PostgresServer | None = start_postgres() if count > 1 else None
    try:
        with contextlib.ExitStack() as stack:
            children: list[ChildProcess] = []
            base_urls = []
            for _ in range(count):
                port = free_port()
                log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dispatcher-micro-{port}.log"
                store_url = postgres.url() if postgres else None
                child = start_dispatcher(port, args.policy, log_path, store_url)
                children.append(stack.enter_context(child))
                base_urls.append(f"http://127.0.0.1:{port}")
            for base_url, child in zip(base_urls, children, strict=True):
                wait_health(base_url, child)
            pids = [child.pid for child in children]
            return asyncio.run(http_benchmark(args, base_urls, pids))
    finally:
        if postgres is not None:
            postgres.stop()


async def http_benchmark(
    args: argparse.Namespace, base_urls: list[str], server_pids: list[int] | tuple[()]
) -> list[LatencyResult]:
    """Connect no-op workers (each to every dispatcher), warm up, then measure /health and
    /run-task: both clients at concurrency 1 and `--concurrency`, then the raw one paced at
    each `--paced-rate`; each client goes to the dispatchers in turn."""
    labels = [f"label-{i}" for i in range(args.labels)]
    worker_jobs = [
        asyncio.create_task(
            noop_worker(
                url.replace("http://", "ws://") + "/worker-listen", f"noop-{i}", labels, args.slots
            )
        )
        for url in base_urls
        for i in range(args.workers)
    ]
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    results: list[LatencyResult] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            own = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, limits=limits, timeout=60)
                )
                for url in base_urls
            ]
            for each in own:
                for _ in range(200):
                    workers = (await each.get("/workers")).json()["workers"]
                    if len(workers) == args.workers:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError("no-op workers did not connect")
            client = RoundRobin(own)
            await run_load(client, "/run-task", args.concurrency, args.warmup, labels)
            raws = [RawClient(url) for url in base_urls]
            raw = RoundRobin(raws)
            try:
                for concurrency in (1, args.concurrency):
                    n = args.requests if concurrency > 1 else max(200, args.requests // 10)
                    for caller in (client, raw):
                        for endpoint in ("/health", "/run-task"):
                            results.append(
                                await run_load(
                                    caller, endpoint, concurrency, n, labels, server_pids
                                )
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
                                server_pids,
                                rate=rate,
                            )
                        )
            finally:
                for each_raw in raws:
                    await each_raw.aclose()
    finally:
        for job in worker_jobs:
            job.cancel()
        for job in worker_jobs:
            with contextlib.suppress(BaseException):
                await job
    return results
