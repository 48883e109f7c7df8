"""`python -m worker.measure`: the real costs the simulated engine is calibrated from.

Per engine (triton, onnxruntime): model load time, unload time (for Triton: until the
repository index shows the model UNAVAILABLE), `embed_texts` latency for 1 and 8 texts
(tokenisation included), and memory per loaded model (Triton: RSS of the model's
Python-backend stub process; onnxruntime: RSS growth of this process on the first load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.engines.base import TensorEngine
from worker.repository import ModelRepository

SENTENCE = "Smart routing sends each inference task to a worker that already holds its model."


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def stub_pids(parent: int) -> list[int]:
    """Python-backend stub processes started by tritonserver `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if b"triton_python_backend_stub" in cmdline and ppid == parent:
            found.append(int(entry.name))
    return found


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean": round(statistics.fmean(ordered), 2),
        "stdev": round(statistics.stdev(ordered), 2) if len(ordered) > 1 else 0.0,
        "p50": round(ordered[len(ordered) // 2], 2),
        "min": round(ordered[0], 2),
    }


async def measure_engine(engine: TensorEngine, label: str, repeats: int) -> dict[str, Any]:
    """Load/unload `label` `repeats` times and time tasks of 1 and 8 texts."""
    from worker.engines.triton import TritonEngine

    await engine.start()
    loads, unloads, memory = [], [], []
    runs: dict[int, list[float]] = {1: [], 8: []}
    try:
        for _ in range(repeats):
            before = rss_mb()
            started = time.perf_counter()
            await engine.load(label)
            loads.append((time.perf_counter() - started) * 1000)
            await engine.embed(label, [SENTENCE], True)  # warm-up
            for n in runs:
                for _ in range(10):
                    started = time.perf_counter()
                    await engine.embed(label, [SENTENCE] * n, True)
                    runs[n].append((time.perf_counter() - started) * 1000)
            if isinstance(engine, TritonEngine) and engine.process.pid is not None:
                memory.append(sum(rss_mb(p) for p in stub_pids(engine.process.pid)))
            elif not memory:
                # In-process: only the first load's growth is meaningful; later loads reuse
                # memory the allocator kept after the previous unload.
                memory.append(rss_mb() - before)
            started = time.perf_counter()
            await engine.unload(label)
            unloads.append((time.perf_counter() - started) * 1000)
    finally:
        await engine.stop()
    return {
        "engine": engine.name,
        "device": engine.device,
        "load_ms": _summary(loads),
        "unload_ms": _summary(unloads),
        "run_1_text_ms": _summary(runs[1]),
        "run_8_texts_ms": _summary(runs[8]),
        "memory_per_model_mb": _summary(memory),
    }


def build(engine: str, repo: Path, state_dir: Path) -> TensorEngine:
    """A real engine by name."""
    repository = ModelRepository(repo)
    if engine == "triton":
        from worker.engines.triton import TritonEngine

        return TritonEngine(repository, state_dir=state_dir)
    from worker.engines.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine(repository)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the measurements as JSON (one object per engine)."""
    parser = argparse.ArgumentParser(prog="python -m worker.measure", description=__doc__)
    parser.add_argument(
        "--model-repository", type=Path, default=Path(os.environ.get("MODEL_REPOSITORY", ""))
    )
    parser.add_argument("--label", required=True)
    parser.add_argument("--engine", choices=["triton", "onnxruntime", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    engines = ["triton", "onnxruntime"] if args.engine == "all" else [args.engine]
    with tempfile.TemporaryDirectory(prefix="worker-measure-") as state:
        for name in engines:
            engine = build(name, args.model_repository, Path(state) / name)
            result = asyncio.run(measure_engine(engine, args.label, args.repeats))
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
