"""Numbered versions of a published model: a new version, a rollback, the current one, removal.

Each publish of a model is a new version folder `REPO/<name>/<n>/` (model.onnx, model.py,
tokenizer/); the configs' `version_policy` names the one Triton serves, and
smartrouting.json says which it is (`version`, `content_hash`: sha256 of its model.onnx,
`versions`: every version published, newest last). A worker told to reload the label
(`Reload` frame) calls Triton's `load` again: Triton re-reads the config, loads the named
version, and unloads the old one once its in-flight requests are done.

A new version of an existing entry is moved in folder first, then the entry-level files
(configs, tokenizer), then smartrouting.json, each with one rename: a reader sees the old
version or the new one. The caller holds the model's lock (`repository.model_lock`).

`remove_model` deletes an entry with every version (`DELETE /models/{name}`): renamed aside
to a hidden `.retired-` name in one step (readers see the entry or nothing), then deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from uploader import repository as entries
from uploader.errors import ConversionError, ModelNotFound, NoPreviousVersion

#: Version folders kept besides the current one (older ones are deleted on publish).
KEEP_VERSIONS = 3
_POLICY = re.compile(r"^version_policy:.*\n", re.MULTILINE)
_CONFIGS = ("config.pbtxt", "configs/python.pbtxt", "configs/onnxruntime.pbtxt")


def content_hash(onnx: Path) -> str:
    """`sha256:<hex>` of a model.onnx."""
    digest = hashlib.sha256()
    with open(onnx, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def numbered_versions(entry: Path) -> list[int]:
    """The version folders of `entry`, ascending."""
    if not entry.is_dir():
        return []
    return sorted(int(p.name) for p in entry.iterdir() if p.name.isdigit() and p.is_dir())


def current_version(entry: Path) -> int | None:
    """The version smartrouting.json names (1 for an entry from before versions), or None."""
    metadata = entries.read_metadata(entry)
    if metadata is None:
        return None
    return int(metadata.get("version", 1))


def next_version(entry: Path) -> int:
    """The number a new publish into `entry` gets (1 for a new entry)."""
    return max(numbered_versions(entry), default=0) + 1


def stage_version(staged: Path, version: int) -> None:
    """Lay a freshly built staging entry (`1/model.onnx`, `tokenizer/`) out as `version`:
    the version folder renamed, and a copy of the tokenizer inside it."""
    if version != 1:
        os.rename(staged / "1", staged / str(version))
    if (staged / "tokenizer").is_dir():
        shutil.copytree(staged / "tokenizer", staged / str(version) / "tokenizer")


def history(previous: dict[str, Any] | None, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The `versions` list of smartrouting.json: the previous one's, plus `entry`."""
    versions = list((previous or {}).get("versions") or [])
    if previous is not None and not versions and "version" not in previous:
        # An entry published before versions existed: its only version is 1.
        versions.append({"version": 1, "model_id": previous.get("model_id")})
    return [*versions, entry]


def publish_version(staged: Path, repository: Path, model_name: str, version: int) -> bool:
    """Move the staged `version` into `repository/model_name`; whether the entry existed."""
    target = repository / model_name
    if not target.exists():
        _rename(staged, target)
        return False
    _rename(staged / str(version), target / str(version))
    for name in ("configs", "tokenizer"):
        if (staged / name).exists():
            _replace_dir(staged / name, target / name, repository)
    os.replace(staged / "config.pbtxt", target / "config.pbtxt")
    # smartrouting.json last: it is what says the new version is current.
    os.replace(staged / entries.METADATA_FILE, target / entries.METADATA_FILE)
    prune(target, version)
    return True


def prune(entry: Path, current: int) -> list[int]:
    """Delete version folders older than the newest KEEP_VERSIONS (never `current`)."""
    versions = numbered_versions(entry)
    removed = [v for v in versions[:-KEEP_VERSIONS] if v != current]
    for version in removed:
        shutil.rmtree(entry / str(version), ignore_errors=True)
    return removed


def set_current(entry: Path, version: int) -> None:
    """Point every config's `version_policy` at `version`."""
    for name in _CONFIGS:
        path = entry / name
        if not path.is_file():
            continue
        text = _POLICY.sub("", path.read_text())
        text = text.replace("instance_group", entries.version_policy(version) + "instance_group", 1)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        temporary.write_text(text)
        os.replace(temporary, path)


def rollback(repository: Path, model_name: str) -> dict[str, Any]:
    """Make the newest version older than the current one current again; its metadata.

    Takes the model's lock. Raises ModelNotFound for no such entry, NoPreviousVersion when
    no older version folder is left.
    """
    target = repository / model_name
    with entries.model_lock(repository, model_name):
        metadata = entries.read_metadata(target)
        if metadata is None:
            raise ModelNotFound(f"no published model {model_name!r}")
        current = int(metadata.get("version", 1))
        older = [
            v
            for v in numbered_versions(target)
            if v < current and entries.model_onnx_path(target, v).is_file()
        ]
        if not older:
            raise NoPreviousVersion(f"model {model_name} has no version older than {current}")
        previous = older[-1]
        set_current(target, previous)
        known = {v.get("version"): v for v in metadata.get("versions") or []}
        metadata.update(
            {
                **{k: v for k, v in known.get(previous, {}).items() if k != "created_unix"},
                "version": previous,
                "content_hash": content_hash(entries.model_onnx_path(target, previous)),
                "rolled_back_from": current,
                "rolled_back_unix": time.time(),
            }
        )
        entries.write_metadata(target, metadata)
    return metadata


def remove_model(repository: Path, model_name: str) -> dict[str, Any]:
    """Delete the entry `model_name` with all its versions; what was removed.

    Takes the model's lock (UploadInProgress while an upload of it runs). Raises ModelNotFound
    for no such entry. Returns `{"model_name", "version", "versions"}`: the version that was
    current and the version folders deleted.
    """
    target = repository / model_name
    with entries.model_lock(repository, model_name):
        if not target.is_dir():
            raise ModelNotFound(f"no published model {model_name!r}")
        metadata = entries.read_metadata(target) or {}
        removed = numbered_versions(target)
        retired = repository / f"{entries.RETIRED_PREFIX}{model_name}-{uuid.uuid4().hex[:8]}"
        _rename(target, retired)
        shutil.rmtree(retired, ignore_errors=True)
    return {"model_name": model_name, "version": metadata.get("version"), "versions": removed}


def _replace_dir(source: Path, target: Path, repository: Path) -> None:
    retired = repository / f"{entries.RETIRED_PREFIX}{target.parent.name}-{uuid.uuid4().hex[:8]}"
    if target.exists():
        _rename(target, retired)
    _rename(source, target)
    shutil.rmtree(retired, ignore_errors=True)


def _rename(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        raise ConversionError(f"cannot move {source.name} to {target}: {exc}") from exc
