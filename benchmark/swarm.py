"""A swarm of SIMULATED workers in one process, for scale runs only.

Two hundred `python -m worker` processes would swamp a small machine, so a scale
run can start `python -m benchmark swarm --workers 200 ...` instead: one asyncio
process holding one websocket connection per simulated worker. Each speaks the
real protocol (proto/smartrouting.proto: Hello → Welcome, Task → TaskResult,
Preload, Unload, Drain, Cancel) and simulates its engine: an LRU cache of
`capacity` labels, a load that sleeps a normal draw around `sim_load_ms` on a
miss, and a run that sleeps around `sim_run_ms`, all × `time_scale`. It runs no
model. Costs default to the worker package's simulated-engine defaults when that
package provides them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import websockets

from proto import smartrouting_pb2 as pb
from proto.frames import PROTOCOL_VERSION, decode_dispatcher_message, encode

log = logging.getLogger("benchmark.swarm")

# Fallbacks, measured on the real Triton of this machine (docs/architecture.md §6.4):
# a load takes ~0.27 s, a batch-1 embedding a few ms (plus HTTP and tokenisation).
FALLBACK_COSTS = {
    "sim_load_ms": 270.0,
    "sim_load_stddev_ms": 30.0,
    "sim_run_ms": 10.0,
    "sim_run_stddev_ms": 2.0,
}


def default_costs() -> dict[str, float]:
    """The worker's simulated-engine defaults if importable, else FALLBACK_COSTS."""
    costs = dict(FALLBACK_COSTS)
    try:
        from worker.engines import simulated
    except ImportError:
        return costs
    for key in costs:
        value = getattr(simulated, f"DEFAULT_{key.upper().removeprefix('SIM_')}", None)
        if isinstance(value, (int, float)):
            costs[key] = float(value)
    return costs


@dataclass
class SwarmConfig:
    """Settings shared by every simulated worker of the swarm."""

    dispatcher_url: str
    workers: int
    capacity: int = 2
    worker_prefix: str = "w-"
    time_scale: float = 1.0
    seed: int = 1
    costs: dict[str, float] = field(default_factory=default_costs)


