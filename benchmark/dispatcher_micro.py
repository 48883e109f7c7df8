"""Micro-benchmark of the dispatcher alone: no-op workers, many concurrent callers.

Measures (1) the latency the dispatcher adds to a task and its throughput, with a real
`python -m dispatcher` subprocess, `--workers` no-op protocol workers answering every Task at
once over real websockets, and `--concurrency` callers posting `/run-task` through
`httpx.AsyncClient`; the same callers hitting `/health` give the bare HTTP round trip, and
"added" is the difference; (2) the cost of one routing decision of the pure policy with 10
and with 1,000 workers in the registry (timeit).

Run: `python -m benchmark.dispatcher_micro [--json-out FILE]` or
`python -m benchmark dispatcher-micro ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import timeit
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets

from dispatcher.estimates import LabelEstimates
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.routing import RoutedPolicy
from dispatcher.tasks import TaskQueue, TaskRecord
from proto import frames
from proto import smartrouting_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


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
    #: CPU time the dispatcher process spent per request (None when it is not our child).
    server_cpu_ms_per_request: float | None = None


@dataclass
class DecisionResult:
    """Mean cost of one policy decision with `workers` workers in the registry."""

    workers: int
    place_hit_us: float
    place_load_us: float
    next_for_us: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# ---- no-op workers --------------------------------------------------------------------


async def noop_worker(url: str, worker_id: str, labels: list[str], slots: int) -> None:
    """A worker answering each Task at once (a hit when it holds the label)."""
    async with websockets.connect(url, additional_headers={"Worker-Id": worker_id}) as ws:
        hello = pb.Hello(
            protocol_version=frames.PROTOCOL_VERSION,
            worker_id=worker_id,
            capacity=len(labels),
            slots=slots,
            engine="noop",
            labels_loaded=labels,
            task_types=["sample_task"],
        )
        await ws.send(frames.encode(pb.WorkerMessage(hello=hello)))
        loaded = list(labels)
        async for data in ws:
            message = frames.decode_dispatcher_message(data)
            if message.WhichOneof("body") != "task":
                continue
            task = message.task
            result = pb.TaskResult(
                task_id=task.task_id,
                ok=True,
                result_json="{}",
                label=task.label,
                label_miss=task.label not in loaded,
                labels_loaded=loaded,
                attempt=task.attempt,
            )
            await ws.send(frames.encode(pb.WorkerMessage(task_result=result)))


# ---- HTTP load ------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawClient:
    """A bare keep-alive HTTP/1.1 client (one connection per caller), to measure the dispatcher
    without httpx's own per-request cost; same requests as the httpx callers."""

    def __init__(self, base_url: str) -> None:
        host_port = base_url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self._free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + body
        while True:
            # A pooled connection may have been closed by the server's keep-alive timeout.
            reused = bool(self._free)
            conn = (
                self._free.pop() if reused else await asyncio.open_connection(self.host, self.port)
            )
            reader, writer = conn
            writer.write(data)
            status_line = await reader.readline()
            if status_line or not reused:
                break
            writer.close()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self._free.append(conn)
        return int(status_line.split()[1])

    async def get(self, path: str) -> Any:
        return _Status(await self.request("GET", path))

    async def post(self, path: str, json: Any) -> Any:
        import json as _json

        return _Status(await self.request("POST", path, _json.dumps(json).encode()))

    async def aclose(self) -> None:
        for _, writer in self._free:
            writer.close()


@dataclass
class _Status:
    status_code: int


