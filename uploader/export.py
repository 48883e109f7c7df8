"""Export a SentenceTransformer to one self-contained ONNX graph with pooling inside.

The graph (docs/interfaces.md section 1):

- inputs `input_ids`, `attention_mask`: INT64 `[batch, seq]`, both axes dynamic;
  token type ids are zeros built inside the graph;
- outputs `embedding` (mean pooled over the attention mask, L2-normalised) and
  `pooled` (mean pooled, not normalised): FP32 `[batch, dim]`.

Uses the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`): it handles the
Hugging Face encoders with dynamic axes in about two seconds for MiniLM.
"""

from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.errors import ConversionError, UnsupportedModel

#: ONNX opset written; the Triton 2.51 ONNX Runtime backend and onnxruntime>=1.18 run it.
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("embedding", "pooled")

_DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "seq"},
    "attention_mask": {0: "batch", 1: "seq"},
    "embedding": {0: "batch"},
    "pooled": {0: "batch"},
}
# Two texts of different lengths, so the traced graph sees padding.
_SAMPLE_TEXTS = ["a short one", "a somewhat longer sentence for tracing the exporter"]


@dataclass(frozen=True)
class ExportReport:
    """What the export wrote."""

    path: Path
    dimension: int
    onnx_bytes: int
    seconds: float


def _pooling_module(auto_model: Any) -> Any:
    import torch
    import torch.nn.functional as F

    accepts_token_types = "token_type_ids" in inspect.signature(auto_model.forward).parameters

    class MeanPooledEncoder(torch.nn.Module):
        """Transformer → mean pooling over the attention mask → (normalised, raw)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = auto_model

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if accepts_token_types:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            tokens = self.model(**kwargs)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=1), pooled

    return MeanPooledEncoder().eval()


def _fix_output_shapes(path: Path, dimension: int) -> None:
    """Write the static embedding size into the outputs' shapes (the tracer leaves a symbol)."""
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims) != 2:
            raise ConversionError(f"output {output.name} has rank {len(dims)}, expected 2")
        dims[1].Clear()
        dims[1].dim_value = dimension
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the exported graph is not valid ONNX: {exc}") from exc
    onnx.save(model, str(path))


def export_onnx(model: Any, path: Path) -> ExportReport:
    """Write `model` (a loaded SentenceTransformer) as one ONNX file at `path`.

    Raises UnsupportedModel when the first module has no Hugging Face model inside, and
    ConversionError when the exporter fails or writes external data files.
    """
    import torch

    started = time.monotonic()
    first = model[0]
    auto_model = getattr(first, "auto_model", None)
    if auto_model is None:
        raise UnsupportedModel(f"first module {type(first).__name__} has no auto_model")
    wrapper = _pooling_module(auto_model)
    sample = model.tokenizer(_SAMPLE_TEXTS, padding=True, return_tensors="pt")
    args = (sample["input_ids"].to(torch.int64), sample["attention_mask"].to(torch.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The TorchScript exporter warns about its own deprecation and about traced
        # Python branches in transformers; validation checks the result instead.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=_DYNAMIC_AXES,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ConversionError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    extra = sorted(p.name for p in path.parent.iterdir() if p != path)
    if extra:
        raise ConversionError(f"the exporter wrote external data files {extra}")
    with torch.no_grad():
        dimension = int(wrapper(*args)[0].shape[-1])
    _fix_output_shapes(path, dimension)
    return ExportReport(path, dimension, path.stat().st_size, time.monotonic() - started)
