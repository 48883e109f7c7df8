"""Result records of a benchmark run, and their JSON form.

`ProducerReport` is what the producers counted themselves; `PolicyResult` joins it
with the dispatcher's `GET /stats` for one policy; `BenchmarkResult` holds the
policies run on one trace plus the lower bound. Plain dataclasses, no I/O except
`BenchmarkResult.write_json`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) with linear interpolation; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class ProducerReport:
    """What the producers counted on their side of the HTTP calls."""

    requests: int = 0
    failed: int = 0
    synchronous: int = 0
    dispatched: int = 0
    label_misses: int = 0
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def succeeded(self) -> int:
        """Requests that got a completed answer."""
        return self.requests - self.failed

    def to_json(self) -> dict[str, Any]:
        """The counts and the latency percentiles (not every latency)."""
        return {
            "requests": self.requests,
            "failed": self.failed,
            "synchronous": self.synchronous,
            "dispatched": self.dispatched,
            "label_misses": self.label_misses,
            "duration_s": round(self.duration_s, 4),
            "errors": dict(self.errors),
            "latency_s": {
                "p50": percentile(self.latencies_s, 50),
                "p95": percentile(self.latencies_s, 95),
                "p99": percentile(self.latencies_s, 99),
                "mean": sum(self.latencies_s) / len(self.latencies_s)
                if self.latencies_s
                else math.nan,
                "count": len(self.latencies_s),
            },
        }


@dataclass
class PolicyResult:
    """One policy's run: the producers' counts and the dispatcher's `/stats`.

    `runtime_scale` is the factor simulated costs were multiplied by (the time
    scale for the simulated engine, 1 for real engines); task runtimes are
    divided by it so they compare with the original system's seconds.
    """

    policy: str
    producers: ProducerReport
    stats: dict[str, Any]
    runtime_scale: float = 1.0

    @property
    def label_misses(self) -> int:
        """Total Label Misses, as the dispatcher counted them."""
        return int(self.stats.get("label_misses", 0))

    @property
    def tasks_completed(self) -> int:
        """Tasks Completed, as the dispatcher counted them."""
        return int(self.stats.get("tasks_completed", 0))

    @property
    def avg_task_runtime_s(self) -> float:
        """Average Task Runtime (load + run at the workers), in unscaled seconds."""
        return float(self.stats.get("avg_task_runtime_s", 0.0)) / self.runtime_scale

    @property
    def throughput(self) -> float:
        """Completed requests per wall-clock second, as the producers saw them."""
        d = self.producers.duration_s
        return self.producers.succeeded / d if d > 0 else 0.0

    def latency(self, q: float) -> float:
        """Client latency percentile in wall-clock seconds."""
        return percentile(self.producers.latencies_s, q)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this policy in results.json."""
        return {
            "policy": self.policy,
            "worker_log_summary": {
                "total_label_misses": self.label_misses,
                "tasks_completed": self.tasks_completed,
                "average_task_runtime_s": self.avg_task_runtime_s,
            },
            "producer_log_summary": {
                "total_requests": self.producers.requests,
                "total_failed_requests": self.producers.failed,
                "total_synchronous_requests": self.producers.synchronous,
                "total_dispatched_jobs": self.producers.dispatched,
            },
            "throughput_per_s": self.throughput,
            "runtime_scale": self.runtime_scale,
            "producers": self.producers.to_json(),
            "stats": self.stats,
        }


@dataclass
class BenchmarkResult:
    """Every policy run on one trace, the trace's fingerprint and the lower bound."""

    name: str
    params: dict[str, Any]
    trace: dict[str, Any]
    bound: dict[str, Any]
    lru_reference: dict[str, Any]
    policies: dict[str, PolicyResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The whole results.json object."""
        return {
            "name": self.name,
            "params": self.params,
            "trace": self.trace,
            "belady_bound": self.bound,
            "lru_one_cache": self.lru_reference,
            "policies": {k: v.to_json() for k, v in self.policies.items()},
        }

    def write_json(self, path: Path) -> Path:
        """Write results.json (NaN written as null)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_nan_to_none(self.to_json()), indent=2, sort_keys=False)
        path.write_text(text + "\n")
        return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value
