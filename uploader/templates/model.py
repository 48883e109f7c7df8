"""Triton Python backend model: runs the model.onnx next to this file with onnxruntime.

Written by the smart-routing uploader. Inputs `input_ids` and `attention_mask` (INT64
[batch, seq]); outputs `embedding` and `pooled` (FP32 [batch, dim]).

`execute` gets every request Triton's dynamic batcher gathered (one when the config has
no `dynamic_batching`). Requests may differ in sequence length (the inputs are ragged):
they are padded to the longest one (id 0, attention mask 0, which the graph's attention
and mean pooling ignore), stacked, run in ONE onnxruntime call, and the rows are split
back per request in order. A malformed request gets its own TritonError; if the batched
run fails, each request is run alone so one bad request does not fail the others. The
config parameter `intra_op_num_threads` (default 1) sizes onnxruntime's thread pool.
"""

import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

OUTPUTS = ("embedding", "pooled")


def _inputs(request):
    """The request's (input_ids, attention_mask) as equal-shaped INT64 [rows, seq] arrays."""
    input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids")
    attention_mask = pb_utils.get_input_tensor_by_name(request, "attention_mask")
    if input_ids is None or attention_mask is None:
        raise ValueError("inputs input_ids and attention_mask are both required")
    ids = np.asarray(input_ids.as_numpy(), dtype=np.int64)
    mask = np.asarray(attention_mask.as_numpy(), dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes"
        )
    return ids, mask


def _pad(array, width):
    """`array` [rows, seq] right-padded with zeros to [rows, width]."""
    if array.shape[1] == width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=0)


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
        """One onnxruntime call for every (ids, mask) of `parsed`; the rows per request."""
        if len(parsed) == 1:
            return [self._run(*parsed[0])]
        width = max(ids.shape[1] for ids, _ in parsed)
        ids = np.concatenate([_pad(ids, width) for ids, _ in parsed])
        mask = np.concatenate([_pad(mask, width) for _, mask in parsed])
        embedding, pooled = self._run(ids, mask)
        out, start = [], 0
        for request_ids, _ in parsed:
            end = start + request_ids.shape[0]
            out.append((embedding[start:end], pooled[start:end]))
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
