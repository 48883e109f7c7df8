"""The engine interface: what the runtime needs from Triton, ONNX Runtime or a simulation.

An engine loads and unloads labels and runs tasks on loaded ones. It does no cache
bookkeeping (worker/cache.py does); it reports labels it lost on its own (e.g. a
tritonserver that died) through `on_labels_lost`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from worker.errors import InferenceError, ModelNotFoundError
from worker.repository import ModelInfo, ModelRepository
from worker.tokenization import TextTokenizer

LabelsLostCallback = Callable[[list[str], str], None]
Array = np.ndarray[Any, Any]


class Engine(abc.ABC):
    """Base of every engine."""

    name: ClassVar[str]
    task_types: ClassVar[tuple[str, ...]] = ("embed_texts", "sample_task")
    #: Whether any valid label goes (the simulated engine); else `available_labels()` lists
    #: what this engine serves, and the worker's Hello declares exactly that.
    serves_any_label: ClassVar[bool] = False

    def __init__(self) -> None:
        self.device = "cpu"
        #: Called with (labels, reason) when the engine lost labels by itself.
        self.on_labels_lost: LabelsLostCallback | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to load models (start a server, open a session pool)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release everything; safe to call twice."""

    @abc.abstractmethod
    def check_label(self, label: str) -> None:
        """Raise ModelNotFoundError unless `label` can be loaded."""

    @abc.abstractmethod
    async def load(self, label: str) -> None:
        """Load `label`; returns once it can run tasks."""

    @abc.abstractmethod
    async def unload(self, label: str) -> None:
        """Unload `label`; returns once its memory is free."""

    async def reload(self, label: str) -> None:
        """Load the repository's current version of the loaded `label` in place of the one
        serving it; tasks already running finish on the old one. Nothing by default."""
        return None  # engines without versions (simulated) have nothing to reload

    def model_version(self, label: str) -> str:
        """The version of `label` this engine serves ("" when it has no versions)."""
        return ""

    @abc.abstractmethod
    async def embed(
        self, label: str, texts: list[str], normalize: bool
    ) -> tuple[list[list[float]], int]:
        """Embeddings of `texts` on the loaded `label`, and their dimension."""

    async def embed_counted(
        self, label: str, texts: list[str], normalize: bool
    ) -> tuple[list[list[float]], int, int | None]:
        """`embed`, and the tokens the model's tokenizer made of `texts` (None: this engine
        has no tokenizer)."""
        embeddings, dim = await self.embed(label, texts, normalize)
        return embeddings, dim, None

    async def sample(self, label: str, run_ms: float | None) -> dict[str, Any]:
        """The simulated task type; engines that cannot simulate just sleep `run_ms`."""
        ms = float(run_ms or 0.0)
        await asyncio.sleep(ms / 1000.0)
        return {"label": label, "simulated": True, "run_ms": ms}

    def healthy(self) -> bool:
        """Whether tasks can run now."""
        return True

    def restarts(self) -> int:
        """Times the engine came back by itself after dying (a supervised server)."""
        return 0

    def model_memory_bytes(self) -> dict[str, int]:
        """Memory each loaded label takes, where the engine can tell (else empty)."""
        return {}

    def available_labels(self) -> list[str]:
        """Labels this engine could load (empty when any valid name goes, as simulated)."""
        return []

    def _lost(self, labels: list[str], reason: str) -> None:
        if self.on_labels_lost is not None:
            self.on_labels_lost(labels, reason)


def bucket_length(seq: int, limit: int) -> int:
    """`seq` rounded up to a power of two (at least 16), never past `max(seq, limit)`."""
    bucket = 16
    while bucket < seq:
        bucket *= 2
    return max(seq, min(bucket, limit))


class TensorEngine(Engine):
    """An engine that runs the repository's ONNX graph: tokenises, batches, infers."""

    #: Pad each request's sequence length to a `bucket_length`: a server that batches only
    #: requests of equal shape (Triton's ONNX Runtime backend) can then batch most of them.
    pad_to_buckets = False

    def __init__(self, repository: ModelRepository) -> None:
        super().__init__()
        self.repository = repository
        self._infos: dict[str, ModelInfo] = {}
        self._tokenizers: dict[str, TextTokenizer] = {}

    def check_label(self, label: str) -> None:
        self.info(label)

    def available_labels(self) -> list[str]:
        return self.repository.labels()

    def info(self, label: str) -> ModelInfo:
        """Cached metadata of `label` (MODEL_NOT_FOUND when absent)."""
        info = self._infos.get(label)
        if info is None:
            info = self.repository.info(label)
            self._infos[label] = info
        return info

    def model_version(self, label: str) -> str:
        info = self._infos.get(label)
        return info.version if info is not None else ""

    async def reload(self, label: str) -> None:
        """Re-read the metadata and load again: `load` of an engine that holds the label
        replaces it (Triton re-reads the config; onnxruntime swaps the session)."""
        self.forget(label)
        await self.load(label)

    def forget(self, label: str) -> None:
        """Drop cached metadata (after an unload, so a re-upload is seen)."""
        self._infos.pop(label, None)
        self._tokenizers.pop(label, None)

    def tokenizer(self, label: str) -> TextTokenizer:
        tok = self._tokenizers.get(label)
        if tok is None:
            info = self.info(label)
            if not info.tokenizer_path.is_file():
                raise ModelNotFoundError(f"model {label!r} has no tokenizer/tokenizer.json")
            tok = TextTokenizer.for_model(info)
            self._tokenizers[label] = tok
        return tok

    @abc.abstractmethod
    async def infer(
        self, label: str, input_ids: Array, attention_mask: Array
    ) -> tuple[Array, Array]:
        """Run the graph: (`embedding`, `pooled`), both FP32 `[batch, dim]`."""

    async def embed(
        self, label: str, texts: list[str], normalize: bool
    ) -> tuple[list[list[float]], int]:
        embeddings, dim, _ = await self.embed_counted(label, texts, normalize)
        return embeddings, dim

    async def embed_counted(
        self, label: str, texts: list[str], normalize: bool
    ) -> tuple[list[list[float]], int, int | None]:
        info = self.info(label)
        tok = self.tokenizer(label)
        out: list[list[float]] = []
        tokens = 0  # real tokens (the attention mask), after truncation, padding excluded
        step = info.max_batch_size
        for start in range(0, len(texts), step):
            ids, mask = tok(texts[start : start + step])
            if self.pad_to_buckets:
                width = bucket_length(ids.shape[1], info.max_seq_length)
                ids, mask = _pad(ids, width), _pad(mask, width)
            tokens += int(mask.sum())
            embedding, pooled = await self.infer(label, ids, mask)
            chosen = embedding if normalize else pooled
            if chosen.shape[0] != ids.shape[0]:
                raise InferenceError(
                    f"engine returned {chosen.shape[0]} rows for a batch of {ids.shape[0]}"
                )
            out.extend(chosen.astype(np.float32).tolist())
        dim = len(out[0]) if out else info.dimension
        return out, dim, tokens


def _pad(array: Array, width: int) -> Array:
    # Zeros: id 0 under attention mask 0, which the graph's attention and pooling ignore.
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=0)
