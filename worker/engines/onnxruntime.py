"""In-process ONNX Runtime engine: one InferenceSession per loaded label.

Uses the CUDA provider when onnxruntime-gpu finds a GPU, the CPU provider otherwise;
`device` reports which one the sessions actually got (`session.get_providers()`).
With `batch_delay_ms` set, concurrent inferences of one label are batched by a
`MicroBatcher` (worker/engines/batching.py), as Triton's dynamic batcher does for the
Triton engine; None runs each on its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from worker.engines.base import Array, TensorEngine
from worker.engines.batching import MicroBatcher
from worker.errors import EngineUnavailableError, InferenceError, ModelLoadError
from worker.repository import ModelRepository

log = logging.getLogger(__name__)


class OnnxRuntimeEngine(TensorEngine):
    """Runs `REPO/<label>/1/model.onnx` with onnxruntime inside the worker process."""

    name = "onnxruntime"

    def __init__(
        self,
        repository: ModelRepository,
        device: str | None = None,
        batch_delay_ms: float | None = None,
    ) -> None:
        super().__init__(repository)
        self._sessions: dict[str, Any] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        self._wanted_device = device
        self.batch_delay_ms = batch_delay_ms
        self.providers: list[str] = []

    def _providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        want_cpu = self._wanted_device is not None and self._wanted_device.startswith("cpu")
        if "CUDAExecutionProvider" in available and not want_cpu:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    async def start(self) -> None:
        self.providers = self._providers()
        self.device = "cuda:0" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    async def stop(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        self._sessions.clear()

    async def load(self, label: str) -> None:
        import onnxruntime as ort

        info = self.info(label)
        self.tokenizer(label)
        if not info.onnx_path.is_file():
            raise ModelLoadError(f"model {label!r} has no 1/model.onnx")

        def create() -> Any:
            options = ort.SessionOptions()
            # Idle pool threads sleep instead of spinning: on a small CPU shared with the
            # worker's event loop (and other processes) a spinning pool takes the cores
            # they need; measured on 2 cores: 5.7 vs 3.6 ms of CPU per text.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(info.onnx_path), options, providers=self.providers)

        try:
            session = await asyncio.to_thread(create)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime could not load {label!r}: {exc}") from exc
        got = session.get_providers()
        self.device = "cuda:0" if got and got[0] == "CUDAExecutionProvider" else "cpu"
        log.info("loaded %r with onnxruntime providers %s", label, got)
        self._sessions[label] = session
        if self.batch_delay_ms is not None:

            async def run(ids: Array, mask: Array) -> tuple[Array, Array]:
                return await self._run(label, ids, mask)

            old = self._batchers.get(label)
            self._batchers[label] = MicroBatcher(
                run, info.max_batch_size, self.batch_delay_ms / 1000.0, name=f"batch-{label}"
            )
            if old is not None:  # a reload: the old batcher's queued rows still run
                await old.close()

    async def unload(self, label: str) -> None:
        batcher = self._batchers.pop(label, None)
        if batcher is not None:
            await batcher.close()
        # Dropping the last reference frees the session's memory at once.
        self._sessions.pop(label, None)
        self.forget(label)

    def batcher(self, label: str) -> MicroBatcher | None:
        """The label's batcher; None when batching is off or the label is not loaded."""
        return self._batchers.get(label)

    async def infer(
        self, label: str, input_ids: Array, attention_mask: Array
    ) -> tuple[Array, Array]:
        batcher = self._batchers.get(label)
        if batcher is not None:
            return await batcher(input_ids, attention_mask)
        return await self._run(label, input_ids, attention_mask)

    async def _run(
        self, label: str, input_ids: Array, attention_mask: Array
    ) -> tuple[Array, Array]:
        session = self._sessions.get(label)
        if session is None:
            raise EngineUnavailableError(f"label {label!r} is not loaded")
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        try:
            embedding, pooled = await asyncio.to_thread(session.run, ["embedding", "pooled"], feeds)
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed on {label!r}: {exc}") from exc
        return np.asarray(embedding), np.asarray(pooled)
