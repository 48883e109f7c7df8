"""Tests of registering one converted model under many labels (benchmark/models.py)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.models import register_label


def _entry(root: Path) -> Path:
    entry = root / "sentence-transformers--all-MiniLM-L6-v2"
    (entry / "1").mkdir(parents=True)
    (entry / "1" / "model.onnx").write_bytes(b"onnx-bytes")
    (entry / "config.pbtxt").write_text('backend: "python"\n')
    (entry / "smartrouting.json").write_text(json.dumps({"model_name": entry.name}))
    return entry


def test_label_copy_hardlinks_onnx_and_renames(tmp_path: Path) -> None:
    """Each label is a full entry; model.onnx is shared by a hard link, metadata renamed."""
    entry = _entry(tmp_path / "cache")
    repo = tmp_path / "repo"
    target = register_label(entry, repo, "label-3")
    assert target == repo / "label-3"
    onnx = target / "1" / "model.onnx"
    assert onnx.stat().st_ino == (entry / "1" / "model.onnx").stat().st_ino
    assert (target / "config.pbtxt").read_text() == 'backend: "python"\n'
    assert json.loads((target / "smartrouting.json").read_text())["model_name"] == "label-3"
    # The source entry is untouched and no staging directory is left behind.
    assert json.loads((entry / "smartrouting.json").read_text())["model_name"] == entry.name
    assert sorted(p.name for p in repo.iterdir()) == ["label-3"]


def test_register_label_is_idempotent(tmp_path: Path) -> None:
    """Registering an existing label keeps it as it is."""
    entry = _entry(tmp_path / "cache")
    repo = tmp_path / "repo"
    first = register_label(entry, repo, "label-0")
    (first / "marker").write_text("kept")
    assert register_label(entry, repo, "label-0") == first
    assert (first / "marker").read_text() == "kept"
