"""The Triton engine with a real tritonserver (PyTriton's 2.51, Python backend)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import scaled
from tests.worker.conftest import LABELS, TEXTS
from worker.engines.triton import TritonEngine
from worker.engines.triton_process import TritonState
from worker.errors import ModelNotFoundError
from worker.models import ModelManager
from worker.repository import ModelRepository

pytestmark = pytest.mark.triton


async def _engine(repo: Path, tmp_path: Path) -> TritonEngine:
    engine = TritonEngine(ModelRepository(repo), state_dir=tmp_path / "triton")
    await asyncio.wait_for(engine.start(), scaled(60))
    return engine


async def test_embeddings_equal_sentence_transformers(
    model_repository: Path, reference_embeddings: Any, tmp_path: Path
) -> None:
    """Load → infer through Triton gives unit vectors within 1e-4 of SentenceTransformer."""
    engine = await _engine(model_repository, tmp_path)
    try:
        await engine.load(LABELS[0])
        assert await engine.model_state(LABELS[0]) == "READY"
        vectors, dim = await engine.embed(LABELS[0], TEXTS, True)
        got = np.array(vectors)
        assert dim == 384 and got.shape == (len(TEXTS), 384)
        assert np.abs(np.linalg.norm(got, axis=1) - 1.0).max() < 1e-5
        assert np.abs(got - reference_embeddings).max() < 1e-4
        assert (tmp_path / "triton" / "tritonserver.log").stat().st_size > 0
    finally:
        await engine.stop()
    assert engine.process.state is TritonState.STOPPED


async def test_capacity_evicts_and_index_shows_unavailable(
    model_repository: Path, tmp_path: Path
) -> None:
    """Capacity 2: a third label evicts the LRU one and Triton's index shows it UNAVAILABLE."""
    engine = await _engine(model_repository, tmp_path)
    models = ModelManager(engine, capacity=2)
    try:
        for label in LABELS[:2]:
            async with models.use(label) as outcome:
                assert outcome.miss and outcome.load_ms > 0
        async with models.use(LABELS[0]) as outcome:  # a hit; LABELS[1] is now LRU
            assert not outcome.miss
        async with models.use(LABELS[2]) as outcome:
            assert outcome.evicted == [LABELS[1]]
            index = await engine.repository_index()
            assert index[LABELS[1]] == "UNAVAILABLE"
            assert index[LABELS[0]] == index[LABELS[2]] == "READY"
        assert sorted(models.cache.ready) == sorted([LABELS[0], LABELS[2]])
        with pytest.raises(ModelNotFoundError):
            async with models.use("no-such-model"):
                pass
    finally:
        await engine.stop()


async def test_sigkill_restarts_and_next_inference_succeeds(
    model_repository: Path, reference_embeddings: Any, tmp_path: Path
) -> None:
    """tritonserver SIGKILLed → labels reported lost, server restarted, next task succeeds."""
    engine = await _engine(model_repository, tmp_path)
    lost: list[tuple[list[str], str]] = []
    changed = asyncio.Event()
    models = ModelManager(engine, capacity=2, on_change=lambda reason: changed.set())

    def record_and_forward(labels: list[str], reason: str) -> None:
        lost.append((labels, reason))
        models._labels_lost(labels, reason)

    engine.on_labels_lost = record_and_forward
    try:
        async with models.use(LABELS[0]):
            pass
        old_pid = engine.process.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.wait_for(changed.wait(), scaled(30))
        assert lost and lost[0][0] == [LABELS[0]] and "died" in lost[0][1]
        assert models.cache.ready == []
        await engine.process.wait_ready(scaled(60))
        assert engine.process.pid != old_pid
        assert engine.process.restarts == 1
        async with models.use(LABELS[0]) as outcome:
            assert outcome.miss
            vectors, _ = await engine.embed(LABELS[0], TEXTS[:3], True)
        assert np.abs(np.array(vectors) - reference_embeddings[:3]).max() < 1e-4
    finally:
        await engine.stop()
