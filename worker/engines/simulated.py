"""SIMULATED engine, for benchmarks and scale tests only: no model, just sleeps.

Load and run times are drawn from normal distributions clipped at 0 and multiplied
by `time_scale`, from a seeded generator. The defaults below are the real costs
measured with `python -m worker.measure --repeats 5` on 2026-11-23 (Triton 2.51 from
nvidia-pytriton, Python backend running all-MiniLM-L6-v2 ONNX, shared 2-core CPU
machine; see worker/README.md): load 483 ± 154 ms, one task of one text 10.8 ± 4.1 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from worker.engines.base import Engine
from worker.errors import ModelNotFoundError
from worker.repository import valid_label

#: Measured (worker.measure, triton): load of the MiniLM label, mean and stddev, ms.
DEFAULT_LOAD_MS = 480.0
DEFAULT_LOAD_STDDEV_MS = 150.0
#: Measured (worker.measure, triton): `embed_texts` of one text in the worker, ms.
DEFAULT_RUN_MS = 11.0
DEFAULT_RUN_STDDEV_MS = 4.0
#: Dimension of the fake embeddings (all-MiniLM-L6-v2's).
SIMULATED_DIMENSION = 384


class SimulatedEngine(Engine):
    """Sleeps instead of working; labels are any valid name not starting with `missing`."""

    name = "simulated"
    serves_any_label = True

    def __init__(
        self,
        load_ms: float | None = None,
        load_stddev_ms: float | None = None,
        run_ms: float | None = None,
        run_stddev_ms: float | None = None,
        time_scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.load_ms = DEFAULT_LOAD_MS if load_ms is None else load_ms
        self.load_stddev_ms = DEFAULT_LOAD_STDDEV_MS if load_stddev_ms is None else load_stddev_ms
        self.run_ms = DEFAULT_RUN_MS if run_ms is None else run_ms
        self.run_stddev_ms = DEFAULT_RUN_STDDEV_MS if run_stddev_ms is None else run_stddev_ms
        self.time_scale = time_scale
        self.rng = random.Random(seed)
        self.loaded: set[str] = set()

    def draw(self, mean_ms: float, stddev_ms: float) -> float:
        """A cost in seconds: N(mean, stddev) clipped at 0, times the time scale."""
        ms = max(0.0, self.rng.gauss(mean_ms, stddev_ms)) if stddev_ms > 0 else max(0.0, mean_ms)
        return ms * self.time_scale / 1000.0

    async def start(self) -> None:
        self.device = "simulated"

    async def stop(self) -> None:
        self.loaded.clear()

    def check_label(self, label: str) -> None:
        if not valid_label(label) or label.startswith("missing"):
            raise ModelNotFoundError(f"model {label!r} not found (simulated engine)")

    async def load(self, label: str) -> None:
        self.check_label(label)
        await asyncio.sleep(self.draw(self.load_ms, self.load_stddev_ms))
        self.loaded.add(label)

    async def unload(self, label: str) -> None:
        self.loaded.discard(label)

    async def sample(self, label: str, run_ms: float | None) -> dict[str, Any]:
        seconds = (
            self.draw(self.run_ms, self.run_stddev_ms)
            if run_ms is None
            else run_ms * self.time_scale / 1000.0
        )
        await asyncio.sleep(seconds)
        return {"label": label, "simulated": True, "run_ms": seconds * 1000.0}

    async def embed(
        self, label: str, texts: list[str], normalize: bool
    ) -> tuple[list[list[float]], int]:
        """Deterministic fake unit vectors (hash of label and text); costs one run draw."""
        await asyncio.sleep(self.draw(self.run_ms, self.run_stddev_ms))
        out = []
        for text in texts:
            seed = hashlib.sha256(f"{label}\0{text}".encode()).digest()
            rng = random.Random(seed)
            vec = [rng.gauss(0.0, 1.0) for _ in range(SIMULATED_DIMENSION)]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            out.append([v / norm for v in vec] if normalize else vec)
        return out, SIMULATED_DIMENSION