class SimulatedWorker:
    """One simulated worker: a protocol session plus an LRU label cache."""

    def __init__(self, worker_id: str, config: SwarmConfig, rng: random.Random) -> None:
        self.worker_id = worker_id
        self.config = config
        self.rng = rng
        self.cache: OrderedDict[str, None] = OrderedDict()
        self.queue: asyncio.Queue[pb.Task] = asyncio.Queue()
        self.cancelled: set[str] = set()
        self.draining = False
        self.completed = 0

    def _draw_ms(self, mean_key: str, sd_key: str) -> float:
        c = self.config.costs
        return max(0.0, self.rng.gauss(c[mean_key], c[sd_key]))

    async def _sleep_ms(self, ms: float) -> None:
        await asyncio.sleep(ms * self.config.time_scale / 1000.0)

    def _evict_for(self, hints: Sequence[str]) -> list[str]:
        evicted = []
        while len(self.cache) >= self.config.capacity:
            victim = next((h for h in hints if h in self.cache), None)
            if victim is None:
                victim = next(iter(self.cache))  # least recently used
            del self.cache[victim]
            evicted.append(victim)
        return evicted

    async def _load(self, label: str, hints: Sequence[str]) -> tuple[bool, float, list[str]]:
        if label in self.cache:
            self.cache.move_to_end(label)
            return False, 0.0, []
        evicted = self._evict_for(hints)
        start = time.monotonic()
        await self._sleep_ms(self._draw_ms("sim_load_ms", "sim_load_stddev_ms"))
        self.cache[label] = None
        return True, (time.monotonic() - start) * 1000.0, evicted

    async def _run_task(self, task: pb.Task, received: float) -> pb.WorkerMessage:
        result = pb.TaskResult(task_id=task.task_id, label=task.label, attempt=task.attempt)
        queue_ms = (time.monotonic() - received) * 1000.0
        if task.deadline_unix_ms and time.time() * 1000 > task.deadline_unix_ms:
            result.ok = False
            result.error_code = pb.DEADLINE_EXCEEDED
            result.error_message = "deadline passed before the task started"
        elif task.task_type != "sample_task":
            result.ok = False
            result.error_code = pb.UNKNOWN_TASK_TYPE
            result.error_message = f"the simulated swarm runs sample_task, not {task.task_type!r}"
        else:
            try:
                params = json.loads(task.parameters_json or "{}")
            except ValueError:
                params = None
            if not isinstance(params, dict):
                result.ok = False
                result.error_code = pb.INVALID_PARAMETERS
                result.error_message = "parameters_json must be a JSON object"
            else:
                miss, load_ms, evicted = await self._load(task.label, list(task.evict_hint))
                run_target = params.get("run_ms")
                if not isinstance(run_target, (int, float)):
                    run_target = self._draw_ms("sim_run_ms", "sim_run_stddev_ms")
                start = time.monotonic()
                await self._sleep_ms(float(run_target))
                run_ms = (time.monotonic() - start) * 1000.0
                result.ok = True
                result.label_miss = miss
                result.load_ms = load_ms
                result.run_ms = run_ms
                result.labels_evicted.extend(evicted)
                result.result_json = json.dumps(
                    {"label": task.label, "simulated": True, "run_ms": run_ms}
                )
        result.queue_ms = queue_ms
        result.labels_loaded.extend(self.cache)
        return pb.WorkerMessage(task_result=result)

    async def _executor(self, ws: websockets.ClientConnection) -> None:
        while True:
            task = await self.queue.get()
            if task.task_id in self.cancelled:
                self.cancelled.discard(task.task_id)
                continue
            message = await self._run_task(task, time.monotonic())
            await ws.send(encode(message))
            self.completed += 1

    async def run(self) -> None:
        """Connect, say Hello, and serve tasks until the connection closes."""
        headers = {"Worker-Id": self.worker_id}
        async with websockets.connect(
            self.config.dispatcher_url, additional_headers=headers, max_size=None
        ) as ws:
            hello = pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                worker_id=self.worker_id,
                capacity=self.config.capacity,
                slots=1,
                engine="simulated",
                device="swarm",
                task_types=["sample_task"],
            )
            await ws.send(encode(pb.WorkerMessage(hello=hello)))
            executor = asyncio.create_task(self._executor(ws))
            try:
                async for frame in ws:
                    await self._handle(decode_dispatcher_message(frame), ws)
            finally:
                executor.cancel()

    async def _handle(self, message: pb.DispatcherMessage, ws: websockets.ClientConnection) -> None:
        kind = message.WhichOneof("body")
        if kind == "task":
            if self.draining:
                bye = pb.Goodbye(reason="draining", returned_task_ids=[message.task.task_id])
                await ws.send(encode(pb.WorkerMessage(goodbye=bye)))
            else:
                self.queue.put_nowait(message.task)
        elif kind == "preload":
            await self._load(message.preload.label, list(message.preload.evict_hint))
            await self._labels_changed(ws, "preload")
        elif kind == "unload":
            self.cache.pop(message.unload.label, None)
            await self._labels_changed(ws, "unload")
        elif kind == "cancel":
            self.cancelled.add(message.cancel.task_id)
        elif kind == "drain":
            self.draining = True

    async def _labels_changed(self, ws: websockets.ClientConnection, reason: str) -> None:
        changed = pb.LabelsChanged(labels_loaded=list(self.cache), reason=reason)
        await ws.send(encode(pb.WorkerMessage(labels_changed=changed)))


async def run_swarm(config: SwarmConfig, stop: asyncio.Event | None = None) -> int:
    """Run every simulated worker until `stop` is set or all connections end."""
    stop = stop or asyncio.Event()
    workers = [
        SimulatedWorker(f"{config.worker_prefix}{i}", config, random.Random(f"{config.seed}:{i}"))
        for i in range(config.workers)
    ]
    tasks = [asyncio.create_task(w.run(), name=w.worker_id) for w in workers]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for t in [*tasks, stopper]:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    for r in errors[:5]:
        log.error("simulated worker failed: %r", r)
    total = sum(w.completed for w in workers)
    log.warning("swarm stopped: %d workers, %d tasks completed", len(workers), total)
    return 0 if stopper in done else 1
