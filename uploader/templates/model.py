"""Triton Python backend model: runs the model.onnx next to this file with onnxruntime.

Written by the smart-routing uploader. Inputs `input_ids` and `attention_mask` (INT64
[batch, seq]); outputs `embedding` and `pooled` (FP32 [batch, dim]). Each request is run
on its own (sequence lengths differ between requests); an error in one request is
returned as that request's TritonError and does not affect the others. The config
parameter `intra_op_num_threads` (default 1) sizes onnxruntime's thread pool.
"""

import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

OUTPUTS = ("embedding", "pooled")


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

    def _run(self, request):
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
        embedding, pooled = self.session.run(
            list(OUTPUTS), {"input_ids": ids, "attention_mask": mask}
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("embedding", np.ascontiguousarray(embedding, dtype=np.float32)),
                pb_utils.Tensor("pooled", np.ascontiguousarray(pooled, dtype=np.float32)),
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except Exception as exc:  # one bad request must not fail the others
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[],
                        error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"),
                    )
                )
        return responses

    def finalize(self):
        self.session = None
