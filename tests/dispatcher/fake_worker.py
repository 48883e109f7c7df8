"""A minimal worker for tests: speaks the real protocol over a real `websockets` connection.

It says Hello, holds up to `capacity` labels (LRU, honouring evict hints), answers each Task
after `load_s` (on a miss) plus `run_s`, and reports misses and its labels in every TaskResult.
`hold()` makes it keep tasks unanswered until `release()`; `crash()` drops the TCP connection
without a closing handshake, as a killed process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection

from proto import frames
from proto import smartrouting_pb2 as pb


@dataclass
class FakeWorker:
    """A protocol-speaking worker with configurable delays."""

    url: str
    worker_id: str
    capacity: int = 2
    slots: int = 1
    labels: list[str] = field(default_factory=list)
    run_s: float = 0.0
    load_s: float = 0.0
    label_costs: dict[str, tuple[float, float]] = field(default_factory=dict)
    send_hello: bool = True
    #: Models it declares it can serve (Hello.servable); None: any label.
    servable: list[str] | None = None
    #: Labels whose load fails: tasks for them are answered MODEL_LOAD_FAILED.
    broken: set[str] = field(default_factory=set)
    received: list[pb.Task] = field(default_factory=list)
    reloads: list[pb.Reload] = field(default_factory=list)
    unloads: list[pb.Unload] = field(default_factory=list)
    cancels: list[pb.Cancel] = field(default_factory=list)
    results: list[pb.TaskResult] = field(default_factory=list)
    drained: bool = False
    welcome: pb.Welcome | None = None
    ws: ClientConnection | None = None
    _loaded: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _task_arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None
    _jobs: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._released.set()
        for label in self.labels:
            self._loaded[label] = None

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    async def start(self) -> FakeWorker:
        """Connect, say Hello and wait for Welcome."""
        self.ws = await websockets.connect(
            self.url, additional_headers={"Worker-Id": self.worker_id}, ping_interval=None
        )
        if self.send_hello:
            hello = pb.Hello(
                protocol_version=frames.PROTOCOL_VERSION,
                worker_id=self.worker_id,
                capacity=self.capacity,
                slots=self.slots,
                engine="fake",
                labels_loaded=self.loaded,
                device="cpu",
                task_types=["sample_task"],
                servable=self.servable or [],
                servable_only=self.servable is not None,
            )
            for label, (load_ms, run_ms) in self.label_costs.items():
                hello.label_costs[label].load_ms = load_ms
                hello.label_costs[label].run_ms = run_ms
            await self.ws.send(frames.encode(pb.WorkerMessage(hello=hello)))
            message = frames.decode_dispatcher_message(await self.ws.recv())
            assert message.WhichOneof("body") == "welcome", message
            self.welcome = message.welcome
            self._reader = asyncio.create_task(self._read())
        return self

    def hold(self) -> None:
        """Keep answers back until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def wait_for_tasks(self, count: int, timeout: float = 10.0) -> list[pb.Task]:
        """Wait until this worker has received `count` tasks."""
        async with self._task_arrived:
            await asyncio.wait_for(
                self._task_arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Wait until the dispatcher closed the connection; its close code and reason."""
        assert self.ws is not None
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason

    async def send_raw(self, data: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def send(self, message: pb.WorkerMessage) -> None:
        await self.send_raw(frames.encode(message))

    async def crash(self) -> None:
        """Drop the connection without a close frame, like a killed process."""
        assert self.ws is not None
        self.ws.transport.abort()
        await self._stop_jobs()

    async def close(self) -> None:
        """Close normally and stop background jobs."""
        if self.ws is not None:
            await self.ws.close()
        await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        tasks = [*self._jobs, *([self._reader] if self._reader else [])]
        for job in tasks:
            job.cancel()
        for job in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                message = frames.decode_dispatcher_message(data)
                kind = message.WhichOneof("body")
                if kind == "task":
                    async with self._task_arrived:
                        self.received.append(message.task)
                        self._task_arrived.notify_all()
                    job = asyncio.create_task(self._run(message.task))
                    self._jobs.add(job)
                    job.add_done_callback(self._jobs.discard)
                elif kind == "cancel":
                    self.cancels.append(message.cancel)
                elif kind == "reload":
                    self.reloads.append(message.reload)
                elif kind == "unload":
                    self.unloads.append(message.unload)
                    job = asyncio.create_task(self._unload(message.unload.label, set(self._jobs)))
                    self._jobs.add(job)
                    job.add_done_callback(self._jobs.discard)
                elif kind == "drain":
                    self.drained = True

    async def _run(self, task: pb.Task) -> None:
        if task.label in self.broken:
            await self._fail_load(task)
            return
        miss = task.label not in self._loaded
        evicted: list[str] = []
        if miss:
            while len(self._loaded) >= self.capacity:
                hinted = [h for h in task.evict_hint if h in self._loaded]
                victim = hinted[0] if hinted else next(iter(self._loaded))
                del self._loaded[victim]
                evicted.append(victim)
            self._loaded[task.label] = None
        self._loaded.move_to_end(task.label)
        delay = (self.load_s if miss else 0.0) + self.run_s
        if delay:
            await asyncio.sleep(delay)
        await self._released.wait()
        result = pb.TaskResult(
            task_id=task.task_id,
            ok=True,
            result_json=json.dumps({"label": task.label, "worker": self.worker_id}),
            label=task.label,
            label_miss=miss,
            load_ms=self.load_s * 1000 if miss else 0.0,
            run_ms=self.run_s * 1000,
            labels_loaded=self.loaded,
            labels_evicted=evicted,
            attempt=task.attempt,
        )
        self.results.append(result)
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(frames.encode(pb.WorkerMessage(task_result=result)))

    async def _unload(self, label: str, running: set[asyncio.Task[None]]) -> None:
        """Unload: like a real worker, the tasks running when it arrived finish first."""
        await asyncio.gather(*running, return_exceptions=True)
        self._loaded.pop(label, None)
        changed = pb.LabelsChanged(labels_loaded=self.loaded)
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(frames.encode(pb.WorkerMessage(labels_changed=changed)))

    async def _fail_load(self, task: pb.Task) -> None:
        result = pb.TaskResult(
            task_id=task.task_id,
            ok=False,
            error_code=pb.MODEL_LOAD_FAILED,
            error_message=f"model {task.label!r} failed to load",
            label=task.label,
            label_miss=True,
            labels_loaded=self.loaded,
            attempt=task.attempt,
        )
        self.results.append(result)
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(frames.encode(pb.WorkerMessage(task_result=result)))
