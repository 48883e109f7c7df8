"""Minimal SentenceTransformer → model repository exporter for the worker tests.

Used only while `uploader.convert.convert_model` is not importable. It writes the
layout of docs/interfaces.md section 1: config.pbtxt (Python backend), configs/python.pbtxt,
configs/onnxruntime.pbtxt, 1/model.onnx (mean pooling + L2 normalisation inside the graph),
1/model.py, tokenizer/ and smartrouting.json.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

MODEL_PY = '''"""Triton Python backend: runs 1/model.onnx with onnxruntime."""

import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        threads = int(os.environ.get("SMARTROUTING_ORT_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            embedding, pooled = self.session.run(
                ["embedding", "pooled"],
                {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)},
            )
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("embedding", embedding.astype(np.float32)),
                        pb_utils.Tensor("pooled", pooled.astype(np.float32)),
                    ]
                )
            )
        return responses

    def finalize(self):
        self.session = None
'''


def _config(backend_line: str, max_batch_size: int, dim: int, instance: str) -> str:
    tensors_in = "\n".join(
        f'  {{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}{"," if i == 0 else ""}'
        for i, n in enumerate(("input_ids", "attention_mask"))
    )
    tensors_out = "\n".join(
        f'  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {dim} ] }}{"," if i == 0 else ""}'
        for i, n in enumerate(("embedding", "pooled"))
    )
    return (
        f"{backend_line}\nmax_batch_size: {max_batch_size}\n"
        f"input [\n{tensors_in}\n]\noutput [\n{tensors_out}\n]\n"
        f"instance_group [ {{ count: 1 kind: {instance} }} ]\n"
    )


def convert_model(
    source: str | Path,
    repository: str | Path,
    model_name: str | None = None,
    max_batch_size: int = 32,
    overwrite: bool = False,
) -> Path:
    """Convert the SentenceTransformer at `source` into `repository/model_name`; return its dir."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from sentence_transformers import SentenceTransformer

    repository = Path(repository)
    name = model_name or "all-MiniLM-L6-v2"
    target = repository / name
    if target.exists() and not overwrite:
        return target
    st = SentenceTransformer(str(source), device="cpu")
    transformer: Any = st[0].auto_model  # type: ignore[union-attr]
    transformer.eval()
    dim = int(st.get_sentence_embedding_dimension() or 384)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):  # type: ignore[no-untyped-def]
            token_type_ids = torch.zeros_like(input_ids)
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return embedding, pooled

    tmp = repository / f".{name}.tmp-{time.time_ns()}"
    (tmp / "1").mkdir(parents=True)
    (tmp / "configs").mkdir()
    onnx_path = tmp / "1" / "model.onnx"
    encoded = st.tokenizer(
        ["hello world", "a longer sentence here"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(),
            (encoded["input_ids"], encoded["attention_mask"]),
            str(onnx_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding", "pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"},
                "pooled": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    texts = ["short", "a somewhat longer sentence with more tokens in it", "x " * 50]
    enc = st.tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(
        ["embedding"],
        {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        },
    )[0]
    want = st.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    diff = float(np.abs(got - want).max())
    assert diff < 1e-4, diff
    (tmp / "1" / "model.py").write_text(MODEL_PY)
    python_cfg = _config('backend: "python"', max_batch_size, dim, "KIND_CPU")
    (tmp / "config.pbtxt").write_text(python_cfg)
    (tmp / "configs" / "python.pbtxt").write_text(python_cfg)
    (tmp / "configs" / "onnxruntime.pbtxt").write_text(
        _config('platform: "onnxruntime_onnx"', max_batch_size, dim, "KIND_GPU")
    )
    st.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    meta = {
        "model_id": str(source),
        "model_name": name,
        "dimension": dim,
        "max_batch_size": max_batch_size,
        "max_seq_length": int(st.max_seq_length or 256),
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["embedding", "pooled"],
        "source": str(source),
        "created_unix": time.time(),
        "validation_max_abs_diff": diff,
        "onnx_bytes": onnx_path.stat().st_size,
    }
    (tmp / "smartrouting.json").write_text(json.dumps(meta, indent=2))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
