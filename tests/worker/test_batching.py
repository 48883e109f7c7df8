"""Dynamic batching is invisible to callers except in speed.

Concurrent tasks of different sizes (1, 3 and 8 texts, so different sequence lengths too)
run through the real Triton (its dynamic batcher, `model.py` stacking the requests) and
through the onnxruntime engine's `MicroBatcher`; each task must get exactly its own
embeddings, compared with SentenceTransformer on that task alone. The engines' own counters
show that batches really formed. `MicroBatcher`'s bookkeeping is checked with a fake runner.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import scaled
from tests.worker.conftest import LABELS, TEXTS
from worker.engines.base import Array, TensorEngine, bucket_length
from worker.engines.batching import MicroBatcher, stack
from worker.engines.onnxruntime import OnnxRuntimeEngine
from worker.repository import ModelRepository

#: Tasks of 1, 3 and 8 texts, three of each, texts rotated so no two tasks are equal.
TASKS = [
    [TEXTS[(start + k) % len(TEXTS)] for k in range(size)]
    for start, size in enumerate([1, 3, 8] * 3)
]


async def _embed_concurrently(engine: TensorEngine, label: str) -> list[Any]:
    jobs = [engine.embed(label, texts, True) for texts in TASKS]
    answers = await asyncio.wait_for(asyncio.gather(*jobs), scaled(120))
    return [np.array(vectors) for vectors, _ in answers]


def _assert_own_embeddings(got: list[Any], sentence_transformer: Any) -> None:
    for texts, vectors in zip(TASKS, got, strict=True):
        want = sentence_transformer.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        assert vectors.shape == want.shape == (len(texts), 384)
        assert float(np.abs(vectors - want).max()) < 1e-4, texts


@pytest.mark.triton
async def test_triton_batches_concurrent_tasks_and_each_gets_its_own_rows(
    model_repository: Path, sentence_transformer: Any, tmp_path: Path
) -> None:
    """Nine concurrent tasks through the real Triton: fewer executions than requests (the
    dynamic batcher joined them), and every task's rows equal SentenceTransformer's."""
    from worker.engines.triton import TritonEngine

    engine = TritonEngine(ModelRepository(model_repository), state_dir=tmp_path / "triton")
    await asyncio.wait_for(engine.start(), scaled(60))
    try:
        label = LABELS[1]
        await engine.load(label)
        got = await _embed_concurrently(engine, label)
        client = await engine.client()
        stats = (await client.get_inference_statistics(label))["model_stats"][0]
    finally:
        await engine.stop()
    _assert_own_embeddings(got, sentence_transformer)
    assert int(stats["inference_count"]) == sum(len(t) for t in TASKS)
    assert int(stats["execution_count"]) < len(TASKS), stats


async def test_onnxruntime_batches_concurrent_tasks_and_each_gets_its_own_rows(
    model_repository: Path, sentence_transformer: Any
) -> None:
    """The same nine tasks through the onnxruntime engine's MicroBatcher."""
    engine = OnnxRuntimeEngine(ModelRepository(model_repository), batch_delay_ms=5.0)
    await engine.start()
    try:
        label = LABELS[2]
        await engine.load(label)
        got = await _embed_concurrently(engine, label)
        batcher = engine.batcher(label)
    finally:
        await engine.stop()
    _assert_own_embeddings(got, sentence_transformer)
    assert batcher is not None and batcher.requests == len(TASKS)
    assert batcher.batches < len(TASKS)


async def test_onnxruntime_without_batching_runs_each_request_alone(
    model_repository: Path,
) -> None:
    """batch_delay_ms None: no batcher, each request is its own run."""
    engine = OnnxRuntimeEngine(ModelRepository(model_repository), batch_delay_ms=None)
    await engine.start()
    try:
        await engine.load(LABELS[0])
        assert engine.batcher(LABELS[0]) is None
        vectors, dim = await engine.embed(LABELS[0], TEXTS[:2], True)
        assert dim == 384 and len(vectors) == 2
    finally:
        await engine.stop()


class _Recorder:
    """A fake runner: row i of the answer is the sum of the row's ids, as float."""

    def __init__(self, fail: bool = False) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.fail = fail
        self.gate = asyncio.Event()

    async def __call__(self, ids: Array, mask: Array) -> tuple[Array, Array]:
        self.shapes.append((int(ids.shape[0]), int(ids.shape[1])))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("boom")
        sums = (ids * mask).sum(axis=1, keepdims=True).astype(np.float32)
        return sums, -sums


def _request(rows: int, seq: int, base: int) -> tuple[Array, Array]:
    ids = np.arange(base, base + rows * seq, dtype=np.int64).reshape(rows, seq)
    return ids, np.ones_like(ids)


async def test_micro_batcher_pads_splits_and_bounds_rows() -> None:
    """Requests queued while a batch runs form the next batch (up to max_rows, ragged
    lengths padded); every caller gets the rows computed from its own ids."""
    runner = _Recorder()
    batcher = MicroBatcher(runner, max_rows=6, delay_s=0.0)
    requests = [_request(1, 2, 0), _request(3, 5, 100), _request(2, 3, 200), _request(4, 1, 300)]
    jobs = [asyncio.create_task(batcher(*r)) for r in requests]
    runner.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*jobs), scaled(10))
    # 1 + 3 + 2 rows fill the first batch (padded to seq 5); the 4-row one runs next.
    assert runner.shapes == [(6, 5), (4, 1)]
    for (ids, mask), (embedding, pooled) in zip(requests, answers, strict=True):
        want = (ids * mask).sum(axis=1, keepdims=True)
        assert np.array_equal(embedding, want) and np.array_equal(pooled, -want)
    assert (batcher.batches, batcher.requests) == (2, 4)


async def test_micro_batcher_failure_reaches_every_caller_of_the_batch() -> None:
    """A failed run raises in each caller of that batch; the batcher keeps serving."""
    runner = _Recorder(fail=True)
    batcher = MicroBatcher(runner, max_rows=8, delay_s=0.0)
    jobs = [asyncio.create_task(batcher(*_request(1, 2, i))) for i in range(3)]
    runner.gate.set()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    runner.fail = False
    embedding, _ = await asyncio.wait_for(batcher(*_request(1, 2, 10)), scaled(10))
    assert embedding.tolist() == [[21.0]]


def test_stack_and_buckets() -> None:
    """stack pads with zeros to the longest; bucket lengths are powers of two, capped."""
    ids, mask = stack([_request(1, 2, 1), _request(1, 4, 1)])
    assert ids.tolist() == [[1, 2, 0, 0], [1, 2, 3, 4]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert [bucket_length(n, 256) for n in (1, 16, 17, 100, 200, 256)] == [
        16,
        16,
        32,
        128,
        256,
        256,
    ]
    assert bucket_length(300, 256) == 300 and bucket_length(40, 50) == 50
