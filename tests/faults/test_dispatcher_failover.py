"""No single point of failure: SIGKILL one of three dispatchers during a run of 1,000
asynchronous and 1,000 synchronous tasks (docs/architecture.md §3.5.1, §6.6;
docs/reliability.md "Several dispatchers").

Everything is real: three `python -m dispatcher` processes sharing one PostgreSQL task store
(the session's server, tests/postgres.py), four `python -m worker` processes (SIMULATED
engine, fast costs) each linked to all three, and the callers' client
(`smartrouting.client.AsyncClient`) given all three URLs, so a call the dead dispatcher
cannot answer is retried on a survivor with the same task id.

What the run must show: **0 lost** (every synchronous call returns a completed answer, every
asynchronous task is read as completed from a survivor), the tasks executed more than once
(counted from the workers' own log lines, one per run, by task id and worker; printed,
bounded by what was in flight on the killed dispatcher, and never twice on one worker), and
how long the survivors take over: until they have claimed every async task the victim held
(read from the store), and until every task the kill caught is answered. The figures are
printed as one `FAULT FIGURES` JSON line (tests/faults/cluster.py; `recovery_s` is
[claimed, answered]).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from smartrouting.client import AsyncClient, RetryPolicy, TaskResult
from tests.faults.cluster import Figures
from tests.postgres import PostgresServer
from tests.support import ChildProcess, ProcessFactory, free_port, scaled, wait_for_http, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(180)]

DISPATCHERS = 3
WORKERS = 4
SLOTS = 2
ASYNC_TASKS = 1000
SYNC_TASKS = 1000
#: Calls in flight at once, of each kind.
CONCURRENCY = 16
LABELS = [f"m{n}" for n in range(6)]
#: Short, so that the survivors claim the dead dispatcher's tasks within seconds.
LEASE_S = 2.0
#: Run time of an async task: longer than a sync one's, so that queues form (1,000 tasks
#: take at least 10 s of the workers' 8 slots).
ASYNC_RUN_MS = 80
#: The async tasks are sent once this share of the sync calls is answered (async tasks take
#: the slots while their queue lasts: sent from the start, they would be done before the sync
#: calls were under way)...
ASYNC_FROM = 0.25
#: ...and the dispatcher is killed once this share of the async tasks is accepted: both kinds
#: are then in flight, and the victim holds a queue of async tasks.
KILL_AT = 0.35
VICTIM = 0
#: Fast simulated costs: a run of ~3 ms, a load of ~30 ms (capacity 2, six labels: misses).
SIMULATED = (
    "--sim-run-ms", "3", "--sim-run-stddev-ms", "1",
    "--sim-load-ms", "30", "--sim-load-stddev-ms", "10",
)  # fmt: skip


@dataclass
class Call:
    """One task of the run, as its caller saw it."""

    task_id: str
    kind: str  # "sync" or "async"
    #: The dispatcher the call went to first.
    first: int
    started: float = 0.0
    ended: float | None = None
    answer: TaskResult | None = None
    error: str | None = None


@dataclass
class Run:
    """The calls of one run and the kill in the middle of it."""

    calls: list[Call] = field(default_factory=list)
    accepted_async: int = 0
    answered_sync: int = 0
    async_due: asyncio.Event = field(default_factory=asyncio.Event)
    kill_due: asyncio.Event = field(default_factory=asyncio.Event)
    killed_at: float | None = None
    killed_unix: float = 0.0
    #: From the kill until no task is held by the victim any more.
    claimed_s: float = 0.0

    def accepted(self) -> None:
        self.accepted_async += 1
        if self.accepted_async >= KILL_AT * ASYNC_TASKS:
            self.kill_due.set()

    def done(self, call: Call) -> None:
        call.ended = time.monotonic()
        self.answered_sync += call.kind == "sync"
        if self.answered_sync >= ASYNC_FROM * SYNC_TASKS:
            self.async_due.set()


def start_dispatchers(processes: ProcessFactory, store_url: str) -> list[tuple[int, ChildProcess]]:
    """Three dispatchers on one store, started together (then each waited for)."""
    started = []
    for n in range(DISPATCHERS):
        port = free_port()
        child = processes.python_module(
            f"dispatcher-{n}",
            "dispatcher",
            *("--host", "127.0.0.1", "--port", str(port), "--dispatcher-id", f"d{n}"),
            *("--lease-s", str(LEASE_S), "--log-level", "warning", "--task-timeout-s", "120"),
            *("--ws-ping-interval-s", "1", "--ws-ping-timeout-s", "2"),
            env={"DISPATCHER_STORE_URL": store_url},
        )
        started.append((port, child))
    for port, _ in started:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=60)
    return started


def start_workers(processes: ProcessFactory, tmp: Path, ports: list[int]) -> list[ChildProcess]:
    """Four simulated workers, each linked to every dispatcher, logging every task run."""
    links = [a for p in ports for a in ("--dispatcher-url", f"ws://127.0.0.1:{p}/worker-listen")]
    workers = []
    for n in range(WORKERS):
        args = [*links, "--worker-id", f"w{n}", "--engine", "simulated", "--seed", str(n)]
        args += ["--capacity", "2", "--slots", str(SLOTS), *SIMULATED]
        args += ["--state-dir", str(tmp / f"w{n}"), "--model-repository", str(tmp / "models")]
        args += ["--ping-interval-s", "1", "--reconnect-max-backoff-s", "0.5"]
        # DEBUG + JSON: one `task_finished` line per task run, with its id (the count below).
        args += ["--log-level", "debug", "--log-format", "json", "--shutdown-timeout-s", "5"]
        workers.append(processes.python_module(f"w{n}", "worker", *args))
    return workers


def executions(workers: list[ChildProcess]) -> dict[str, list[str]]:
    """The workers that ran each task id, once per run, from their `task_finished` lines (hit
    or miss: it ran)."""
    runs: dict[str, list[str]] = {}
    for n, worker in enumerate(workers):
        for line in worker.log().splitlines():
            if '"task_finished"' not in line:
                continue
            record = json.loads(line)
            if record.get("event") == "task_finished" and record.get("outcome") in ("hit", "miss"):
                runs.setdefault(record["task_id"], []).append(f"w{n}")
    return runs


def shared(workers: list[ChildProcess]) -> int:
    """Arrivals of a task id that ran or ran here already, answered with that run's result
    instead of a second run (the workers' `task_shared` lines, worker/runtime.py)."""
    return sum(worker.log().count('"task_shared"') for worker in workers)


def held_by(store_url: str, holder: str) -> list[str]:
    """The unfinished tasks `holder` holds in the store."""
    with psycopg.connect(store_url) as db:
        rows = db.execute(
            "SELECT task_id FROM tasks WHERE holder = %s AND finished_unix IS NULL", (holder,)
        ).fetchall()
    return [row[0] for row in rows]


def finished_at(store_url: str, task_ids: list[str]) -> list[float]:
    """When each of `task_ids` finished (unix time, as the store recorded it)."""
    with psycopg.connect(store_url) as db:
        rows = db.execute(
            "SELECT finished_unix FROM tasks WHERE task_id = ANY(%s)", (task_ids,)
        ).fetchall()
    return [float(row[0]) for row in rows if row[0] is not None]


def connected(port: int) -> set[str]:
    try:
        return set(httpx.get(f"http://127.0.0.1:{port}/workers", timeout=2).json()["workers"])
    except (httpx.HTTPError, ValueError, KeyError):
        return set()


async def drive(clients: list[AsyncClient], run: Run, kill: Callable[[], None]) -> None:
    """The sync and async callers together (the async ones from `ASYNC_FROM` of the sync
    calls on); `kill` once `KILL_AT` of the async tasks are accepted.

    Call i goes first to dispatcher i % 3 (each client lists the URLs from its own first).
    Sync calls: `CONCURRENCY` at a time. Async tasks are submitted `CONCURRENCY` at a time and
    waited for `CONCURRENCY` at a time, apart: they are accepted faster than they run
    (`ASYNC_RUN_MS` each), so every dispatcher holds a queue of them when one is killed.
    """
    sync_gate, submit_gate, wait_gate = (asyncio.Semaphore(CONCURRENCY) for _ in range(3))

    async def sync_call(index: int) -> None:
        call = Call(f"s-{index}-{uuid.uuid4().hex[:6]}", "sync", index % DISPATCHERS)
        label = LABELS[index % len(LABELS)]
        async with sync_gate:
            run.calls.append(call)
            call.started = time.monotonic()
            try:
                call.answer = await clients[call.first].run_task(
                    "sample_task", label, task_id=call.task_id
                )
            except Exception as exc:  # any failure is a lost task, reported by the test
                call.error = repr(exc)
            run.done(call)

    async def async_call(index: int) -> None:
        call = Call(f"a-{index}-{uuid.uuid4().hex[:6]}", "async", index % DISPATCHERS)
        label = LABELS[(index * 5) % len(LABELS)]
        client = clients[call.first]
        await run.async_due.wait()
        try:
            async with submit_gate:
                run.calls.append(call)
                call.started = time.monotonic()
                await client.submit(
                    "sample_task", label, {"run_ms": ASYNC_RUN_MS}, task_id=call.task_id
                )
                run.accepted()
            async with wait_gate:
                call.answer = await client.result(call.task_id, timeout_s=scaled(90))
        except Exception as exc:
            call.error = repr(exc)
        run.done(call)

    async def killer() -> None:
        await run.kill_due.wait()
        await asyncio.to_thread(kill)

    await asyncio.gather(
        *(sync_call(i) for i in range(SYNC_TASKS)),
        *(async_call(i) for i in range(ASYNC_TASKS)),
        killer(),
    )


def test_sigkill_of_one_of_three_dispatchers_loses_no_task(
    processes: ProcessFactory, postgres: PostgresServer, tmp_path: Path
) -> None:
    """1,000 async + 1,000 sync tasks over three dispatchers; one is SIGKILLed a third of the
    way through. Nothing is lost, few tasks run twice, and the survivors take over within
    the lease and a claim period."""
    begun = time.monotonic()
    store_url = postgres.create_database(f"failover_{uuid.uuid4().hex[:8]}")
    dispatchers = start_dispatchers(processes, store_url)
    ports = [port for port, _ in dispatchers]
    workers = start_workers(processes, tmp_path, ports)
    names = {f"w{n}" for n in range(WORKERS)}
    wait_until(lambda: all(names <= connected(p) for p in ports), 60, "every worker on every one")
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    retry = RetryPolicy(attempts=100, budget_s=scaled(60), backoff_s=0.05, max_backoff_s=0.5)
    victim = dispatchers[VICTIM][1]
    run = Run()
    orphans: list[str] = []

    def kill() -> None:
        victim.signal(signal.SIGKILL)
        run.killed_at, killed_unix = time.monotonic(), time.time()
        victim.wait(scaled(10))
        orphans.extend(held_by(store_url, f"d{VICTIM}"))
        run.killed_unix = killed_unix
        # The survivors claim every one once the victim's lease ends (polling the store: it
        # is another process's doing).
        wait_until(lambda: not held_by(store_url, f"d{VICTIM}"), 30, "claims", interval=0.05)
        run.claimed_s = time.monotonic() - run.killed_at

    async def main() -> dict[str, dict[str, object]]:
        clients = [
            AsyncClient(urls[n:] + urls[:n], retry=retry, task_timeout_s=120)
            for n in range(DISPATCHERS)
        ]
        try:
            await drive(clients, run, kill)
        finally:
            for client in clients:
                await client.close()
        # Every async task, read back from a survivor: the store has it completed.
        survivor = urls[(VICTIM + 1) % DISPATCHERS]
        async with httpx.AsyncClient(base_url=survivor, timeout=30) as http:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def read(task_id: str) -> tuple[str, dict[str, object]]:
                async with gate:
                    return task_id, (await http.get(f"/tasks/{task_id}")).json()

            ids = [c.task_id for c in run.calls if c.kind == "async"]
            return dict(await asyncio.gather(*(read(i) for i in ids)))

    loaded_at = time.monotonic()
    stored = asyncio.run(main())
    wall_s = time.monotonic() - loaded_at

    assert run.killed_at is not None
    failed = {c.task_id: c.error for c in run.calls if c.answer is None}
    not_completed = {
        i: b.get("status") for i, b in stored.items() if b.get("status") != "completed"
    }
    runs = executions(workers)
    every_id = {c.task_id for c in run.calls}
    never_ran = every_id - set(runs)
    duplicates = {task_id: ran for task_id, ran in runs.items() if len(ran) > 1}
    # Caught by the kill: the async tasks the victim held unfinished (the survivors claim them
    # once its lease ends), and the sync calls it had not answered (retried on a survivor).
    caught_sync = [
        c for c in run.calls if c.kind == "sync" and c.first == VICTIM
        and c.started < run.killed_at < (c.ended or 0.0)
    ]  # fmt: skip
    caught = {c.task_id for c in caught_sync} | set(orphans)
    # Until the survivors have served all traffic: the last caught task finished (async: as
    # the dispatcher that finished it wrote in the store; sync: answered to its caller).
    drained_s = max(
        [(c.ended or 0.0) - run.killed_at for c in caught_sync]
        + [finished - run.killed_unix for finished in finished_at(store_url, orphans)]
    )
    # New traffic meanwhile: sync calls sent after the kill (the first to the victim's URL
    # fail over at once: connection refused).
    after = sorted(
        (c.ended or 0.0) - c.started
        for c in run.calls
        if c.kind == "sync" and c.started > run.killed_at
    )
    redispatched = sum(
        int(httpx.get(f"{url}/stats", timeout=5).json().get("tasks_redispatched", 0))
        for url in urls[VICTIM + 1 :]
    )
    figures = Figures(
        scenario="sigkill one of 3 dispatchers (shared PostgreSQL store)",
        submitted=len(run.calls),
        completed=sum(1 for c in run.calls if c.answer is not None),
        failed_with_error=len(failed),
        lost=len(failed) + len(not_completed) + len(never_ran),
        duplicates_executed=sum(len(ran) - 1 for ran in duplicates.values()),
        redispatched=redispatched,
        faults_injected=1,
        recovery_s=[run.claimed_s, drained_s],
        wall_s=wall_s,
    )
    figures.report()
    print(
        f"caught by the kill: {len(orphans)} async tasks held by the victim, "
        f"{len(caught_sync)} sync calls in flight; all claimed after {run.claimed_s:.2f} s, "
        f"all answered after {drained_s:.2f} s; re-sends answered without a second run: "
        f"{shared(workers)}; duplicates (workers by id): {duplicates}; sync calls "
        f"sent after the kill: {len(after)}, latency p50 {after[len(after) // 2]:.3f} s, "
        f"max {after[-1]:.3f} s; "
        f"whole test {time.monotonic() - begun:.1f} s"
    )

    assert len(run.calls) == ASYNC_TASKS + SYNC_TASKS
    assert failed == {}, list(failed.items())[:5]
    assert not_completed == {}, list(not_completed.items())[:5]
    assert never_ran == set(), sorted(never_ran)[:5]
    assert all(c.answer is not None and c.answer.task_id == c.task_id for c in run.calls)
    # A claimed task goes back to the worker that had it (which answers the re-send from its
    # one run), so a second run is left to a sync retry whose first run was cut off before
    # its answer reached the store and that lands on another worker: rare (seen: 0 in 10
    # runs), so a small bound rather than 0.
    assert figures.duplicates_executed <= 2, duplicates
    assert set(duplicates) <= caught, duplicates
    # ...and never on the same worker twice: a worker answers a task id sent again with the
    # result of its one run (in progress, recent, or waiting for the dead link), so a second
    # run happens only where a survivor placed the task on another worker.
    assert all(len(set(ran)) == len(ran) for ran in duplicates.values()), duplicates
    # The survivors claim the victim's tasks once its lease ends (plus a claim period, and
    # the load of this machine), and work off their queues with them.
    assert orphans and run.claimed_s < scaled(LEASE_S + 3), run.claimed_s
    assert drained_s < scaled(30), drained_s
    assert all(p.alive() for _, p in dispatchers[VICTIM + 1 :]) and all(w.alive() for w in workers)
