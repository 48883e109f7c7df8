"""A new version of a loaded model takes effect on reload, on a real Triton; rollback too.

v1 is the converted MiniLM, v2 a deterministically perturbed copy of it (one initializer
scaled), both published with the uploader's own `convert_model` and a builder that copies
files instead of converting again.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import scaled
from tests.uploader.fixtures import MINILM_NAME, minilm_repository, write_fake_sentence_transformer
from tests.worker.conftest import TEXTS
from uploader import repository as entries
from uploader import versions
from uploader.convert import BuildReport, Progress, convert_model
from uploader.sources import ResolvedSource
from worker.engines.triton import TritonEngine
from worker.repository import ModelRepository

pytestmark = pytest.mark.triton

LABEL = "minilm-versioned"


def _perturbed(onnx_bytes: bytes) -> bytes:
    """The graph with its largest 2-D initializer scaled by 1.5 (deterministic)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    weights = [i for i in model.graph.initializer if len(i.dims) == 2]
    target = max(weights, key=lambda i: (int(np.prod(i.dims)), i.name))
    scaled_array = numpy_helper.to_array(target) * np.float32(1.5)
    target.CopyFrom(numpy_helper.from_array(scaled_array.astype(np.float32), target.name))
    return bytes(model.SerializeToString())


def _copying_builder(onnx_bytes: bytes) -> Any:
    source_entry = minilm_repository() / MINILM_NAME
    meta = entries.read_metadata(source_entry) or {}

    def build(
        source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
    ) -> BuildReport:
        entries.model_onnx_path(entry).parent.mkdir(parents=True, exist_ok=True)
        entries.model_onnx_path(entry).write_bytes(onnx_bytes)
        shutil.copytree(source_entry / "tokenizer", entry / "tokenizer")
        return BuildReport(
            int(meta["dimension"]), int(meta["max_seq_length"]), len(onnx_bytes), 0.0
        )

    return build


def _publish(repo: Path, models_dir: Path, onnx_bytes: bytes) -> int:
    result = convert_model(
        "acme/minilm",
        repo,
        model_name=LABEL,
        overwrite=True,
        local_roots=[models_dir],
        builder=_copying_builder(onnx_bytes),
    )
    return result.version


def _reference(onnx_bytes: bytes, engine: TritonEngine) -> Any:
    """What onnxruntime makes of TEXTS with this graph (the worker's own tokenisation)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ids, mask = engine.tokenizer(LABEL)(TEXTS)
    return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]


async def _versions_in_index(engine: TritonEngine) -> dict[str, str]:
    client = await engine.client()
    index = await client.get_model_repository_index()
    return {e.get("version", ""): e.get("state", "") for e in index if e["name"] == LABEL}


async def _wait_index(engine: TritonEngine, want: dict[str, str]) -> dict[str, str]:
    """Poll the index until the label's versions are `want` (Triton unloads asynchronously)."""
    deadline = asyncio.get_running_loop().time() + scaled(30)
    while True:
        got = await _versions_in_index(engine)
        if {v: s for v, s in got.items() if s == "READY"} == want or (
            asyncio.get_running_loop().time() > deadline
        ):
            return got
        await asyncio.sleep(0.1)


async def test_publish_reload_and_rollback_on_triton(tmp_path: Path) -> None:
    """v1 answers, v2 published + reload: the next embedding is v2's while tasks running
    during the switch all succeed, only v2 is READY; rollback + reload: v1 again."""
    models_dir = tmp_path / "models"
    write_fake_sentence_transformer(models_dir / "acme" / "minilm")
    repo = tmp_path / "repo"
    v1_bytes = entries.model_onnx_path(minilm_repository() / MINILM_NAME).read_bytes()
    v2_bytes = _perturbed(v1_bytes)
    assert _publish(repo, models_dir, v1_bytes) == 1

    engine = TritonEngine(ModelRepository(repo), state_dir=tmp_path / "triton")
    await asyncio.wait_for(engine.start(), scaled(60))
    try:
        await engine.load(LABEL)
        assert engine.model_version(LABEL) == "1"
        v1_vectors = np.array((await engine.embed(LABEL, TEXTS, True))[0])
        assert np.abs(v1_vectors - _reference(v1_bytes, engine)).max() < 1e-4

        assert _publish(repo, models_dir, v2_bytes) == 2
        # Tasks keep running while the new version loads: none of them fails.
        during = [asyncio.create_task(engine.embed(LABEL, TEXTS[:2], True)) for _ in range(8)]
        await engine.reload(LABEL)
        for result in await asyncio.gather(*during):
            assert len(result[0]) == 2
        assert engine.model_version(LABEL) == "2"
        v2_vectors = np.array((await engine.embed(LABEL, TEXTS, True))[0])
        assert np.abs(v2_vectors - v1_vectors).max() > 1e-2
        assert np.abs(v2_vectors - _reference(v2_bytes, engine)).max() < 1e-4
        index = await _wait_index(engine, {"2": "READY"})
        assert {v for v, s in index.items() if s == "READY"} == {"2"}, index

        meta = versions.rollback(repo, LABEL)
        assert meta["version"] == 1
        await engine.reload(LABEL)
        assert engine.model_version(LABEL) == "1"
        back = np.array((await engine.embed(LABEL, TEXTS, True))[0])
        assert np.abs(back - v1_vectors).max() < 1e-5
        index = await _wait_index(engine, {"1": "READY"})
        assert {v for v, s in index.items() if s == "READY"} == {"1"}, index
    finally:
        await engine.stop()
