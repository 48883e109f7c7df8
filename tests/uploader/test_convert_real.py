"""The real all-MiniLM-L6-v2 converted: onnxruntime and the published tokenizer match PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.uploader.fixtures import MINILM_NAME

pytestmark = pytest.mark.slow

# Different from the uploader's own validation texts, so this check is independent.
TEXTS = [
    "A",
    "Routing tasks to warm workers avoids loading models again.",
    "Les modèles d'embeddings transforment des phrases en vecteurs.",
    "  leading and trailing spaces  ",
    "token " * 600,  # far past max_seq_length (256): truncated
]


def _tokenize(entry: Path, texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(entry / "tokenizer" / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def test_entry_metadata_describes_the_real_model(minilm_repo: Path) -> None:
    """smartrouting.json records dimension 384, max_seq_length 256 and a tiny diff."""
    metadata = json.loads((minilm_repo / MINILM_NAME / "smartrouting.json").read_text())
    assert metadata["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["dimension"] == 384 and metadata["max_seq_length"] == 256
    assert 0 <= metadata["validation_max_abs_diff"] < 1e-4
    onnx_file = minilm_repo / MINILM_NAME / "1" / "model.onnx"
    assert metadata["onnx_bytes"] == onnx_file.stat().st_size > 80_000_000


def test_onnx_graph_is_self_contained_with_dynamic_axes(minilm_repo: Path) -> None:
    """One file, inputs/outputs as the contract says, batch and sequence axes dynamic."""
    import onnx

    model = onnx.load(str(minilm_repo / MINILM_NAME / "1" / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer), (
        "external data"
    )
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for tensor_type in inputs.values():
        assert tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor_type.shape.dim] == ["batch", "seq"]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert set(outputs) == {"embedding", "pooled"}
    for tensor_type in outputs.values():
        assert tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert tensor_type.shape.dim[0].dim_param == "batch"
        assert tensor_type.shape.dim[1].dim_value == 384


def test_published_tokenizer_matches_sentence_transformers(
    minilm_repo: Path, minilm_model: Any
) -> None:
    """The tokenizer.json the worker uses pads and truncates exactly as the model does."""
    ours = _tokenize(minilm_repo / MINILM_NAME, TEXTS)
    theirs = minilm_model.tokenizer(
        TEXTS, padding=True, truncation=True, max_length=256, return_tensors="np"
    )
    assert ours["input_ids"].shape == (len(TEXTS), 256)
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])


@pytest.fixture(scope="module")
def session(minilm_repo: Path) -> Any:
    """An onnxruntime session on the published model.onnx."""
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(minilm_repo / MINILM_NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [1], [4, 0], [2, 3]])
def test_onnxruntime_matches_sentence_transformers(
    minilm_repo: Path, minilm_model: Any, session: Any, rows: list[int]
) -> None:
    """embedding is within 1e-4 of encode(), unit length; pooled is the raw mean."""
    texts = [TEXTS[i] for i in rows]
    feeds = _tokenize(minilm_repo / MINILM_NAME, texts)
    embedding, pooled = session.run(["embedding", "pooled"], feeds)
    reference = minilm_model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
    assert embedding.shape == (len(texts), 384)
    assert float(np.abs(embedding - reference).max()) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    assert float(np.abs(np.linalg.norm(pooled, axis=1) - 1.0).max()) > 0.1
    normalised = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert float(np.abs(normalised - embedding).max()) < 1e-5


def test_validation_refuses_beyond_tolerance(minilm_repo: Path, minilm_model: Any) -> None:
    """validate_onnx passes the real graph at 1e-4 and raises when the bound is too tight."""
    from uploader.errors import ValidationFailed
    from uploader.validate import validate_onnx

    entry = minilm_repo / MINILM_NAME
    onnx_path, tokenizer = entry / "1" / "model.onnx", entry / "tokenizer" / "tokenizer.json"
    report = validate_onnx(minilm_model, onnx_path, tokenizer)
    assert 0 < report.max_abs_diff < 1e-4 and report.texts >= 5
    with pytest.raises(ValidationFailed, match="max abs diff"):
        validate_onnx(minilm_model, onnx_path, tokenizer, tolerance=1e-12)
