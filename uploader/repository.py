"""The Triton model repository: the files of one model entry, locking and atomic publish.

Layout of `REPO/<model_name>/` (docs/interfaces.md section 1):

    config.pbtxt  configs/python.pbtxt  configs/onnxruntime.pbtxt
    <n>/model.onnx  <n>/model.py  <n>/tokenizer/  tokenizer/  smartrouting.json

`<n>` are numbered versions (1, 2, ...); the configs' `version_policy` names the current
one and smartrouting.json says which it is (`uploader/versions.py` publishes a new version
into an existing entry and rolls back).

An entry is built in a hidden staging directory inside REPO (same filesystem, and always
writable where REPO is) and appears with one `os.rename`; a new version of an existing entry
is renamed into it as a new numbered folder (`uploader/versions.py`). A per-model `fcntl.flock` on
`REPO/.locks/<model_name>.lock` keeps two uploads of one model, in one process or several,
from interleaving. Names starting with '.' are the uploader's: Triton's explicit mode never
loads them, but its repository index lists them, so readers (and `list_models`) skip them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from uploader.errors import ConversionError, ModelExists, UploadInProgress

VERSION = "1"
METADATA_FILE = "smartrouting.json"
LOCK_DIR = ".locks"
STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"
#: onnxruntime threads per Python-backend instance unless the config says otherwise.
DEFAULT_INTRA_OP_THREADS = 1
#: Triton's dynamic batcher waits at most this long for more requests to join a batch (ms).
DEFAULT_BATCH_DELAY_MS = 2.0

INPUTS: tuple[dict[str, Any], ...] = (
    {"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]},
    {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": [-1]},
)


def outputs(dimension: int) -> tuple[dict[str, Any], ...]:
    """The output tensors of a model of embedding size `dimension`."""
    return (
        {"name": "embedding", "data_type": "TYPE_FP32", "dims": [dimension]},
        {"name": "pooled", "data_type": "TYPE_FP32", "dims": [dimension]},
    )


def _tensors(kind: str, tensors: tuple[dict[str, Any], ...], ragged: bool = False) -> str:
    extra = " allow_ragged_batch: true" if ragged else ""
    items = ",\n".join(
        f'  {{ name: "{t["name"]}" data_type: {t["data_type"]} '
        f"dims: [ {', '.join(str(d) for d in t['dims'])} ]{extra} }}"
        for t in tensors
    )
    return f"{kind} [\n{items}\n]\n"


def version_policy(version: int | None) -> str:
    """The config line that makes Triton serve exactly `version` ("" for None)."""
    if version is None:
        return ""
    return f"version_policy: {{ specific {{ versions: [ {version} ] }} }}\n"


def _dynamic_batching(batch_delay_ms: float | None) -> str:
    if batch_delay_ms is None:
        return ""
    delay_us = max(0, round(batch_delay_ms * 1000.0))
    return f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"


def python_config(
    dimension: int,
    max_batch_size: int,
    intra_op_threads: int,
    batch_delay_ms: float | None = DEFAULT_BATCH_DELAY_MS,
    version: int | None = None,
) -> str:
    """config.pbtxt for the Python backend (CPU); complete for --disable-auto-complete-config.

    With `batch_delay_ms` (None: no dynamic batching) Triton's dynamic batcher hands
    `model.py` the requests that arrived within that delay, up to `max_batch_size` rows in
    all; the inputs are ragged (each request is padded to its own longest text) and
    `model.py` pads them to one shape and runs them as one batch.
    """
    batching = batch_delay_ms is not None
    return (
        "# Written by the smart-routing uploader. No `name`: Triton uses the directory name.\n"
        'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _tensors("input", INPUTS, ragged=batching)
        + _tensors("output", outputs(dimension))
        + _dynamic_batching(batch_delay_ms)
        + version_policy(version)
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + 'parameters: { key: "intra_op_num_threads" '
        + f'value: {{ string_value: "{intra_op_threads}" }} }}\n'
    )


def onnxruntime_config(
    dimension: int,
    max_batch_size: int,
    batch_delay_ms: float | None = DEFAULT_BATCH_DELAY_MS,
    version: int | None = None,
) -> str:
    """configs/onnxruntime.pbtxt for the full Triton image's ONNX Runtime backend (GPU).

    The ONNX Runtime backend batches only requests of equal shape (it cannot take ragged
    inputs); the Triton engine pads sequence lengths to a few buckets for that reason
    (worker/engines/triton.py).
    """
    return (
        "# Written by the smart-routing uploader. Select with --model-config-name=onnxruntime.\n"
        'platform: "onnxruntime_onnx"\n'
        'default_model_filename: "model.onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        + _tensors("input", INPUTS)
        + _tensors("output", outputs(dimension))
        + _dynamic_batching(batch_delay_ms)
        + version_policy(version)
        + "instance_group [ { count: 1 kind: KIND_GPU } ]\n"
    )


def model_onnx_path(entry: Path, version: int | str = VERSION) -> Path:
    """Where the ONNX graph of an entry (published or staged) lives, at `version`."""
    return entry / str(version) / "model.onnx"


def write_configs(
    entry: Path,
    dimension: int,
    max_batch_size: int,
    intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    batch_delay_ms: float | None = DEFAULT_BATCH_DELAY_MS,
    version: int = 1,
) -> None:
    """Write config.pbtxt, configs/*.pbtxt and <version>/model.py into `entry`.

    `batch_delay_ms`: Triton's dynamic batching queue delay in both configs; None leaves
    dynamic batching out (each request runs on its own). The configs serve `version` only.
    """
    python = python_config(dimension, max_batch_size, intra_op_threads, batch_delay_ms, version)
    (entry / "configs").mkdir(parents=True, exist_ok=True)
    (entry / str(version)).mkdir(parents=True, exist_ok=True)
    (entry / "config.pbtxt").write_text(python)
    (entry / "configs" / "python.pbtxt").write_text(python)
    (entry / "configs" / "onnxruntime.pbtxt").write_text(
        onnxruntime_config(dimension, max_batch_size, batch_delay_ms, version)
    )
    template = resources.files("uploader").joinpath("templates", "model.py")
    (entry / str(version) / "model.py").write_text(template.read_text(encoding="utf-8"))


def write_metadata(entry: Path, metadata: dict[str, Any]) -> None:
    """Write smartrouting.json into `entry` (a temporary file renamed over it: readers see
    the old or the new one, never half of one)."""
    temporary = entry / f".{METADATA_FILE}.{uuid.uuid4().hex[:8]}"
    temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, entry / METADATA_FILE)


def read_metadata(entry: Path) -> dict[str, Any] | None:
    """The smartrouting.json of an entry, or None when it is missing or unreadable."""
    try:
        data = json.loads((entry / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_models(repository: Path) -> list[dict[str, Any]]:
    """The published entries of `repository` (hidden directories skipped), sorted by name."""
    if not repository.is_dir():
        return []
    found = []
    for entry in sorted(repository.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        metadata = read_metadata(entry) or {}
        found.append({**metadata, "model_name": entry.name})
    return found


@contextlib.contextmanager
def model_lock(repository: Path, model_name: str) -> Iterator[None]:
    """Hold the model's upload lock for the block; UploadInProgress if someone else has it."""
    lock_dir = repository / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{model_name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadInProgress(
                f"another upload of {model_name} is in progress; try again when it finishes"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_absent(repository: Path, model_name: str) -> None:
    """Raise ModelExists when `model_name` is already published."""
    if (repository / model_name).exists():
        raise ModelExists(f"model {model_name} already exists; send overwrite: true to replace it")


def sweep_leftovers(repository: Path, model_name: str) -> list[str]:
    """Delete staging and retired directories of `model_name` left by a killed upload.

    Call with the model's lock held: no live upload of this model owns them then.
    """
    pattern = re.compile(
        rf"({re.escape(STAGING_PREFIX)}|{re.escape(RETIRED_PREFIX)}){re.escape(model_name)}"
        r"-[0-9a-f]{8}"
    )
    removed = []
    for entry in repository.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def staging_dir(repository: Path, model_name: str) -> Iterator[Path]:
    """A fresh hidden directory inside `repository`, removed at exit if still there."""
    repository.mkdir(parents=True, exist_ok=True)
    path = repository / f"{STAGING_PREFIX}{model_name}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        raise ConversionError(f"cannot move {source.name} to {target}: {exc}") from exc
