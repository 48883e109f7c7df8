"""Read-only view of the model repository (layout: docs/interfaces.md section 1)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ModelNotFoundError

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


def valid_label(label: str) -> bool:
    """A label is a plain directory name: no path separators, no `..`, at most 200 chars."""
    return bool(_LABEL.match(label)) and ".." not in label


@dataclass(frozen=True)
class ModelInfo:
    """What the worker needs to know about one model directory."""

    label: str
    path: Path
    dimension: int
    max_batch_size: int
    max_seq_length: int
    #: The current version (its folder's name; "1" for entries from before versions) and
    #: the sha256 of its model.onnx, as smartrouting.json says.
    version: str = "1"
    content_hash: str = ""

    @property
    def onnx_path(self) -> Path:
        return self.path / self.version / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        """The version's own tokenizer, else the entry's (entries from before versions)."""
        own = self.path / self.version / "tokenizer" / "tokenizer.json"
        return own if own.is_file() else self.path / "tokenizer" / "tokenizer.json"


@dataclass
class ModelRepository:
    """The directory of models; a label is a sub-directory name."""

    root: Path

    def path_of(self, label: str) -> Path:
        """The label's directory; MODEL_NOT_FOUND for a bad name or a missing model."""
        if not valid_label(label):
            raise ModelNotFoundError(f"invalid model label {label!r}")
        path = self.root / label
        if not (path / "config.pbtxt").is_file() and not (path / "smartrouting.json").is_file():
            raise ModelNotFoundError(f"no model {label!r} in the worker's repository")
        return path

    def info(self, label: str) -> ModelInfo:
        """Metadata of `label` from its smartrouting.json."""
        path = self.path_of(label)
        meta_path = path / "smartrouting.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"model {label!r} has no readable {meta_path.name}") from exc
        return ModelInfo(
            label=label,
            path=path,
            dimension=int(meta.get("dimension", 0)),
            max_batch_size=max(1, int(meta.get("max_batch_size", 1))),
            max_seq_length=int(meta.get("max_seq_length", 256)),
            version=str(meta.get("version", 1)),
            content_hash=str(meta.get("content_hash", "")),
        )

    def labels(self) -> list[str]:
        """Every label in the repository, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _LABEL.match(p.name) and (p / "smartrouting.json").is_file()
        )
