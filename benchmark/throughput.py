"""`python -m benchmark throughput`: one hot label on ONE worker, N concurrent callers.

For each setup (engine x slots x batching) a fresh local cluster is started (dispatcher +
one worker of capacity 1 holding one label, the real all-MiniLM-L6-v2), then for each
number of callers and texts per task the callers post `embed_texts` to `/run-task` in a
closed loop (each sends its next task when the previous answer arrives) for a warm-up and
a measured window. A cell reports tasks/s and texts/s (answers completed in the window),
p50/p99 client latency, and failures.

Each cell also reports the CPU time spent per text by every part (`CPU_PARTS`: the callers,
i.e. this process; the dispatcher; the worker; the engine, i.e. the worker's child
processes: tritonserver and its Python-backend stubs), read from /proc before and after the
window. On a machine shared with other work, texts/s and latencies swing with the load
while CPU per text barely does, so compare setups by it (and compare rates only between
setups measured in the same minute).

Batching off/on means: for the triton engine the label's `config.pbtxt` without or with
`dynamic_batching` (written here with the uploader's `write_configs`); for the onnxruntime
engine the worker's `--no-batching` or `--batching` (its in-worker `MicroBatcher`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from benchmark.cluster import ClusterConfig, LocalCluster
from benchmark.errors import BenchmarkError
from benchmark.models import register_label
from benchmark.results import percentile

TensorEngineName = Literal["triton", "onnxruntime"]
Batching = Literal["off", "on"]
LABEL = "minilm"

#: Sentences the callers draw their texts from (different lengths, so batches are ragged).
SENTENCES = [
    "Smart routing sends each task to a worker that already holds its model.",
    "Loading a model costs far more than running a task on it.",
    "short text",
    "The dynamic batcher joins concurrent requests of one model into one run.",
    "GPU",
    "A hot label's callers should not queue one by one behind each other.",
    "Embeddings of sentences of different lengths are padded to the longest in a batch.",
    "Triton Inference Server runs the ONNX graph in its Python backend on this CPU.",
]


@dataclass(frozen=True)
class Setup:
    """One cluster: the worker's engine, its slots, batching off or on."""

    engine: TensorEngineName
    slots: int
    batching: Batching


@dataclass
class Cell:
    """One measurement: a setup under `callers` concurrent callers of `texts` texts each."""

    engine: str
    slots: int
    batching: str
    callers: int
    texts: int
    tasks: int = 0
    failed: int = 0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: list[str] = field(default_factory=list)
    #: CPU milliseconds per text answered in the window, per part of `CPU_PARTS`.
    cpu_ms_per_text: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_ms_total(self) -> float:
        return sum(self.cpu_ms_per_text.values())

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.tasks_per_s * self.texts

    def to_json(self) -> dict[str, Any]:
        """The cell with its rates, for results.json."""
        return {
            **asdict(self),
            "tasks_per_s": self.tasks_per_s,
            "texts_per_s": self.texts_per_s,
            "cpu_ms_total": self.cpu_ms_total,
        }


#: The parts whose CPU time a cell reports, in table order.
CPU_PARTS = ("callers", "dispatcher", "worker", "engine")


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of user + system) of every process in /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command name, which may hold spaces: ") state ppid ...".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return stats


