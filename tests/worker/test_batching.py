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
from worker.engines.batching import (
    MicroBatcher,
    batch_wait,
    length_groups,
    row_lengths,
    stack,
)
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
        rows = sum(len(t) for t in TASKS)
        # Triton records an execution's statistics just after its responses go out: poll.
        deadline = asyncio.get_running_loop().time() + scaled(10)
        while True:
            stats = (await client.get_inference_statistics(label))["model_stats"][0]
            if int(stats["inference_count"]) >= rows:
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.02)
    finally:
        await engine.stop()
    _assert_own_embeddings(got, sentence_transformer)
    assert int(stats["inference_count"]) == rows
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
    # 1 + 3 + 2 rows fill the first batch; its rows run in two length groups (lengths 2, 3,
    # 3 together, the three of 5 apart) rather than all padded to 5; the 4-row one is next.
    assert runner.shapes == [(3, 3), (3, 5), (4, 1)]
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


def test_length_groups_keep_padding_within_the_slack() -> None:
    """Rows sorted by length; a longer row starts a new group once padding the group to it
    would waste more than PADDING_SLACK of the real cells."""
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert row_lengths(mask).tolist() == [2, 4, 0, 3]
    assert length_groups([20, 4, 19, 4, 16]) == [[1, 3], [4, 2, 0]]
    assert length_groups([5, 5, 5]) == [[0, 1, 2]]
    assert length_groups([]) == []
    for lengths in ([1, 2, 3, 50, 60, 7, 7, 8], [4] * 9 + [30]):
        groups = length_groups(lengths)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for group in groups:
            real = sum(lengths[i] for i in group)
            assert len(group) * max(lengths[i] for i in group) <= 1.25 * real


def test_batch_wait_runs_a_lone_request_at_once_and_holds_others_for_the_delay() -> None:
    """The rule: no wait for a request that found the label idle or a full batch; else
    until the oldest request is `delay_s` old."""
    now, delay = 100.0, 0.002
    assert batch_wait(now, now, True, 1, 32, delay) == 0.0  # alone: nobody to wait for
    assert batch_wait(now, now, False, 32, 32, delay) == 0.0  # full
    assert batch_wait(now, now - 0.0005, False, 3, 32, delay) == pytest.approx(0.0015)
    assert batch_wait(now, now - 0.01, False, 3, 32, delay) == 0.0  # waited long enough


async def test_micro_batcher_runs_a_lone_request_without_the_delay() -> None:
    """With a 30 s delay, a request on an idle label still answers at once; requests that
    arrive while it runs are not alone and form the next batch together."""
    runner = _Recorder()
    runner.gate.set()
    batcher = MicroBatcher(runner, max_rows=2, delay_s=30.0)
    embedding, _ = await asyncio.wait_for(batcher(*_request(1, 2, 1)), scaled(5))
    assert embedding.tolist() == [[3.0]] and runner.shapes == [(1, 2)]

    runner.gate.clear()
    first = asyncio.create_task(batcher(*_request(1, 2, 1)))
    while len(runner.shapes) < 2:  # the lone one is running (held at the gate)
        await asyncio.sleep(0)
    followers = [asyncio.create_task(batcher(*_request(1, 3, i))) for i in (10, 20)]
    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *followers), scaled(5))
    # The two followers filled max_rows=2, so they did not wait out the 30 s either.
    assert runner.shapes == [(1, 2), (1, 2), (2, 3)]


async def test_micro_batcher_holds_a_request_that_arrives_while_a_batch_runs() -> None:
    """A request queued behind a running batch waits (up to the delay) for company."""
    runner = _Recorder()
    delay_s = 0.2
    batcher = MicroBatcher(runner, max_rows=8, delay_s=delay_s)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(batcher(*_request(1, 2, 1)))
    while not runner.shapes:
        await asyncio.sleep(0)
    queued_at = loop.time()
    second = asyncio.create_task(batcher(*_request(1, 2, 5)))
    runner.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), scaled(5))
    assert loop.time() - queued_at >= delay_s * 0.9  # the loop clock's resolution
    assert runner.shapes == [(1, 2), (1, 2)]


def _model_template() -> Any:
    """uploader/templates/model.py imported with a stand-in for Triton's pb_utils (only
    its pure helpers and `_run_batch` are used here)."""
    import importlib.util
    import sys
    import types

    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    path = Path(__file__).resolve().parents[2] / "uploader" / "templates" / "model.py"
    spec = importlib.util.spec_from_file_location("smartrouting_model_template", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_py_groups_rows_by_length_and_returns_each_request_its_rows() -> None:
    """The Python backend cuts every row to its length, runs length groups (short texts are
    not padded to the longest of the batch) and gives each request its own rows back."""
    template = _model_template()
    # The template is self-contained (Triton runs it alone): its copy of the rule must agree.
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert template.row_lengths(mask).tolist() == row_lengths(mask).tolist()
    for lengths in ([20, 4, 19, 4, 16], [1, 2, 3, 50, 60, 7, 7, 8], [4] * 9 + [30]):
        assert template.length_groups(lengths) == length_groups(lengths)

    calls: list[tuple[int, ...]] = []

    class Session:
        def run(self, names: list[str], feeds: dict[str, Array]) -> list[Array]:
            ids, mask = feeds["input_ids"], feeds["attention_mask"]
            calls.append(ids.shape)
            sums = (ids * mask).sum(axis=1, keepdims=True).astype(np.float32)
            return [sums, -sums]

    model = template.TritonPythonModel()
    model.session = Session()
    short = _request(2, 3, 1)  # 2 rows of 3 tokens
    long = _request(1, 9, 50)
    padded = (np.array([[7, 8, 0, 0, 0, 0, 0, 0, 0]]), np.array([[1, 1, 0, 0, 0, 0, 0, 0, 0]]))
    answers = model._run_batch([short, long, padded])
    assert sorted(calls) == [(1, 9), (3, 3)]  # the padded 2-token row runs with the short ones
    for (ids, mask), (embedding, pooled) in zip([short, long, padded], answers, strict=True):
        want = (ids * mask).sum(axis=1, keepdims=True)
        assert np.array_equal(embedding, want) and np.array_equal(pooled, -want)


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
