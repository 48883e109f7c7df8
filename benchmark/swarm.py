"""A swarm of SIMULATED workers in one process, for scale runs only.

Two hundred `python -m worker` processes would swamp a small machine, so a scale
run can start `python -m benchmark swarm --workers 200 ...` instead: one asyncio
process holding N real `worker.runtime.Worker` objects, each with the simulated
engine (worker/engines/simulated.py), its own `ModelManager` and its own
`DispatcherConnection`s (one websocket per dispatcher; `--dispatcher-url` repeats).
Only the process and the event loop are shared, so a scale run measures the real
worker protocol, cache and shutdown, not a look-alike.

Each worker gets the configuration a `python -m worker --engine simulated` child of
`benchmark.cluster.LocalCluster` would get (same ids `<prefix><i>`, same seed
`seed * 1000 + i`), so a swarm and a cluster of processes draw the same costs. The
swarm owns the one SIGTERM/SIGINT handler (its CLI sets `stop`); on `stop` every
worker runs its own shutdown sequence (Goodbye, running tasks finish, websocket
closed with 1001), all at once, bounded by `shutdown_timeout_s`.

Log lines of the workers are prefixed with their id (`[w-17] ...`): 200 workers
share one log.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from worker.config import Config
from worker.engines import simulated
from worker.runtime import Worker, WorkerState

log = logging.getLogger("benchmark.swarm")

#: The simulated engine's measured costs (worker/engines/simulated.py), by `Config` field.
#: The CLI's `swarm` flags default to these.
FALLBACK_COSTS = {
    "sim_load_ms": simulated.DEFAULT_LOAD_MS,
    "sim_load_stddev_ms": simulated.DEFAULT_LOAD_STDDEV_MS,
    "sim_run_ms": simulated.DEFAULT_RUN_MS,
    "sim_run_stddev_ms": simulated.DEFAULT_RUN_STDDEV_MS,
}

#: Extra time the whole swarm gets on top of each worker's own shutdown deadline (its
#: flush and close are bounded separately) before what is left is cancelled.
_SHUTDOWN_GRACE_S = 5.0

# The id of the worker whose task is logging; asyncio copies it into every task the
# worker starts (connection, sender, task jobs), so no worker code has to pass it on.
_worker_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "swarm_worker_id", default=None
)


def default_costs() -> dict[str, float]:
    """The worker's simulated-engine costs, by `Config` field (a fresh dict)."""
    return dict(FALLBACK_COSTS)


@dataclass
class SwarmConfig:
    """Settings shared by every simulated worker of the swarm."""

    #: One dispatcher's /worker-listen URL, or several: every worker links to each.
    dispatcher_url: str | tuple[str, ...]
    workers: int
    capacity: int = 2
    slots: int = 1
    worker_prefix: str = "w-"
    time_scale: float = 1.0
    seed: int = 1
    costs: dict[str, float] = field(default_factory=default_costs)
    #: Each worker's graceful-shutdown deadline (running tasks, then unloads).
    shutdown_timeout_s: float = 10.0
    worker_token: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.costs) - set(FALLBACK_COSTS)
        if unknown:
            raise ValueError(f"unknown simulated costs {sorted(unknown)}")
        if self.workers < 1:
            raise ValueError(f"a swarm needs at least one worker, got {self.workers}")

    @property
    def dispatcher_urls(self) -> tuple[str, ...]:
        """Every dispatcher URL, as a tuple."""
        url = self.dispatcher_url
        return (url,) if isinstance(url, str) else tuple(url)

    def worker_config(self, index: int) -> Config:
        """The configuration of worker `index`: what LocalCluster gives a worker process."""
        return Config(
            dispatcher_url=self.dispatcher_urls,
            worker_id=f"{self.worker_prefix}{index}",
            capacity=self.capacity,
            slots=self.slots,
            engine="simulated",
            time_scale=self.time_scale,
            seed=self.seed * 1000 + index,
            shutdown_timeout_s=self.shutdown_timeout_s,
            worker_token=self.worker_token,
            sim_load_ms=self.costs.get("sim_load_ms"),
            sim_load_stddev_ms=self.costs.get("sim_load_stddev_ms"),
            sim_run_ms=self.costs.get("sim_run_ms"),
            sim_run_stddev_ms=self.costs.get("sim_run_stddev_ms"),
        )


class Swarm:
    """N real `Worker`s (simulated engine) sharing one event loop; `run(stop)` serves."""

    def __init__(self, config: SwarmConfig) -> None:
        self.config = config
        self.workers = [Worker(config.worker_config(i)) for i in range(config.workers)]

    @property
    def tasks_run(self) -> int:
        """Tasks every worker has run and answered so far."""
        return sum(w.tasks_run for w in self.workers)

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until `stop` is set, then shut every worker down; the exit code.

        0 after a requested stop where every worker shut down cleanly; 1 when a worker
        ended by itself (e.g. an invalid dispatcher URL) or failed to stop in time.
        """
        runs: dict[asyncio.Task[int], Worker] = {}
        with _tagged_logs():
            for worker in self.workers:
                context = contextvars.copy_context()
                context.run(_worker_id.set, worker.config.worker_id)
                job = asyncio.create_task(
                    worker.run(), name=f"worker-{worker.config.worker_id}", context=context
                )
                runs[job] = worker
            try:
                return await self._serve(runs, stop)
            finally:
                # Only left running when the swarm itself was cancelled: take them along.
                for job in runs:
                    job.cancel()
                await asyncio.gather(*runs, return_exceptions=True)

    async def _serve(self, runs: dict[asyncio.Task[int], Worker], stop: asyncio.Event) -> int:
        stopper = asyncio.create_task(stop.wait(), name="swarm-stop")
        try:
            done, _ = await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        requested = stopper in done
        if not requested:
            log.error("a worker ended on its own; stopping the swarm")
        for worker in self.workers:
            worker.request_stop()
        bound = self.config.shutdown_timeout_s + _SHUTDOWN_GRACE_S
        _, late = await asyncio.wait(runs, timeout=bound)
        for job in late:
            log.error("%s did not stop within %.0f s; cancelling it", job.get_name(), bound)
            job.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        failed = [runs[job].config.worker_id for job in runs if _exit_code(job) != 0]
        if failed:
            log.error("%d worker(s) failed: %s", len(failed), ", ".join(failed[:10]))
        stopped = sum(w.state is WorkerState.STOPPED for w in self.workers)
        log.warning(
            "swarm stopped: %d/%d workers stopped cleanly, %d tasks run",
            stopped,
            len(self.workers),
            self.tasks_run,
        )
        return 0 if requested and not failed else 1


def _exit_code(job: asyncio.Task[int]) -> int:
    if job.cancelled():
        return 1
    exc = job.exception()
    if exc is not None:
        log.error("%s failed: %r", job.get_name(), exc)
        return 1
    return job.result()


@contextlib.contextmanager
def _tagged_logs() -> Iterator[None]:
    """Prefix log records made inside a swarm worker with `[<worker id>] `."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        worker_id = _worker_id.get()
        if worker_id is not None:
            # The prefix becomes part of a %-format string when args follow: escape it.
            prefix = worker_id.replace("%", "%%") if record.args else worker_id
            record.msg = f"[{prefix}] {record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


async def run_swarm(config: SwarmConfig, stop: asyncio.Event | None = None) -> int:
    """Run a `Swarm` until `stop` is set (or a worker ends by itself); the exit code."""
    return await Swarm(config).run(stop or asyncio.Event())