def cpu_seconds(dispatcher_pid: int | None, worker_pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by each of `CPU_PARTS` (empty where /proc is missing)."""
    if not Path("/proc/self/stat").is_file():
        return {}
    stats = _proc_stats()
    used = {"callers": time.process_time()}
    for part, pid in (("dispatcher", dispatcher_pid), ("worker", worker_pid)):
        if pid is not None and pid in stats:
            used[part] = stats[pid][1]
    engine, frontier = 0.0, {worker_pid} if worker_pid is not None else set()
    while frontier:  # the worker's descendants: tritonserver, its stubs
        children = {pid for pid, (parent, _) in stats.items() if parent in frontier}
        engine += sum(stats[pid][1] for pid in children)
        frontier = children
    used["engine"] = engine
    return used


@dataclass
class ThroughputConfig:
    """What to measure; every combination of the tuples is run."""

    engines: Sequence[TensorEngineName] = ("triton", "onnxruntime")
    slots: Sequence[int] = (1, 64)
    batching: Sequence[Batching] = ("off", "on")
    callers: Sequence[int] = (1, 8, 32, 64)
    texts: Sequence[int] = (1, 8)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    batch_delay_ms: float = 2.0
    run_dir: Path | None = None
    #: The converted model entry to copy (None: benchmark.models.converted_model()).
    model_entry: Path | None = None
    ready_timeout_s: float = 180.0
    seed: int = 1

    def setups(self) -> Iterator[Setup]:
        for engine, slots, batching in itertools.product(self.engines, self.slots, self.batching):
            yield Setup(engine, slots, batching)


def prepare_repository(entry: Path, repository: Path, batch_delay_ms: float | None) -> Path:
    """`repository/LABEL`: a copy of `entry` whose configs batch (or not) as asked."""
    from uploader.repository import write_configs

    target = register_label(entry, repository, LABEL)
    metadata = json.loads((target / "smartrouting.json").read_text())
    write_configs(
        target,
        int(metadata["dimension"]),
        int(metadata["max_batch_size"]),
        batch_delay_ms=batch_delay_ms,
    )
    return target


def task_body(texts: int, rng: random.Random) -> dict[str, Any]:
    """One `/run-task` body of `texts` texts drawn from SENTENCES."""
    chosen = [rng.choice(SENTENCES) for _ in range(texts)]
    return {
        "task_type": "embed_texts",
        "label": LABEL,
        "parameters_json": json.dumps({"texts": chosen}),
    }


async def drive(
    base_url: str,
    callers: int,
    texts: int,
    warmup_s: float,
    duration_s: float,
    seed: int = 1,
    on_window: Callable[[], None] | None = None,
) -> tuple[list[float], int, float, list[str]]:
    """Closed-loop callers for warm-up + duration; (latencies_s, failed, window_s, errors).

    Only answers completed inside the measured window count; a task still running at its
    end is awaited (so no connection is cut) but not counted. `on_window` is called when
    the measured window opens (the CPU counters are read then).
    """
    latencies: list[float] = []
    errors: list[str] = []
    failed = 0
    limits = httpx.Limits(max_connections=callers + 4, max_keepalive_connections=callers + 4)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120.0) as client:
        started = time.monotonic()
        window_start = started + warmup_s
        window_end = window_start + duration_s

        async def caller(index: int) -> None:
            nonlocal failed
            rng = random.Random(seed * 1000 + index)
            while time.monotonic() < window_end:
                body = task_body(texts, rng)
                sent = time.monotonic()
                try:
                    answer = await client.post("/run-task", json=body)
                    ok = answer.status_code == 200
                    problem = "" if ok else f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, repr(exc)
                done = time.monotonic()
                if not window_start <= done <= window_end:
                    continue
                if ok:
                    latencies.append(done - sent)
                else:
                    failed += 1
                    if len(errors) < 5:
                        errors.append(problem)

        async def open_window() -> None:
            await asyncio.sleep(max(0.0, window_start - time.monotonic()))
            if on_window is not None:
                on_window()

        await asyncio.gather(open_window(), *(caller(i) for i in range(callers)))
    return latencies, failed, duration_s, errors


def measure(
    base_url: str,
    setup: Setup,
    callers: int,
    texts: int,
    cfg: ThroughputConfig,
    pids: tuple[int | None, int | None] = (None, None),
) -> Cell:
    """One cell on a running cluster; `pids`: the dispatcher's and the worker's, for CPU."""
    before: dict[str, float] = {}

    def window_opens() -> None:
        before.update(cpu_seconds(*pids))

    latencies, failed, seconds, errors = asyncio.run(
        drive(base_url, callers, texts, cfg.warmup_s, cfg.duration_s, cfg.seed, window_opens)
    )
    after = cpu_seconds(*pids)
    cell = Cell(setup.engine, setup.slots, setup.batching, callers, texts)
    cell.tasks, cell.failed, cell.seconds, cell.errors = len(latencies), failed, seconds, errors
    answered = cell.tasks * texts
    if answered and before:
        cell.cpu_ms_per_text = {
            part: (after[part] - before[part]) * 1000.0 / answered
            for part in CPU_PARTS
            if part in before and part in after
        }
    if latencies:
        cell.p50_ms = percentile(latencies, 50) * 1000.0
        cell.p99_ms = percentile(latencies, 99) * 1000.0
    return cell


def _worker_args(setup: Setup, cfg: ThroughputConfig) -> list[str]:
    args = ["--slots", str(setup.slots), "--batch-delay-ms", str(cfg.batch_delay_ms)]
    args.append("--batching" if setup.batching == "on" else "--no-batching")
    return args


def run_setup(setup: Setup, cfg: ThroughputConfig, repository: Path, run_dir: Path) -> list[Cell]:
    """Start a cluster for `setup`, measure every (callers, texts) cell, stop it."""
    name = f"{setup.engine}-slots{setup.slots}-batching-{setup.batching}"
    cluster_cfg = ClusterConfig(
        run_dir=run_dir / name,
        workers=1,
        capacity=1,
        engine=setup.engine,
        model_repository=repository,
        worker_args=_worker_args(setup, cfg),
        ready_timeout_s=cfg.ready_timeout_s,
        stop_timeout_s=30.0,
    )
    cells = []
    with LocalCluster(cluster_cfg) as cluster:
        # The first task loads the label; every measured one is a hit.
        first = httpx.post(
            f"{cluster.base_url}/run-task",
            json=task_body(1, random.Random(0)),
            timeout=cfg.ready_timeout_s,
        )
        if first.status_code != 200:
            raise BenchmarkError(f"{name}: the first task failed: {first.text[:500]}")
        pids = {child.name: child.pid for child in cluster.children}
        tracked = (pids.get("dispatcher"), pids.get("worker-w-0"))
        for callers, texts in itertools.product(cfg.callers, cfg.texts):
            cells.append(measure(cluster.base_url, setup, callers, texts, cfg, tracked))
            cluster.check_alive()
    return cells


def run_throughput(
    cfg: ThroughputConfig, progress: Callable[[str], None] | None = print
) -> list[Cell]:
    """Run every setup of `cfg`; the cells in order."""
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="smartrouting-throughput-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.model_entry is not None:
        entry = cfg.model_entry
    else:
        from benchmark.models import converted_model

        entry = converted_model(progress=progress is not None)
    repositories = {
        "off": prepare_repository(entry, run_dir / "models-batching-off", None).parent,
        "on": prepare_repository(entry, run_dir / "models-batching-on", cfg.batch_delay_ms).parent,
    }
    cells: list[Cell] = []
    for setup in cfg.setups():
        if progress is not None:
            progress(f"-- {setup.engine}, slots {setup.slots}, batching {setup.batching}")
        for cell in run_setup(setup, cfg, repositories[setup.batching], run_dir):
            cells.append(cell)
            if progress is not None:
                progress(render_row(cell))
    return cells


HEADER = (
    "| engine | slots | batching | callers | texts/task | tasks/s | texts/s | p50 ms | p99 ms "
    "| failed | CPU ms/text: callers / dispatcher / worker / engine = total |\n"
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def render_row(cell: Cell) -> str:
    """One markdown table row."""
    cpu = " / ".join(f"{cell.cpu_ms_per_text.get(part, float('nan')):.1f}" for part in CPU_PARTS)
    return (
        f"| {cell.engine} | {cell.slots} | {cell.batching} | {cell.callers} | {cell.texts} "
        f"| {cell.tasks_per_s:.1f} | {cell.texts_per_s:.1f} | {cell.p50_ms:.1f} "
        f"| {cell.p99_ms:.1f} | {cell.failed} | {cpu} = {cell.cpu_ms_total:.1f} |"
    )


def render_table(cells: Sequence[Cell]) -> str:
    """Every cell as one markdown table."""
    return "\n".join([HEADER, *(render_row(c) for c in cells)])


def _find(cells: Sequence[Cell], **match: object) -> Cell | None:
    for cell in cells:
        if all(getattr(cell, key) == value for key, value in match.items()):
            return cell
    return None


def checks(cells: Sequence[Cell], callers: int = 32) -> list[str]:
    """The issue's two questions, per engine and texts per task, as sentences.

    At `callers` callers on the most slots measured: texts/s with batching on over off
    (wanted: >= 2); p99 with batching on over the single-caller p99 (wanted: <= 2).
    """
    lines = []
    most = max((c.slots for c in cells), default=1)
    for engine, texts in sorted({(c.engine, c.texts) for c in cells}):
        on = _find(cells, engine=engine, texts=texts, slots=most, batching="on", callers=callers)
        off = _find(cells, engine=engine, texts=texts, slots=most, batching="off", callers=callers)
        single = _find(cells, engine=engine, texts=texts, slots=most, batching="on", callers=1)
        if on is None or off is None or single is None or off.texts_per_s == 0:
            continue
        gain = on.texts_per_s / off.texts_per_s
        p99 = on.p99_ms / single.p99_ms if single.p99_ms > 0 else float("nan")
        line = (
            f"{engine}, {texts} text(s)/task, {callers} callers, slots {most}: batching on gives "
            f"{gain:.2f}x the texts/s of off ({'>=' if gain >= 2 else '<'} 2x); p99 "
            f"{on.p99_ms:.0f} ms is {p99:.1f}x the single-caller p99 {single.p99_ms:.0f} ms "
            f"({'<=' if p99 <= 2 else '>'} 2x)"
        )
        if on.cpu_ms_total > 0 and off.cpu_ms_total > 0:
            line += (
                f"; CPU per text {off.cpu_ms_total:.1f} ms off, {on.cpu_ms_total:.1f} ms on "
                f"({off.cpu_ms_total / on.cpu_ms_total:.2f}x less)"
            )
        lines.append(line)
    return lines


def write_json(cells: Sequence[Cell], cfg: ThroughputConfig, path: Path) -> None:
    """results.json: the options and every cell."""
    options = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in asdict(cfg).items()
        if key not in ("run_dir", "model_entry")
    }
    data = {"options": options, "cells": [c.to_json() for c in cells], "checks": checks(cells)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
