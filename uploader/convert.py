"""SentenceTransformer → validated ONNX → published Triton repository entry.

`convert_model` is the library entry point (the CLI and the HTTP service call it). It
resolves the source, takes the model's upload lock, builds the entry in a staging
directory with a `Builder` (the real one, `build_entry`, exports and validates with
torch; tests of the publishing logic may inject a fast one) and publishes atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from uploader import export, validate, versions
from uploader import repository as entries
from uploader.errors import (
    ConversionError,
    InvalidModelId,
    InvalidRequest,
    NotASentenceTransformer,
)
from uploader.names import model_name_for, validate_model_name
from uploader.sources import ResolvedSource, SourceKind, resolve_source

logger = logging.getLogger(__name__)

MIN_BATCH_SIZE = 1
MAX_BATCH_SIZE = 1024
#: Longest dynamic-batching delay accepted (ms): beyond it a batch costs callers more
#: than it saves.
MAX_BATCH_DELAY_MS = 1000.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildReport:
    """What a builder put in the staging directory."""

    dimension: int
    max_seq_length: int
    onnx_bytes: int
    max_abs_diff: float


class Builder(Protocol):
    """Fills `entry` with the model's files: `1/model.onnx` and `tokenizer/`.

    `convert_model` writes the Triton configs, `1/model.py` and smartrouting.json after it
    (a builder may write the configs too; they are replaced).
    """

    def __call__(
        self, source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
    ) -> BuildReport: ...


@dataclass(frozen=True)
class PublishResult:
    """A published model: where it is and what conversion measured."""

    model_id: str
    model_name: str
    path: Path
    dimension: int
    max_batch_size: int
    max_seq_length: int
    max_abs_diff: float
    onnx_bytes: int
    seconds: float
    replaced: bool
    #: The version this publish made current (1, 2, ...) and the sha256 of its model.onnx.
    version: int = 1
    content_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """The fields the HTTP answer carries besides status and message."""
        return {
            "model_id": self.model_id,
            "model_name": self.model_name,
            "dimension": self.dimension,
            "max_batch_size": self.max_batch_size,
            "max_seq_length": self.max_seq_length,
            "max_abs_diff": self.max_abs_diff,
            "onnx_bytes": self.onnx_bytes,
            "seconds": round(self.seconds, 3),
            "replaced": self.replaced,
            "version": self.version,
            "content_hash": self.content_hash,
        }


def _log_progress(message: str) -> None:
    logger.info("%s", message)


def _write_tokenizer(model: Any, target: Path, max_seq_length: int) -> Path:
    """Save the fast tokenizer with truncation and padding set as SentenceTransformer does."""
    from tokenizers import Tokenizer

    model.tokenizer.save_pretrained(str(target))
    path = target / "tokenizer.json"
    if not path.is_file():
        raise NotASentenceTransformer("the model has no fast tokenizer (tokenizer.json)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_seq_length)
    pad_token = model.tokenizer.pad_token or "[PAD]"
    pad_id = model.tokenizer.pad_token_id
    tokenizer.enable_padding(pad_id=int(pad_id or 0), pad_token=str(pad_token))
    tokenizer.save(str(path))
    return path


def build_entry(
    source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
) -> BuildReport:
    """The real builder: load with sentence-transformers, export, write, validate."""
    progress(f"loading {source.model_id} from {source.path}")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(
            str(source.path), device="cpu", trust_remote_code=False, local_files_only=True
        )
    except Exception as exc:
        raise NotASentenceTransformer(
            f"sentence-transformers cannot load {source.model_id}: {type(exc).__name__}: {exc}"
        ) from exc
    max_seq_length = int(model.max_seq_length or source.max_seq_length or 512)
    progress(f"exporting {source.model_id} to ONNX (opset {export.OPSET})")
    exported = export.export_onnx(model, entries.model_onnx_path(entry))
    progress(f"exported {exported.onnx_bytes} bytes in {exported.seconds:.1f}s")
    tokenizer_path = _write_tokenizer(model, entry / "tokenizer", max_seq_length)
    progress(f"validating {source.model_id} against PyTorch")
    checked = validate.validate_onnx(model, exported.path, tokenizer_path)
    progress(f"validated: max abs diff {checked.max_abs_diff:.3g} in {checked.seconds:.1f}s")
    return BuildReport(
        exported.dimension, max_seq_length, exported.onnx_bytes, checked.max_abs_diff
    )


def _model_name(resolved: ResolvedSource, model_name: str | None) -> str:
    """The explicit name, else the id with '/' → '--'; a local path falls back to its name."""
    if model_name is not None:
        return validate_model_name(model_name)
    try:
        return model_name_for(resolved.model_id)
    except InvalidModelId:
        if resolved.kind is not SourceKind.LOCAL:
            raise
        return validate_model_name(resolved.path.name)


def check_batch_size(max_batch_size: object) -> int:
    """Return `max_batch_size` if it is an int in [1, 1024], else raise InvalidRequest."""
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise InvalidRequest("max_batch_size must be an integer")
    if not MIN_BATCH_SIZE <= max_batch_size <= MAX_BATCH_SIZE:
        raise InvalidRequest(
            f"max_batch_size must be between {MIN_BATCH_SIZE} and {MAX_BATCH_SIZE}"
        )
    return max_batch_size


def convert_model(
    source: str | Path,
    repository: Path,
    model_name: str | None = None,
    max_batch_size: int = 32,
    overwrite: bool = False,
    *,
    batch_delay_ms: float | None = entries.DEFAULT_BATCH_DELAY_MS,
    allow_local_paths: bool = True,
    local_roots: Sequence[Path] = (),
    builder: Builder | None = None,
    progress: Progress | None = None,
) -> PublishResult:
    """Convert the SentenceTransformer `source` and publish it as `repository/<model_name>`.

    `source` is a model id (`sentence-transformers/all-MiniLM-L6-v2`, a Hugging Face id) or,
    with `allow_local_paths`, a local directory. `model_name` defaults to the id with `/`
    replaced by `--` (for a local directory: its name). `batch_delay_ms` is Triton's dynamic
    batching delay in the configs (None: no dynamic batching). Raises an `UploaderError`:
    ModelExists without `overwrite`, UploadInProgress while another upload holds the lock,
    ModelNotFound, NotASentenceTransformer, ValidationFailed, ...
    """
    started = time.monotonic()
    report = progress or _log_progress
    build = builder or build_entry
    check_batch_size(max_batch_size)
    if batch_delay_ms is not None and not 0 <= batch_delay_ms <= MAX_BATCH_DELAY_MS:
        raise InvalidRequest(f"batch_delay_ms must be between 0 and {MAX_BATCH_DELAY_MS}")
    repository = Path(repository)
    resolved = resolve_source(source, allow_local_paths=allow_local_paths, local_roots=local_roots)
    name = _model_name(resolved, model_name)
    repository.mkdir(parents=True, exist_ok=True)
    with entries.model_lock(repository, name):
        for leftover in entries.sweep_leftovers(repository, name):
            logger.warning("removed %s left by an interrupted upload", leftover)
        if not overwrite:
            entries.ensure_absent(repository, name)
        # overwrite publishes the next numbered version next to the current one.
        previous = entries.read_metadata(repository / name)
        version = versions.next_version(repository / name)
        with entries.staging_dir(repository, name) as entry:
            built = build(resolved, entry, max_batch_size, report)
            if not entries.model_onnx_path(entry).is_file():
                raise ConversionError("the builder wrote no model.onnx")
            versions.stage_version(entry, version)
            entries.write_configs(
                entry,
                built.dimension,
                max_batch_size,
                batch_delay_ms=batch_delay_ms,
                version=version,
            )
            onnx_file = entries.model_onnx_path(entry, version)
            onnx_bytes = onnx_file.stat().st_size
            digest = versions.content_hash(onnx_file)
            created = time.time()
            metadata = {
                "model_id": resolved.model_id,
                "model_name": name,
                "dimension": built.dimension,
                "max_batch_size": max_batch_size,
                "max_seq_length": built.max_seq_length,
                "inputs": list(entries.INPUTS),
                "outputs": list(entries.outputs(built.dimension)),
                "source": {"kind": resolved.kind.value, "path": str(resolved.path)},
                "created_unix": created,
                "validation_max_abs_diff": built.max_abs_diff,
                "onnx_bytes": onnx_bytes,
                "normalized_output": "embedding",
                "tokenizer": "tokenizer/tokenizer.json",
                "version": version,
                "content_hash": digest,
                "versions": versions.history(
                    previous,
                    {
                        "version": version,
                        "content_hash": digest,
                        "model_id": resolved.model_id,
                        "created_unix": created,
                    },
                ),
            }
            entries.write_metadata(entry, metadata)
            replaced = versions.publish_version(entry, repository, name, version)
    seconds = time.monotonic() - started
    report(f"published {name} in {repository} ({seconds:.1f}s)")
    return PublishResult(
        model_id=resolved.model_id,
        model_name=name,
        path=repository / name,
        dimension=built.dimension,
        max_batch_size=max_batch_size,
        max_seq_length=built.max_seq_length,
        max_abs_diff=built.max_abs_diff,
        onnx_bytes=onnx_bytes,
        seconds=seconds,
        replaced=replaced,
        version=version,
        content_hash=digest,
    )
