"""`python -m benchmark simulate`: a seeded trace through the REAL dispatcher core, in virtual time.

The trace is built from the same options as `run` (`benchmark.trace`); each policy variant
(random, routed with and without preloading) replays it through `benchmark.simulation`, which
drives the real `Core`, `Admission`, policy, registry, queue and estimates with simulated
workers and a virtual clock. So 200 workers x 1,000 labels x 72,000 tasks take seconds, and
two runs with the same options give the same numbers. Next to the runs, the reference caches
(`benchmark.references`: compulsory, Belady, LRU, LFU, W-TinyLFU on ONE pooled cache of
workers x capacity slots) replay the same label sequence. Misses are counted over the whole
run and over its second half (tasks submitted at index >= n // 2: the steady state).
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from benchmark.references import ReferenceReport, reference_report, steady_state_start
from benchmark.simulation import Simulation, WorkerModel, closed_loop
from benchmark.trace import Trace, TraceConfig, build_trace, fingerprint
from dispatcher.config import Config, Policy
from dispatcher.errors import DispatcherError

PreloadChoice = Literal["on", "off", "both"]

__all__ = [
    "PreloadChoice",
    "SimulateConfig",
    "SimulateReport",
    "VariantResult",
    "percentile",
    "render",
    "run_variant",
    "simulate",
    "variants",
]


@dataclass(frozen=True)
class SimulateConfig:
    """One simulation: the trace, the workers, the base dispatcher config and what to run.

    `dispatcher` is the base `Config`; each variant replaces its `policy` and `preload`.
    """

    trace: TraceConfig
    workers: int = 200
    model: WorkerModel = field(default_factory=WorkerModel)
    dispatcher: Config = field(default_factory=lambda: Config(max_queue=1_000_000))
    policies: tuple[Policy, ...] = ("random", "routed")
    preload: PreloadChoice = "both"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.policies:
            raise ValueError("at least one policy is needed")

    @property
    def cache_size(self) -> int:
        """Slots of the pooled reference cache: every worker's capacity together."""
        return self.workers * self.model.capacity


def variants(policies: Sequence[Policy], preload: PreloadChoice) -> list[tuple[Policy, bool]]:
    """The (policy, preload) runs: random ignores preloading, so it runs once (preload off)."""
    flags = {"on": [True], "off": [False], "both": [False, True]}[preload]
    runs: list[tuple[Policy, bool]] = []
    for policy in policies:
        runs.extend([(policy, False)] if policy == "random" else [(policy, f) for f in flags])
    return runs


def variant_name(policy: Policy, preload: bool) -> str:
    """The row name of a variant: `random`, `routed`, `routed+preload`."""
    return f"{policy}+preload" if preload else policy


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0-100) of already sorted values; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class VariantResult:
    """What one policy variant did on the trace (times in virtual milliseconds)."""

    name: str
    policy: str
    preload: bool
    tasks: int
    completed: int
    failed: int
    rejected: int
    misses: int
    misses_second_half: int
    second_half_tasks: int
    preloads: int
    preloads_second_half: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    avg_runtime_ms: float
    virtual_s: float
    wall_s: float

    @property
    def miss_rate(self) -> float:
        """Misses per submitted task."""
        return self.misses / self.tasks if self.tasks else 0.0

    @property
    def miss_rate_second_half(self) -> float:
        """Misses per task of the second half."""
        return self.misses_second_half / self.second_half_tasks if self.second_half_tasks else 0.0

    @property
    def loads(self) -> int:
        """Every load the workers did: misses on a task's path plus preloads."""
        return self.misses + self.preloads

    @property
    def loads_second_half(self) -> int:
        """Loads in the second half (preloads from the submission of its first task on)."""
        return self.misses_second_half + self.preloads_second_half

    def to_json(self) -> dict[str, Any]:
        """Every field plus the derived rates and loads."""
        return {
            **asdict(self),
            "miss_rate": self.miss_rate,
            "miss_rate_second_half": self.miss_rate_second_half,
            "loads": self.loads,
            "loads_second_half": self.loads_second_half,
        }


