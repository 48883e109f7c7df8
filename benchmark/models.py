"""Real models for the benchmark's labels (engines onnxruntime and triton).

The real all-MiniLM-L6-v2 is converted once with the uploader (torch → ONNX,
validated) into a cache repository, then registered under each benchmark label
by copying its repository entry: `model.onnx` is hard-linked (90 MB, shared on
disk), every other file copied. The configs do not name the model, so each copy
is a distinct label the worker must really load (docs/interfaces.md section 1).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from benchmark.errors import ModelPrepError

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_NAME = "sentence-transformers--all-MiniLM-L6-v2"
#: Where the one conversion is kept between runs (ignored by git: /var/).
CACHE_REPOSITORY = ROOT / "var" / "benchmark-cache" / "models"


def _link_or_copy(src: str, dst: str) -> object:
    if src.endswith(".onnx"):
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass  # another file system: copy instead
    return shutil.copy2(src, dst)


def converted_model(cache: Path = CACHE_REPOSITORY, progress: bool = True) -> Path:
    """The repository entry of the real MiniLM, converted on first use."""
    entry = cache / MODEL_NAME
    if (entry / "smartrouting.json").is_file():
        return entry
    try:
        from uploader.convert import convert_model
    except ImportError as exc:
        raise ModelPrepError(f"the uploader is not importable: {exc}") from exc
    if progress:
        print(f"converting {MODEL_ID} to ONNX once into {cache} ...", flush=True)
    try:
        result = convert_model(MODEL_ID, cache, overwrite=True)
    except Exception as exc:  # the uploader's errors, torch's, ...
        raise ModelPrepError(f"converting {MODEL_ID} failed: {exc}") from exc
    return Path(result.path)


def register_label(entry: Path, repository: Path, label: str) -> Path:
    """Copy the entry as `repository/<label>` (model.onnx hard-linked); idempotent."""
    target = repository / label
    if (target / "smartrouting.json").is_file():
        return target
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".{label}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(entry, staging, copy_function=_link_or_copy)
    meta_path = staging / "smartrouting.json"
    metadata = json.loads(meta_path.read_text())
    metadata["model_name"] = label
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(staging, target)
    return target


def prepare_label_models(
    repository: Path, labels: Sequence[str], progress: bool = True
) -> list[Path]:
    """Make every label a real model in `repository`; returns their directories."""
    entry = converted_model(progress=progress)
    paths = [register_label(entry, repository, label) for label in labels]
    if progress:
        print(f"registered {len(paths)} labels as copies of {MODEL_NAME} in {repository}")
    return paths
