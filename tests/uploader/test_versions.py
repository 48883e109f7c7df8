"""Numbered versions: overwrite publishes the next version, rollback makes the previous current."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support import run_server
from tests.uploader.fixtures import fake_builder
from uploader import repository as entries
from uploader import versions
from uploader.convert import convert_model
from uploader.errors import NoPreviousVersion
from uploader.service import create_app

NAME = "acme--tiny"


def _publish(models_dir: Path, repo: Path, dimension: int = 4) -> dict[str, object]:
    result = convert_model(
        "acme/tiny",
        repo,
        overwrite=True,
        local_roots=[models_dir],
        builder=fake_builder(dimension=dimension),
    )
    return result.to_json()


def _policy(entry: Path) -> set[str]:
    """The version_policy line of every config of the entry."""
    return {
        line
        for name in ("config.pbtxt", "configs/python.pbtxt", "configs/onnxruntime.pbtxt")
        for line in (entry / name).read_text().splitlines()
        if line.startswith("version_policy")
    }


def test_overwrite_publishes_the_next_version_beside_the_current(
    tmp_path: Path, models_dir: Path
) -> None:
    """v1 then an overwrite: folders 1 and 2, the configs serve 2 only, metadata says 2."""
    repo = tmp_path / "repo"
    first = _publish(models_dir, repo)
    second = _publish(models_dir, repo, dimension=8)
    entry = repo / NAME
    assert (first["version"], first["replaced"]) == (1, False)
    assert (second["version"], second["replaced"]) == (2, True)
    assert versions.numbered_versions(entry) == [1, 2]
    assert _policy(entry) == {"version_policy: { specific { versions: [ 2 ] } }"}
    meta = entries.read_metadata(entry)
    assert meta is not None and meta["version"] == 2 and meta["dimension"] == 8
    assert meta["content_hash"] == second["content_hash"]
    assert meta["content_hash"] == versions.content_hash(entry / "2" / "model.onnx")
    assert [v["version"] for v in meta["versions"]] == [1, 2]
    assert (entry / "2" / "model.py").is_file() and (entry / "2" / "tokenizer").is_dir()
    assert not [p for p in repo.iterdir() if p.name.startswith((".staging", ".retired"))]


def test_rollback_makes_the_previous_version_current(tmp_path: Path, models_dir: Path) -> None:
    """Rollback from 2 serves 1 again (configs and metadata); from 1 there is nothing left."""
    repo = tmp_path / "repo"
    first = _publish(models_dir, repo)
    _publish(models_dir, repo)
    meta = versions.rollback(repo, NAME)
    entry = repo / NAME
    assert meta["version"] == 1 and meta["rolled_back_from"] == 2
    assert meta["content_hash"] == first["content_hash"]
    assert _policy(entry) == {"version_policy: { specific { versions: [ 1 ] } }"}
    assert json.loads((entry / "smartrouting.json").read_text())["version"] == 1
    with pytest.raises(NoPreviousVersion):
        versions.rollback(repo, NAME)
    # The next publish still gets a new number: 3, never a reused 2.
    assert _publish(models_dir, repo)["version"] == 3


def test_old_versions_are_pruned(tmp_path: Path, models_dir: Path) -> None:
    """Only the newest KEEP_VERSIONS version folders stay."""
    repo = tmp_path / "repo"
    for _ in range(versions.KEEP_VERSIONS + 2):
        _publish(models_dir, repo)
    kept = versions.numbered_versions(repo / NAME)
    assert kept == list(range(3, 3 + versions.KEEP_VERSIONS))


def test_rollback_over_http(tmp_path: Path, models_dir: Path) -> None:
    """POST /models/{name}/rollback answers the version now current; 409 with none older."""
    repo = tmp_path / "repo"
    app = create_app(repo, local_roots=[models_dir], builder=fake_builder())
    with run_server(app) as server:
        for _ in range(2):
            answer = httpx.post(
                f"{server.base_url}/upload-model",
                json={"model_id": "acme/tiny", "overwrite": True},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 2
        rolled = httpx.post(f"{server.base_url}/models/{NAME}/rollback", timeout=60)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["version"] == 1 and rolled.json()["status"] == "success"
        again = httpx.post(f"{server.base_url}/models/{NAME}/rollback", timeout=60)
        assert again.status_code == 409 and again.json()["error"] == "no_previous_version"
        missing = httpx.post(f"{server.base_url}/models/nothing/rollback", timeout=60)
        assert missing.status_code == 404
