"""Triton Python backend model: runs the model.onnx next to this file with onnxruntime.

Written by the smart-routing uploader. Inputs `input_ids` and `attention_mask` (INT64
[batch, seq]); outputs `embedding` and `pooled` (FP32 [batch, dim]).

`execute` gets every request Triton's dynamic batcher gathered (one when the config has
no `dynamic_batching`). Requests may differ in sequence length (the inputs are ragged), and
so do the rows of one request: every row is cut to its own length (its last unmasked
token), the rows of all requests are sorted by length and grouped so that padding a group
to its longest row wastes at most `PADDING_SLACK` of its cells (`length_groups`), each
group runs in ONE onnxruntime call padded with id 0 / mask 0 (which the graph's attention
and mean pooling ignore), and the rows go back to their requests in order. On a CPU a
batch costs rows x longest sequence, so padding 4-token texts to 20 would cost more than
the batching saves; on any device it keeps a ragged batch from paying for its longest
text. A malformed request gets its own TritonError; if a batched run fails, each request
is run alone so one bad request does not fail the others. The config parameter
`intra_op_num_threads` (default 1) sizes onnxruntime's thread pool; its idle threads do
not spin (`allow_spinning` 0), since on a small shared CPU a spinning pool takes the cores
the worker and tritonserver need.

Self-contained on purpose: Triton's Python backend runs this file with only numpy and
onnxruntime at hand (no smart-routing package).
"""

import json
import os
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

OUTPUTS = ("embedding", "pooled")
#: A group's padding (cells beyond each row's length) may be at most this share of its
#: real cells before a longer row starts a new group.
PADDING_SLACK = 0.25


def _inputs(request):
    """The request's (input_ids, attention_mask) as equal-shaped INT64 [rows, seq] arrays."""
    input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids")
    attention_mask = pb_utils.get_input_tensor_by_name(request, "attention_mask")
    if input_ids is None or attention_mask is None:
        raise ValueError("inputs input_ids and attention_mask are both required")
    ids = np.asarray(input_ids.as_numpy(), dtype=np.int64)
    mask = np.asarray(attention_mask.as_numpy(), dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] == 0:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes"
            " of at least one row"
        )
    return ids, mask


def row_lengths(mask):
    """Per row of `mask` [rows, seq]: one past its last nonzero position (0 if none)."""
    seq = mask.shape[1]
    nonzero = mask != 0
    last = seq - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0)


def length_groups(lengths, slack=PADDING_SLACK):
    """Row indices grouped for padded runs: sorted by length; a row joins the current group
    while (rows x longest) stays within (1 + slack) x the group's real cells."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    cells = 0
    for index in order:
        length = max(1, int(lengths[index]))
        if current and (len(current) + 1) * length > (1 + slack) * (cells + length):
            groups.append(current)
            current, cells = [], 0
        current.append(index)
        cells += length
    if current:
        groups.append(current)
    return groups


def _response(embedding, pooled):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("embedding", np.ascontiguousarray(embedding, dtype=np.float32)),
            pb_utils.Tensor("pooled", np.ascontiguousarray(pooled, dtype=np.float32)),
        ]
    )


def _error(exc):
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
    )


class TritonPythonModel:
    """The model Triton's Python backend instantiates once per instance."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {
            key: value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
        }
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_num_threads", "1") or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )

    def _run(self, ids, mask):
        embedding, pooled = self.session.run(
            list(OUTPUTS), {"input_ids": ids, "attention_mask": mask}
        )
        return embedding, pooled

    def _run_batch(self, parsed):
        """Every (ids, mask) of `parsed` in length groups, one onnxruntime call each; the
        rows per request, in order."""
        ids = [row for request_ids, _ in parsed for row in request_ids]
        mask = [row for _, request_mask in parsed for row in request_mask]
        lengths = np.concatenate([row_lengths(request_mask) for _, request_mask in parsed])
        # Filled by row below; every slot is set before it is read.
        embedding: list[Any] = [None] * len(ids)
        pooled: list[Any] = [None] * len(ids)
        for group in length_groups(lengths):
            width = max(1, max(int(lengths[i]) for i in group))
            group_ids = np.zeros((len(group), width), dtype=np.int64)
            group_mask = np.zeros((len(group), width), dtype=np.int64)
            for row, index in enumerate(group):
                cut = min(width, ids[index].shape[0])
                group_ids[row, :cut] = ids[index][:cut]
                group_mask[row, :cut] = mask[index][:cut]
            group_embedding, group_pooled = self._run(group_ids, group_mask)
            for row, index in enumerate(group):
                embedding[index] = group_embedding[row]
                pooled[index] = group_pooled[row]
        out: list[tuple[np.ndarray, np.ndarray]] = []
        start = 0
        for request_ids, _ in parsed:
            end = start + request_ids.shape[0]
            out.append((np.stack(embedding[start:end]), np.stack(pooled[start:end])))
            start = end
        return out

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed, positions = [], []
        for position, request in enumerate(requests):
            try:
                parsed.append(_inputs(request))
                positions.append(position)
            except Exception as exc:  # one bad request must not fail the others
                responses[position] = _error(exc)
        if parsed:
            try:
                results = self._run_batch(parsed)
            except Exception:
                # Run each alone, so an error belongs to the request that caused it.
                results = []
                for arrays in parsed:
                    try:
                        results.append(self._run(*arrays))
                    except Exception as exc:
                        results.append(exc)
            for position, result in zip(positions, results, strict=True):
                if isinstance(result, Exception):
                    responses[position] = _error(result)
                else:
                    responses[position] = _response(*result)
        return responses

    def finalize(self):
        self.session = None
