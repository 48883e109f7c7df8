"""PNG charts of a benchmark result (matplotlib, Agg backend: no display needed).

`misses.png`: label misses per policy next to the Belady bound and LRU on one cache.
`latency.png`: client latency p50/p95/p99 per policy.
`runtime.png`: average task runtime per policy.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from benchmark.results import BenchmarkResult  # noqa: E402

_COLORS = {"random": "#d62728", "routed": "#2ca02c", "bound": "#7f7f7f", "lru": "#bcbd22"}


def _bar_labels(ax: plt.Axes, bars: object, fmt: str) -> None:
    for bar in bars:  # type: ignore[attr-defined]
        height = bar.get_height()
        if not math.isnan(height):
            ax.annotate(
                fmt.format(height),
                (bar.get_x() + bar.get_width() / 2, height),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def misses_chart(result: BenchmarkResult, path: Path) -> Path:
    """Bars of label misses: each policy, the Belady bound, LRU on one cache."""
    names = [*result.policies, "Belady bound", "LRU one cache"]
    values = [float(p.label_misses) for p in result.policies.values()]
    values += [float(result.bound["misses"]), float(result.lru_reference["misses"])]
    colors = [_COLORS.get(n, "#1f77b4") for n in result.policies]
    colors += [_COLORS["bound"], _COLORS["lru"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bars = ax.bar(names, values, color=colors)
    _bar_labels(ax, bars, "{:.0f}")
    ax.set_ylabel("label misses")
    ax.set_title(f"{result.name}: label misses ({result.params.get('requests')} requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_chart(result: BenchmarkResult, path: Path) -> Path:
    """Grouped bars of client latency p50/p95/p99 per policy."""
    quantiles = (50, 95, 99)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(1, len(result.policies))
    for i, (name, policy) in enumerate(result.policies.items()):
        xs = [q + i * width for q in range(len(quantiles))]
        values = [policy.latency(q) for q in quantiles]
        bars = ax.bar(xs, values, width, label=name, color=_COLORS.get(name, "#1f77b4"))
        _bar_labels(ax, bars, "{:.3f}")
    ax.set_xticks([q + width * (len(result.policies) - 1) / 2 for q in range(len(quantiles))])
    ax.set_xticklabels([f"p{q}" for q in quantiles])
    ax.set_ylabel("client latency (s, wall clock)")
    ax.set_title(f"{result.name}: client latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def runtime_chart(result: BenchmarkResult, path: Path) -> Path:
    """Bars of the average task runtime (load + run, unscaled seconds) per policy."""
    names = list(result.policies)
    values = [p.avg_task_runtime_s for p in result.policies.values()]
    fig, ax = plt.subplots(figsize=(5, 4))
    bars = ax.bar(names, values, color=[_COLORS.get(n, "#1f77b4") for n in names])
    _bar_labels(ax, bars, "{:.3f}")
    ax.set_ylabel("average task runtime (s)")
    ax.set_title(f"{result.name}: average task runtime")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_charts(result: BenchmarkResult, out_dir: Path) -> list[Path]:
    """Write every chart into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        misses_chart(result, out_dir / "misses.png"),
        latency_chart(result, out_dir / "latency.png"),
        runtime_chart(result, out_dir / "runtime.png"),
    ]
