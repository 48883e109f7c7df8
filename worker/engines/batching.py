"""Dynamic batching inside the worker: concurrent inferences of one label run as one.

What Triton's dynamic batcher does for the Triton engine, `MicroBatcher` does for the
onnxruntime engine. Each call brings one request (`input_ids`, `attention_mask`, INT64
`[rows, seq]`); a batch is the requests taken together. Its rows are cut to their own
lengths, sorted and grouped by `length_groups` (padding a group to its longest row wastes
at most `PADDING_SLACK` of its cells: a batch costs rows x longest sequence, and padding
4-token texts to 20 tokens would cost more than batching saves on a CPU), each group runs
in ONE call of `run` padded with id 0 / mask 0 (the graph's attention and mean pooling
ignore masked positions), and each caller gets its own rows back. The Triton Python
backend's `model.py` (uploader/templates) does the same. One batch runs at a time per
label; requests that arrive meanwhile form the next batch, so under load batches fill
without waiting.

When to run is `batch_wait` (pure, unit-tested): a request that finds its label idle
(nothing queued, nothing running) runs at once, since waiting only pays when others are
coming and a lone caller would pay the whole delay for nothing; otherwise the batch waits
until the oldest request is `delay_s` old or `max_rows` rows are waiting. The delay thus
only shapes follow-up batches after runs shorter than it (a GPU); on a CPU, where a run
takes longer than the delay, the requests queued during it go at once. Callers see nothing
of this but the speed: the same rows as a call of their own (within float rounding of a
larger matrix product).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
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
    #: Nothing was queued or running for the label when it arrived: it need not wait.
    alone: bool = False

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


#: A group's padding may be at most this share of its real cells (see `length_groups`).
PADDING_SLACK = 0.25


def row_lengths(mask: Array) -> Array:
    """Per row of `mask` `[rows, seq]`: one past its last nonzero position (0 if none)."""
    nonzero = mask != 0
    last = mask.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0)


def length_groups(lengths: Sequence[int], slack: float = PADDING_SLACK) -> list[list[int]]:
    """Row indices grouped for padded runs: sorted by length, a row joins the current group
    while (rows x longest) stays within (1 + slack) x the group's real cells."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    cells = 0
    for index in order:
        length = max(1, int(lengths[index]))
        if current and (len(current) + 1) * length > (1 + slack) * (cells + length):
            groups.append(current)
            current, cells = [], 0
        current.append(index)
        cells += length
    if current:
        groups.append(current)
    return groups


def batch_wait(
    now: float,
    oldest_arrived: float,
    oldest_alone: bool,
    queued_rows: int,
    max_rows: int,
    delay_s: float,
) -> float:
    """Seconds to wait before taking the next batch (0: take it now).

    Now when the oldest waiting request found the label idle (no one else is coming that
    it knows of), when `max_rows` rows are already waiting, or once the oldest request has
    waited `delay_s`.
    """
    if oldest_alone or queued_rows >= max_rows:
        return 0.0
    return max(0.0, oldest_arrived + delay_s - now)


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
        self._running = False
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, ids: Array, mask: Array) -> tuple[Array, Array]:
        """The `(embedding, pooled)` rows of this request, run in a batch with others."""
        loop = asyncio.get_running_loop()
        alone = not self._queue and not self._running
        request = _Request(ids, mask, loop.create_future(), loop.time(), alone)
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
            oldest = self._queue[0]
            wait = batch_wait(
                loop.time(), oldest.arrived, oldest.alone, self._rows, self.max_rows, self.delay_s
            )
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            batch = self._take()
            if batch:
                self._running = True
                try:
                    await self._run(batch)
                finally:
                    self._running = False

    async def _run(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1 and batch[0].rows == 1:
                answers = [await self.run(batch[0].ids, batch[0].mask)]
            else:
                answers = await self._run_grouped(batch)
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        self.batches += 1
        self.requests += len(batch)
        for request, answer in zip(batch, answers, strict=True):
            if not request.future.done():
                request.future.set_result(answer)

    async def _run_grouped(self, batch: list[_Request]) -> list[tuple[Array, Array]]:
        """The batch's rows in length groups, one `run` each; the rows per request."""
        ids, mask = stack([(r.ids, r.mask) for r in batch])
        lengths = row_lengths(mask)
        embedding: Array | None = None
        pooled: Array | None = None
        for group in length_groups(lengths.tolist()):
            cut = max(1, int(lengths[group].max()))
            group_embedding, group_pooled = await self.run(
                np.ascontiguousarray(ids[group, :cut]), np.ascontiguousarray(mask[group, :cut])
            )
            if embedding is None or pooled is None:
                embedding = np.empty((len(lengths), *group_embedding.shape[1:]), np.float32)
                pooled = np.empty((len(lengths), *group_pooled.shape[1:]), np.float32)
            embedding[group] = group_embedding
            pooled[group] = group_pooled
        assert embedding is not None and pooled is not None  # a batch has at least one row
        answers, start = [], 0
        for request in batch:
            end = start + request.rows
            answers.append((embedding[start:end], pooled[start:end]))
            start = end
        return answers