@dataclass(frozen=True)
class SimulateReport:
    """The runs and the references of one simulation."""

    config: SimulateConfig
    fingerprint: str
    references: ReferenceReport
    references_wall_s: float
    runs: tuple[VariantResult, ...]

    def run(self, name: str) -> VariantResult:
        """The result of the variant called `name` (`random`, `routed`, `routed+preload`)."""
        for result in self.runs:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (what `--output` writes)."""
        c = self.config
        return {
            "trace": {**asdict(c.trace), "fingerprint": self.fingerprint},
            "workers": c.workers,
            "model": asdict(c.model),
            "cache_size": c.cache_size,
            "dispatcher": {
                key: getattr(c.dispatcher, key)
                for key in (
                    "max_queue",
                    "task_timeout_s",
                    "starvation_factor",
                    "demand_time_constant_s",
                    "target_utilisation",
                    "max_preload_share",
                    "cold_wait_ms",
                )
            },
            "runs": [result.to_json() for result in self.runs],
            "references": self.references.to_json(),
            "references_wall_s": self.references_wall_s,
        }


def _submit(sim: Simulation, label: str, rejected: list[int]) -> None:
    try:
        sim.submit(label)
    except DispatcherError:  # e.g. the queue is full: counted, as a caller would see it
        rejected[0] += 1


def run_variant(
    config: SimulateConfig, trace: Trace, policy: Policy, preload: bool
) -> VariantResult:
    """Replay `trace` through a fresh simulation of the real core with one policy variant."""
    started = time.perf_counter()
    tc = trace.config
    dispatcher = replace(config.dispatcher, policy=policy, preload=preload)
    sim = Simulation(dispatcher, config.workers, config.model, seed=tc.seed)
    rejected = [0]
    if tc.mode == "open":
        for entry in trace.entries:
            sim.timers.call_at(entry.at_s, _submit, sim, entry.label, rejected)
    else:
        # Think times are drawn while the run goes: the answers decide when producers send.
        waits = random.Random(f"simulate-waits:{tc.seed}")
        closed_loop(sim, trace.labels, tc.producers, tc.wait_avg, tc.wait_stddev, waits)
    outcome = sim.run()
    tasks = len(sim.submit_times)
    start = steady_state_start(tasks)
    half_at = sim.submit_times[start] if start < tasks else float("inf")
    preload_times = [t for link in sim.links for t in link.preload_times]
    latencies = sorted(outcome.latencies_s)
    return VariantResult(
        name=variant_name(policy, preload),
        policy=policy,
        preload=preload,
        tasks=tasks,
        completed=outcome.completed,
        failed=outcome.failed,
        rejected=rejected[0],
        misses=outcome.misses,
        misses_second_half=outcome.misses_from(start),
        second_half_tasks=tasks - start,
        preloads=len(preload_times),
        preloads_second_half=sum(1 for t in preload_times if t >= half_at),
        latency_p50_ms=percentile(latencies, 50) * 1000.0,
        latency_p95_ms=percentile(latencies, 95) * 1000.0,
        latency_p99_ms=percentile(latencies, 99) * 1000.0,
        avg_runtime_ms=outcome.avg_runtime_s * 1000.0,
        virtual_s=sim.clock.now,
        wall_s=time.perf_counter() - started,
    )


def simulate(config: SimulateConfig) -> SimulateReport:
    """Build the trace, run every variant on it and replay the reference caches."""
    trace = build_trace(config.trace)
    runs = tuple(
        run_variant(config, trace, policy, preload)
        for policy, preload in variants(config.policies, config.preload)
    )
    started = time.perf_counter()
    references = reference_report(trace.labels, config.cache_size)
    return SimulateReport(
        config=config,
        fingerprint=fingerprint(trace),
        references=references,
        references_wall_s=time.perf_counter() - started,
        runs=runs,
    )


def write_json(report: SimulateReport, path: Path) -> None:
    """Write `report.to_json()` to `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")


def render(report: SimulateReport) -> str:
    """The runs and the references as text tables (rich), as `simulate` prints them."""
    from rich.console import Console
    from rich.table import Table

    c, tc = report.config, report.config.trace
    load = "open loop" if tc.mode == "open" else f"closed loop, {tc.producers} producers"
    rate = f" at {tc.rate:g}/s" if tc.mode == "open" else ""
    shape = f" s={tc.zipf_s:g}" if tc.distribution != "uniform" else ""
    title = (
        f"{c.workers} workers x {c.model.capacity} labels, {tc.labels} labels {tc.distribution}"
        f"{shape}, {tc.requests} tasks{rate} ({load}), seed {tc.seed}, trace {report.fingerprint}"
    )
    runs = Table(title=title, title_justify="left")
    for header in (
        "variant",
        "misses",
        "rate",
        "2nd half",
        "rate",
        "preloads",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "runtime ms",
        "failed",
        "wall s",
    ):
        runs.add_column(header, justify="left" if header == "variant" else "right")
    for r in report.runs:
        runs.add_row(
            r.name,
            str(r.misses),
            f"{r.miss_rate:.3f}",
            str(r.misses_second_half),
            f"{r.miss_rate_second_half:.3f}",
            f"{r.preloads} ({r.preloads_second_half})",
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p95_ms:.1f}",
            f"{r.latency_p99_ms:.1f}",
            f"{r.avg_runtime_ms:.1f}",
            str(r.failed + r.rejected),
            f"{r.wall_s:.2f}",
        )
    refs = report.references
    whole, half = refs.whole, refs.second_half
    ref_table = Table(
        title=f"References: ONE cache of {whole.cache_size} slots",
        title_justify="left",
        caption=f"replayed in {report.references_wall_s:.2f} s",
        caption_justify="left",
    )
    for header in ("policy", "misses", "rate", "2nd half", "rate"):
        ref_table.add_column(header, justify="left" if header == "policy" else "right")
    for policy in ("compulsory", "belady", "lru", "lfu", "wtinylfu"):
        ref_table.add_row(
            policy,
            str(whole.misses(policy)),
            f"{whole.miss_rate(policy):.3f}",
            str(half.misses(policy)),
            f"{half.miss_rate(policy):.3f}",
        )
    console = Console(width=130, record=True, file=io.StringIO())
    console.print(runs)
    console.print(ref_table)
    console.print("preloads: all (second half); failed: deadline passed or refused; times virtual")
    return console.export_text()
