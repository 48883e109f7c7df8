"""Triton engine: a supervised tritonserver, driven with tritonclient over HTTP.

The worker tokenises; Triton only sees `input_ids`/`attention_mask` INT64 and returns
`embedding`/`pooled` FP32. Which model config Triton uses is configuration, not code:
`python` (the default config.pbtxt: Python backend running the ONNX file, works with
the PyTriton build on CPU) or `onnxruntime` (`--model-config-name=onnxruntime`, the
ONNX Runtime backend of the full Triton image). Both configs enable Triton's dynamic
batching (uploader/repository.py): concurrent tasks of one label run as one batch in the
server. The Python backend takes requests of different sequence lengths together; for the
ONNX Runtime backend, which batches only equal shapes, sequences are padded to a few
bucket lengths (`TensorEngine.pad_to_buckets`).

On a GPU (`device` `cuda:*`) tritonserver also serves its own Prometheus metrics (GPU
utilisation and memory among them) on a port it logs; on the CPU they stay off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.engines.base import Array, TensorEngine
from worker.engines.triton_process import TritonProcess, TritonState, find_binary
from worker.errors import (
    EngineUnavailableError,
    InferenceError,
    ModelLoadError,
    WorkerError,
)
from worker.repository import ModelRepository

log = logging.getLogger(__name__)


class TritonEngine(TensorEngine):
    """Loads, unloads and runs labels on a tritonserver this engine starts and supervises."""

    name = "triton"

    def __init__(
        self,
        repository: ModelRepository,
        state_dir: Path,
        binary: Path | None = None,
        model_config: str = "python",
        device: str | None = None,
        ready_timeout_s: float = 60.0,
        unload_timeout_s: float = 30.0,
        log_to_stdout: bool = False,
    ) -> None:
        super().__init__(repository)
        self.process = TritonProcess(
            binary=find_binary(binary),
            model_repository=repository.root,
            state_dir=state_dir,
            model_config_name=None if model_config == "python" else model_config,
            ready_timeout_s=ready_timeout_s,
            on_death=self._on_death,
            metrics=(device or "").startswith("cuda"),
            log_to_stdout=log_to_stdout,
        )
        self.device = device or "cpu"
        # The ONNX Runtime backend's dynamic batcher joins only requests of equal shape.
        self.pad_to_buckets = model_config == "onnxruntime"
        self.unload_timeout_s = unload_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.loaded: set[str] = set()
        self._client: Any = None
        self._client_url = ""
        self._stale: list[Any] = []

    # -- process -------------------------------------------------------------

    async def start(self) -> None:
        await self.process.start()

    async def stop(self) -> None:
        await self._close_clients()
        await self.process.stop()
        self.loaded.clear()

    def healthy(self) -> bool:
        return self.process.state is TritonState.READY

    def restarts(self) -> int:
        return self.process.restarts

    def model_memory_bytes(self) -> dict[str, int]:
        """Resident memory of each label's Python-backend stub process (the ONNX Runtime
        backend runs inside tritonserver: no per-label figure, so empty)."""
        from worker.measure import rss_mb, stub_pids

        pid = self.process.pid
        if pid is None or self.process.state is not TritonState.READY:
            return {}
        root = self.repository.root.resolve()
        memory: dict[str, int] = {}
        for stub in stub_pids(pid):
            try:
                # The stub's first argument is its model file: <repository>/<label>/<n>/model.py
                model_file = Path(
                    Path(f"/proc/{stub}/cmdline").read_bytes().split(b"\0")[1].decode()
                )
                label = model_file.relative_to(root).parts[0]
                rss = rss_mb(stub)
            except (OSError, IndexError, ValueError):
                continue  # the stub exited meanwhile, or belongs to no label of ours
            if label in self.loaded:
                memory[label] = memory.get(label, 0) + int(rss * 1024 * 1024)
        return memory

    def _on_death(self, code: int | None) -> None:
        gone = sorted(self.loaded)
        self.loaded.clear()
        if self._client is not None:
            self._stale.append(self._client)
            self._client = None
        self._lost(gone, f"tritonserver died (exit {code}); restarting")

    async def _close_clients(self) -> None:
        clients = [*self._stale, *([self._client] if self._client is not None else [])]
        self._stale.clear()
        self._client = None
        for client in clients:
            try:
                await client.close()
            except Exception:  # a dead server's session closes with errors
                log.debug("closing a tritonclient failed", exc_info=True)

    async def client(self) -> Any:
        """A tritonclient for the current server (its port changes across restarts)."""
        import tritonclient.http.aio as httpclient

        await self.process.wait_ready(self.ready_timeout_s)
        if self._stale:
            await self._close_clients()
        if self._client is None or self._client_url != self.process.http_url:
            if self._client is not None:
                await self._client.close()
            self._client = httpclient.InferenceServerClient(self.process.http_url)
            self._client_url = self.process.http_url
        return self._client

    def _wrap(self, exc: Exception, what: str, error: type[WorkerError]) -> WorkerError:
        if self.process.state is not TritonState.READY:
            return EngineUnavailableError(f"{what}: tritonserver is {self.process.state.value}")
        return error(f"{what}: {exc}")

    # -- models --------------------------------------------------------------

    async def load(self, label: str) -> None:
        self.info(label)
        self.tokenizer(label)
        client = await self.client()
        try:
            await client.load_model(label)
        except Exception as exc:
            raise self._wrap(exc, f"triton could not load {label!r}", ModelLoadError) from exc
        self.loaded.add(label)

    async def unload(self, label: str) -> None:
        """Unload and wait until the repository index shows the label UNAVAILABLE."""
        self.loaded.discard(label)
        self.forget(label)
        if self.process.state is not TritonState.READY:
            return  # a dead or restarting server holds no models
        client = await self.client()
        try:
            await client.unload_model(label)
            deadline = time.monotonic() + self.unload_timeout_s
            while time.monotonic() < deadline:
                if await self.model_state(label) in (None, "UNAVAILABLE"):
                    return
                await asyncio.sleep(0.05)
        except Exception as exc:
            if self.process.state is not TritonState.READY:
                return
            raise InferenceError(f"triton could not unload {label!r}: {exc}") from exc
        raise InferenceError(f"triton did not finish unloading {label!r} in time")

    async def repository_index(self) -> dict[str, str]:
        """Triton's view: label → state (READY, UNAVAILABLE, LOADING, UNLOADING, ...)."""
        client = await self.client()
        index = await client.get_model_repository_index()
        return {entry["name"]: entry.get("state", "") for entry in index}

    async def model_state(self, label: str) -> str | None:
        """One label's state in Triton's repository index; None when not listed."""
        return (await self.repository_index()).get(label)

    async def infer(
        self, label: str, input_ids: Array, attention_mask: Array
    ) -> tuple[Array, Array]:
        import tritonclient.http.aio as httpclient

        client = await self.client()
        inputs = []
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [
            httpclient.InferRequestedOutput("embedding", binary_data=True),
            httpclient.InferRequestedOutput("pooled", binary_data=True),
        ]
        try:
            result = await client.infer(label, inputs, outputs=outputs)
        except Exception as exc:
            raise self._wrap(exc, f"triton inference on {label!r} failed", InferenceError) from exc
        embedding = result.as_numpy("embedding")
        pooled = result.as_numpy("pooled")
        if embedding is None or pooled is None:
            raise InferenceError(f"triton returned no embedding for {label!r}")
        return np.asarray(embedding, dtype=np.float32), np.asarray(pooled, dtype=np.float32)
