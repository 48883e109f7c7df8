"""Reusable helpers for tests that need converted models (other test packages may import).

`minilm_repository()` converts the real all-MiniLM-L6-v2 once and caches the repository in
`$SMARTROUTING_CACHE_DIR` (default `var/cache`), keyed by a hash of the uploader code that
shapes the output and of the torch/transformers versions; concurrent test runs share it
under a file lock. `write_fake_sentence_transformer` and `fake_builder` serve the fast tests
of the publishing and HTTP layers: they check locking, 409s and atomic renames, not torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from tests.support import ROOT
from uploader import convert_model
from uploader import repository as entries
from uploader.convert import Builder, BuildReport, Progress
from uploader.sources import BUNDLED_MODEL_ID, ResolvedSource

MINILM_NAME = "sentence-transformers--all-MiniLM-L6-v2"
_HASHED = ("convert.py", "export.py", "validate.py", "repository.py", "sources.py")


def cache_dir() -> Path:
    """Where converted models are cached between test runs."""
    return Path(os.environ.get("SMARTROUTING_CACHE_DIR", ROOT / "var" / "cache"))


def uploader_code_hash() -> str:
    """A hash of everything that changes what a conversion writes."""
    digest = hashlib.sha256()
    package = ROOT / "uploader"
    for name in (*_HASHED, "templates/model.py"):
        digest.update(name.encode())
        digest.update((package / name).read_bytes())
    for dist in ("torch", "transformers", "sentence-transformers", "onnx"):
        digest.update(f"{dist}={metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def minilm_repository() -> Path:
    """A repository holding the converted real all-MiniLM-L6-v2 (treat it as read-only)."""
    root = cache_dir()
    repository = root / f"uploader-minilm-{uploader_code_hash()}"
    with _file_lock(root / "uploader-minilm.lock"):
        if not (repository / MINILM_NAME / entries.METADATA_FILE).is_file():
            for stale in root.glob("uploader-minilm-*"):
                if stale.is_dir() and stale != repository:
                    shutil.rmtree(stale, ignore_errors=True)
            convert_model(BUNDLED_MODEL_ID, repository, overwrite=True)
    return repository


def write_fake_sentence_transformer(path: Path, pooling: str = "mean") -> Path:
    """A directory that passes the modules.json checks (no weights: for fake builders)."""
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    prefix = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": prefix + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": prefix + "Pooling"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    pooling_config = {
        "word_embedding_dimension": 4,
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_cls_token": pooling == "cls",
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return path


def fake_builder(
    dimension: int = 4,
    entered: threading.Event | None = None,
    release: threading.Event | None = None,
    fail: Exception | None = None,
) -> Builder:
    """A builder writing a placeholder entry at once (or after `release` is set).

    `entered` is set when a build starts; `fail` is raised after the files are written,
    to check that a failed build leaves nothing behind.
    """

    def build(
        source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
    ) -> BuildReport:
        if entered is not None:
            entered.set()
        if release is not None and not release.wait(60):
            raise TimeoutError("fake builder was never released")
        entries.write_configs(entry, dimension, max_batch_size)
        entries.model_onnx_path(entry).write_bytes(b"fake onnx of " + source.model_id.encode())
        (entry / "tokenizer").mkdir()
        (entry / "tokenizer" / "tokenizer.json").write_text("{}")
        progress("fake build done")
        if fail is not None:
            raise fail
        return BuildReport(dimension, 64, entries.model_onnx_path(entry).stat().st_size, 0.0)

    return build