async def _load(
    client: Any,
    endpoint: str,
    concurrency: int,
    requests: int,
    labels: list[str],
    server_pid: int | None = None,
    rate: float | None = None,
) -> LatencyResult:
    """`requests` calls from `concurrency` callers, back to back, or paced so that all
    callers together offer `rate` requests per second (below saturation, the latency then
    shows the cost per request rather than queueing behind the other callers)."""
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

    cpu_before = process_cpu_s(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu_ms = None
    if server_pid:
        cpu_ms = round((process_cpu_s(server_pid) - cpu_before) * 1000 / max(1, requests), 3)
    return LatencyResult(
        endpoint=endpoint,
        client=type(client).__name__ + (f"@{rate:g}/s" if rate else ""),
        concurrency=concurrency,
        requests=len(latencies),
        seconds=round(seconds, 3),
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.50), 3),
        p90_ms=round(_percentile(latencies, 0.90), 3),
        p99_ms=round(_percentile(latencies, 0.99), 3),
        failed=failed,
        server_cpu_ms_per_request=cpu_ms,
    )


async def http_benchmark(
    args: argparse.Namespace, base_url: str, server_pid: int | None
) -> list[LatencyResult]:
    """Connect no-op workers, warm up, then measure /health and /run-task."""
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
            await _load(client, "/run-task", args.concurrency, args.warmup, labels)
            raw = RawClient(base_url)
            try:
                for concurrency in (1, args.concurrency):
                    n = args.requests if concurrency > 1 else max(200, args.requests // 10)
                    for caller in (client, raw):
                        for endpoint in ("/health", "/run-task"):
                            results.append(
                                await _load(caller, endpoint, concurrency, n, labels, server_pid)
                            )
                # Paced: the same callers offering a fixed rate below saturation.
                for rate in args.paced_rate:
                    for endpoint in ("/health", "/run-task"):
                        results.append(
                            await _load(
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


# ---- decision cost --------------------------------------------------------------------


def realistic_state(workers: int, capacity: int = 2, seed: int = 0) -> RoutedPolicy:
    """A registry of `workers` workers (capacity labels each, half busy), a short queue."""
    rng = random.Random(seed)
    registry = Registry()
    n_labels = max(4, workers // 2)
    for i in range(workers):
        wid = f"w{i}"
        registry.add(WorkerRecord(wid, capacity=capacity, slots=1))
        picks = rng.sample(range(n_labels), capacity)
        for j, pick in enumerate(picks):
            registry.assign(wid, f"seed-{i}-{j}", f"l{pick}", now=rng.random())
            registry.finish(wid, f"seed-{i}-{j}")
        if i % 2:
            registry.assign(wid, f"busy-{i}", f"l{picks[0]}", now=1.0)
    # Five queued tasks waiting for busy holders, none of them held by the first idle worker:
    # the freed worker's slowest path (no hit, every waiting label examined, nothing taken).
    idle = registry.idle.first()
    assert idle is not None
    mine = set(registry.get(idle).labels)
    waiting = [
        lbl
        for i in range(1, workers, 2)
        for lbl in registry.get(f"w{i}").in_flight.values()
        if lbl not in mine
    ]
    queue = TaskQueue()
    for k, waiting_label in enumerate(waiting[:5]):
        queue.push(_task(f"q{k}", waiting_label, enqueued_at=1.5 + k * 0.01))
    return RoutedPolicy(registry, queue, LabelEstimates())


def _task(task_id: str, label: str, enqueued_at: float = 10.0) -> TaskRecord:
    return TaskRecord(task_id, "t", label, "{}", enqueued_at, 1e9, 0, enqueued_at=enqueued_at)


def decision_cost(workers: int, iterations: int) -> DecisionResult:
    """Best-of-5 mean microseconds of place (hit and evict-to-load paths) and next_for."""
    policy = realistic_state(workers)
    registry = policy.registry
    idle = registry.idle.first()
    assert idle is not None
    held = next(iter(registry.get(idle).labels))
    hit_task = _task("hit", held)
    new_task = _task("new", "never-seen")
    now = 2.0

    def best(stmt: Any) -> float:
        runs = timeit.repeat(stmt, number=iterations, repeat=5)
        return round(min(runs) / iterations * 1e6, 3)

    return DecisionResult(
        workers=workers,
        place_hit_us=best(lambda: policy.place(hit_task, now)),
        place_load_us=best(lambda: policy.place(new_task, now)),
        next_for_us=best(lambda: policy.next_for(idle, now)),
    )


# ---- driver ---------------------------------------------------------------------------


def _start_dispatcher(port: int, policy: str, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dispatcher", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--policy", policy, "--log-level", "warning"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_health(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"dispatcher at {base_url} did not become healthy")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark dispatcher-micro", description=__doc__)
    p.add_argument("--dispatcher-url", help="measure this running dispatcher, start none")
    p.add_argument("--policy", choices=("routed", "random"), default="routed")
    p.add_argument("--workers", type=int, default=4, help="no-op workers")
    p.add_argument("--slots", type=int, default=16, help="task slots per no-op worker")
    p.add_argument("--labels", type=int, default=4, help="labels, uniform over tasks")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent callers")
    p.add_argument("--requests", type=int, default=4000, help="requests per measurement")
    p.add_argument(
        "--paced-rate",
        type=float,
        action="append",
        default=None,
        help="also measure the raw callers paced to this total rate (req/s); repeatable "
        "(default: 500 and 1000)",
    )
    p.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    p.add_argument("--decision-iterations", type=int, default=20000)
    p.add_argument("--skip-http", action="store_true", help="only the decision cost")
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    return p


def _table(rows: Sequence[Sequence[object]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark, print tables, write JSON if asked; 0 on success."""
    args = build_parser().parse_args(argv)
    if args.paced_rate is None:
        args.paced_rate = [500.0, 1000.0]
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if not args.skip_http:
        proc = None
        base_url = args.dispatcher_url
        try:
            if base_url is None:
                port = _free_port()
                base_url = f"http://127.0.0.1:{port}"
                log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dispatcher-micro-{port}.log"
                proc = _start_dispatcher(port, args.policy, log_path)
            _wait_health(base_url)
            http = asyncio.run(http_benchmark(args, base_url, proc.pid if proc else None))
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        report["http"] = [asdict(r) for r in http]
        added: dict[str, dict[str, float]] = {}
        for r in http:
            if r.endpoint != "/run-task":
                continue
            health = next(
                h
                for h in http
                if (h.endpoint, h.client, h.concurrency) == ("/health", r.client, r.concurrency)
            )
            added[f"{r.client} x{r.concurrency}"] = {
                "p50_ms": round(r.p50_ms - health.p50_ms, 3),
                "p99_ms": round(r.p99_ms - health.p99_ms, 3),
                "tasks_per_s": r.per_second,
            }
        report["added_latency"] = added
        columns = ["endpoint", "client", "conc", "n", "req/s", "p50 ms", "p90 ms", "p99 ms"]
        columns += ["failed", "srv cpu ms/req"]
        rows = [
            [r.endpoint, r.client, r.concurrency, r.requests, r.per_second, r.p50_ms, r.p90_ms]
            + [r.p99_ms, r.failed, r.server_cpu_ms_per_request]
            for r in http
        ]
        print(_table(rows, columns))
        print()
        print(
            _table(
                [[c, v["p50_ms"], v["p99_ms"], v["tasks_per_s"]] for c, v in added.items()],
                ["client x callers", "added p50 ms", "added p99 ms", "tasks/s"],
            )
        )
        print()
    # 10,000 as well, to show the cost stays flat past the target's 1,000.
    decisions = [decision_cost(n, args.decision_iterations) for n in (10, 1000, 10_000)]
    small, large = decisions[0], decisions[1]
    ratios = {
        "place_hit": round(large.place_hit_us / small.place_hit_us, 2),
        "place_load": round(large.place_load_us / small.place_load_us, 2),
        "next_for": round(large.next_for_us / small.next_for_us, 2),
    }
    report["decisions"] = [asdict(d) for d in decisions]
    report["decision_cost_ratio_1000_vs_10"] = ratios
    print(
        _table(
            [[d.workers, d.place_hit_us, d.place_load_us, d.next_for_us] for d in decisions]
            + [["1000/10", ratios["place_hit"], ratios["place_load"], ratios["next_for"]]],
            ["workers", "place hit us", "place load us", "next_for us"],
        )
    )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
