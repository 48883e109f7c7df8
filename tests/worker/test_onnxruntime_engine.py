"""The onnxruntime engine on the real converted all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.worker.conftest import LABELS, TEXTS
from worker.engines.onnxruntime import OnnxRuntimeEngine
from worker.errors import ModelNotFoundError
from worker.models import ModelManager
from worker.repository import ModelRepository


async def test_embeddings_equal_sentence_transformers(
    model_repository: Path, reference_embeddings: Any
) -> None:
    """embed_texts gives 384-dim unit vectors within 1e-4 of SentenceTransformer.encode."""
    engine = OnnxRuntimeEngine(ModelRepository(model_repository))
    await engine.start()
    assert engine.providers[-1] == "CPUExecutionProvider"
    assert engine.device in ("cpu", "cuda:0")
    await engine.load(LABELS[0])
    vectors, dim = await engine.embed(LABELS[0], TEXTS, True)
    got = np.array(vectors)
    assert dim == 384 and got.shape == (len(TEXTS), 384)
    assert np.abs(np.linalg.norm(got, axis=1) - 1.0).max() < 1e-5
    assert np.abs(got - reference_embeddings).max() < 1e-4
    await engine.stop()


async def test_batches_split_to_max_batch_size(
    small_batch_repository: Path, reference_embeddings: Any
) -> None:
    """With max_batch_size 2, nine texts run as five batches and still match in order."""
    engine = OnnxRuntimeEngine(ModelRepository(small_batch_repository))
    await engine.start()
    await engine.load("minilm-small")
    calls: list[int] = []
    real_infer = engine.infer

    async def counting_infer(label: str, ids: Any, mask: Any) -> Any:
        calls.append(ids.shape[0])
        return await real_infer(label, ids, mask)

    engine.infer = counting_infer  # type: ignore[method-assign,assignment]
    vectors, _ = await engine.embed("minilm-small", TEXTS, True)
    assert calls == [2, 2, 2, 2, 1]
    assert np.abs(np.array(vectors) - reference_embeddings).max() < 1e-4


async def test_normalize_false_returns_pooled(model_repository: Path) -> None:
    """normalize=false gives the mean-pooled vectors: same direction, not unit length."""
    engine = OnnxRuntimeEngine(ModelRepository(model_repository))
    await engine.start()
    await engine.load(LABELS[0])
    raw, _ = await engine.embed(LABELS[0], TEXTS[:2], False)
    unit, _ = await engine.embed(LABELS[0], TEXTS[:2], True)
    norms = np.linalg.norm(np.array(raw), axis=1)
    assert np.all(np.abs(norms - 1.0) > 1e-3)
    assert np.allclose(np.array(raw) / norms[:, None], np.array(unit), atol=1e-5)


async def test_capacity_evicts_and_unknown_label(model_repository: Path) -> None:
    """Capacity 2: a third label evicts the LRU one; an unknown label is MODEL_NOT_FOUND."""
    engine = OnnxRuntimeEngine(ModelRepository(model_repository))
    await engine.start()
    assert set(LABELS) <= set(engine.available_labels())
    models = ModelManager(engine, capacity=2)
    for label in LABELS[:2]:
        async with models.use(label) as outcome:
            assert outcome.miss
    async with models.use(LABELS[2]) as outcome:
        assert outcome.evicted == [LABELS[0]]
    assert sorted(engine._sessions) == sorted(LABELS[1:])
    async with models.use(LABELS[1]) as outcome:
        assert not outcome.miss
    with pytest.raises(ModelNotFoundError):
        async with models.use("no-such-model"):
            pass
    with pytest.raises(ModelNotFoundError):
        async with models.use("../escape"):
            pass
    assert models.cache.misses == 3 and models.cache.hits == 1


async def test_text_longer_than_max_seq_length_is_truncated_like_pytorch(
    model_repository: Path, sentence_transformer: Any
) -> None:
    """A 600-word text is cut at max_seq_length (256 tokens) exactly as SentenceTransformer
    does, so the embeddings still match."""
    long_text = " ".join(f"word{i % 50} routing" for i in range(300))
    engine = OnnxRuntimeEngine(ModelRepository(model_repository))
    await engine.start()
    await engine.load(LABELS[0])
    ids, _ = engine.tokenizer(LABELS[0])([long_text, "short"])
    assert ids.shape == (2, 256)
    vectors, _ = await engine.embed(LABELS[0], [long_text, "short"], True)
    want = sentence_transformer.encode([long_text, "short"], convert_to_numpy=True)
    assert np.abs(np.array(vectors) - want).max() < 1e-4
