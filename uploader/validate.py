"""Check an exported graph against PyTorch before it is published.

The ONNX file runs under onnxruntime on texts tokenised by the tokenizer that will be
published (the `tokenizers` file the worker uses), as one padded batch and one text at a
time; `embedding` is compared with `SentenceTransformer.encode(normalize_embeddings=True)`
and `pooled` with the Transformer and Pooling modules run in PyTorch. The texts range from
one word to one long enough to be truncated at `max_seq_length`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.errors import ValidationFailed

#: Largest absolute difference accepted between ONNX and PyTorch outputs.
TOLERANCE = 1e-4

VALIDATION_TEXTS: tuple[str, ...] = (
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "Smart routing sends each inference task to a worker that already holds its model.",
    "Ünïcödé, emoji 🚀 and punctuation — do they survive tokenisation?",
    " ".join(f"word{i} of a very long document that must be truncated" for i in range(120)),
)


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of a successful validation."""

    max_abs_diff: float
    max_abs_diff_pooled: float
    texts: int
    seconds: float


def _reference(model: Any, texts: Sequence[str]) -> tuple[Any, Any]:
    import torch

    embedding = model.encode(
        list(texts),
        batch_size=len(texts),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = dict(preprocess(list(texts)))
    with torch.no_grad():
        pooled = model[1](model[0](features))["sentence_embedding"]
    return embedding, pooled.cpu().numpy()


def _encode(tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
    import numpy as np

    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def validate_onnx(
    model: Any,
    onnx_path: Path,
    tokenizer_path: Path,
    texts: Sequence[str] = VALIDATION_TEXTS,
    tolerance: float = TOLERANCE,
) -> ValidationReport:
    """Run `onnx_path` on `texts` and compare with `model`; raise ValidationFailed if off.

    `tokenizer_path` is the `tokenizer.json` to publish (with truncation and padding set).
    """
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    started = time.monotonic()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ref_embedding, ref_pooled = _reference(model, texts)

    worst = worst_pooled = 0.0
    batches = [list(range(len(texts)))] + [[i] for i in range(len(texts))]
    for rows in batches:
        embedding, pooled = session.run(None, _encode(tokenizer, [texts[i] for i in rows]))
        if not (np.isfinite(embedding).all() and np.isfinite(pooled).all()):
            raise ValidationFailed("the ONNX graph produced non-finite values")
        worst = max(worst, float(np.abs(embedding - ref_embedding[rows]).max()))
        worst_pooled = max(worst_pooled, float(np.abs(pooled - ref_pooled[rows]).max()))
    if worst > tolerance or worst_pooled > tolerance * max(1.0, float(np.abs(ref_pooled).max())):
        raise ValidationFailed(
            f"ONNX differs from SentenceTransformer: max abs diff {worst:.3g} (embedding), "
            f"{worst_pooled:.3g} (pooled); tolerance {tolerance:g}"
        )
    return ValidationReport(worst, worst_pooled, len(texts), time.monotonic() - started)
