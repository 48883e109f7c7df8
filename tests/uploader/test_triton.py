"""A real tritonserver (PyTriton's 2.51, Python backend) serves the converted model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.uploader.fixtures import MINILM_NAME
from tests.uploader.triton import Triton, pytriton_dir, run_triton

pytestmark = [
    pytest.mark.triton,
    pytest.mark.slow,
    pytest.mark.skipif(pytriton_dir() is None, reason="nvidia-pytriton is not installed"),
]

TEXTS = [
    "Hello, Triton.",
    "Embeddings from a converted SentenceTransformer served by a real tritonserver.",
    "long " * 400,
]


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture(scope="module")
def repo(minilm_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private repository with the converted entry (hard links into the cache)."""
    repository = tmp_path_factory.mktemp("triton-repo")
    shutil.copytree(
        minilm_repo / MINILM_NAME, repository / MINILM_NAME, copy_function=_link_or_copy
    )
    return repository


@pytest.fixture(scope="module")
def triton(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Triton]:
    """A tritonserver on `repo` (explicit mode, nothing loaded yet)."""
    with run_triton(repo, tmp_path_factory.mktemp("triton")) as server:
        yield server


def _infer(client: Any, name: str, ids: np.ndarray, mask: np.ndarray) -> Any:
    import tritonclient.http as httpclient

    inputs = [
        httpclient.InferInput("input_ids", list(ids.shape), "INT64"),
        httpclient.InferInput("attention_mask", list(mask.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    return client.infer(name, inputs)


def _tokens(entry: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    encodings = Tokenizer.from_file(str(entry / "tokenizer" / "tokenizer.json")).encode_batch(texts)
    return (
        np.array([e.ids for e in encodings], dtype=np.int64),
        np.array([e.attention_mask for e in encodings], dtype=np.int64),
    )


def test_triton_loads_the_entry_and_matches_pytorch(
    triton: Triton, repo: Path, minilm_model: Any
) -> None:
    """load_model succeeds; embeddings for a padded batch are within 1e-4 of encode()."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton.url)
    try:
        client.load_model(MINILM_NAME)
        assert client.is_model_ready(MINILM_NAME), triton.log()
        ids, mask = _tokens(repo / MINILM_NAME, TEXTS)
        result = _infer(client, MINILM_NAME, ids, mask)
        embedding = result.as_numpy("embedding")
        reference = minilm_model.encode(TEXTS, convert_to_numpy=True, show_progress_bar=False)
        assert embedding.shape == (len(TEXTS), 384)
        assert float(np.abs(embedding - reference).max()) < 1e-4
        assert result.as_numpy("pooled").shape == (len(TEXTS), 384)
    finally:
        client.close()


def test_bad_request_gets_an_error_and_the_model_keeps_serving(triton: Triton, repo: Path) -> None:
    """Mismatched input shapes give that request an error; the next request succeeds."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(triton.url)
    try:
        client.load_model(MINILM_NAME)
        with pytest.raises(InferenceServerException, match="must be equal 2-D shapes"):
            _infer(client, MINILM_NAME, np.ones((1, 3), np.int64), np.ones((1, 4), np.int64))
        ids, mask = _tokens(repo / MINILM_NAME, ["still alive"])
        assert _infer(client, MINILM_NAME, ids, mask).as_numpy("embedding").shape == (1, 384)
    finally:
        client.close()


def test_a_copied_directory_is_a_new_label(triton: Triton, repo: Path) -> None:
    """Configs carry no name: a copy of the entry under another name loads as that label."""
    import tritonclient.http as httpclient

    copy_name = "copied-label-for-test"
    shutil.copytree(repo / MINILM_NAME, repo / copy_name, copy_function=_link_or_copy)
    client = httpclient.InferenceServerClient(triton.url)
    try:
        client.load_model(copy_name)
        assert client.is_model_ready(copy_name)
        client.unload_model(copy_name)
    finally:
        client.close()
