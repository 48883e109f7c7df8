"""Dynamic batching inside the worker: concurrent inferences of one label run as one.

What Triton's dynamic batcher does for the Triton engine, `MicroBatcher` does for the
onnxruntime engine. Each call brings one request (`input_ids`, `attention_mask`, INT64
`[rows, seq]`); requests wait at most `delay_s` after the oldest one arrived, or until
`max_rows` rows are waiting, then run in ONE call of `run`, padded to the longest
sequence (id 0, mask 0: the graph's attention and mean pooling ignore masked positions),
and each caller gets its own rows back. One batch runs at a time per label; requests that
arrive meanwhile form the next batch, so under load batches fill without waiting. Callers
see nothing of this but the speed: the same rows as a call of their own (within float
rounding of a larger matrix product).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from worker.engines.base import Array

Runner = Callable[[Array, Array], Awaitable[tuple[Array, Array]]]


@dataclass
class _Request:
    ids: Array
    mask: Array
    future: asyncio.Future[tuple[Array, Array]]
    arrived: float

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])


def pad_to(array: Array, width: int) -> Array:
    """`array` `[rows, seq]` right-padded with zeros to `[rows, width]`."""
    if array.shape[1] >= width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=0)


def stack(requests: list[tuple[Array, Array]]) -> tuple[Array, Array]:
    """Requests of any sequence lengths as one `[sum of rows, longest seq]` pair."""
    width = max(ids.shape[1] for ids, _ in requests)
    ids = np.concatenate([pad_to(ids, width) for ids, _ in requests])
    mask = np.concatenate([pad_to(mask, width) for _, mask in requests])
    return ids, mask


class MicroBatcher:
    """Gathers concurrent requests for up to `delay_s` or `max_rows` rows; runs them once."""

    def __init__(self, run: Runner, max_rows: int, delay_s: float, name: str = "batcher") -> None:
        self.run = run
        self.max_rows = max(1, max_rows)
        self.delay_s = max(0.0, delay_s)
        self.name = name
        #: Batches run and requests served (for tests and logs).
        self.batches = 0
        self.requests = 0
        self._queue: deque[_Request] = deque()
        self._rows = 0
        self._full = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, ids: Array, mask: Array) -> tuple[Array, Array]:
        """The `(embedding, pooled)` rows of this request, run in a batch with others."""
        loop = asyncio.get_running_loop()
        request = _Request(ids, mask, loop.create_future(), loop.time())
        self._queue.append(request)
        self._rows += request.rows
        if self._rows >= self.max_rows:
            self._full.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.name}-drain")
        return await request.future

    async def close(self) -> None:
        """Stop the drain task; requests still waiting are cancelled."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        while self._queue:
            self._queue.popleft().future.cancel()
        self._rows = 0

    def _take(self) -> list[_Request]:
        """The oldest requests that fit in `max_rows` (at least one)."""
        batch: list[_Request] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0].rows <= self.max_rows):
            request = self._queue.popleft()
            self._rows -= request.rows
            if request.future.done():  # its caller was cancelled: nothing to compute
                continue
            batch.append(request)
            rows += request.rows
        if self._rows < self.max_rows:
            self._full.clear()
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            wait = self._queue[0].arrived + self.delay_s - loop.time()
            if wait > 0 and self._rows < self.max_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1:
                embedding, pooled = await self.run(batch[0].ids, batch[0].mask)
            else:
                embedding, pooled = await self.run(*stack([(r.ids, r.mask) for r in batch]))
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        self.batches += 1
        self.requests += len(batch)
        start = 0
        for request in batch:
            end = start + request.rows
            if not request.future.done():
                request.future.set_result((embedding[start:end], pooled[start:end]))
            start = end
