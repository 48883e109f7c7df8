"""Tests of the summary text, results.json and the charts (no cluster needed)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from benchmark.charts import write_charts
from benchmark.results import BenchmarkResult, PolicyResult, ProducerReport, percentile
from benchmark.summary import render


def _policy(name: str, misses: int, runtime_s: float, failed: int = 0) -> PolicyResult:
    report = ProducerReport(
        requests=100,
        failed=failed,
        synchronous=100,
        dispatched=0,
        label_misses=misses,
        duration_s=20.0,
        latencies_s=[0.01 * i for i in range(1, 101 - failed)],
        errors=Counter({"no_worker": failed}) if failed else Counter(),
    )
    stats = {
        "policy": name,
        "tasks_completed": 100 - failed,
        "label_misses": misses,
        "avg_task_runtime_s": runtime_s * 0.05,
    }
    return PolicyResult(policy=name, producers=report, stats=stats, runtime_scale=0.05)


def _result() -> BenchmarkResult:
    return BenchmarkResult(
        name="unit",
        params={"workers": 2, "capacity": 2, "requests": 100, "engine": "simulated"},
        trace={"fingerprint": "abc"},
        bound={"policy": "belady", "cache_size": 4, "misses": 17, "compulsory": 5},
        lru_reference={"policy": "lru", "cache_size": 4, "misses": 30},
        policies={
            "random": _policy("random", 60, 0.3, failed=2),
            "routed": _policy("routed", 24, 0.1),
        },
    )


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([3.0, 1.0, 2.0], 100, 3.0),
        (list(map(float, range(101))), 99, 99.0),
        ([5.0, 1.0], 0, 1.0),
    ],
)
def test_percentile_table(values: list[float], q: float, expected: float) -> None:
    """Linear-interpolation percentiles match hand-computed values."""
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_empty_and_bad() -> None:
    """No values gives NaN; q outside 0..100 raises."""
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_has_original_format() -> None:
    """The summary carries the original system's lines with each policy's numbers."""
    text = render(_result())
    assert text.count("Worker Log Summary") == 2
    assert text.count("Producer Log Summary") == 2
    assert "Total Label Misses: 60" in text and "Total Label Misses: 24" in text
    assert "Tasks Completed: 98" in text and "Tasks Completed: 100" in text
    # Runtimes are unscaled: 0.3 * 0.05 / 0.05.
    assert "Average Task Runtime: 0.300 s" in text
    assert "Average Task Runtime: 0.100 s" in text
    assert "Total Requests: 100" in text
    assert "Total Failed Requests: 2" in text
    assert "Total Synchronous Requests: 100" in text
    assert "Total Dispatched Jobs: 0" in text
    assert "Failures by error: no_worker=2" in text
    assert "Belady lower bound on misses (one cache of 4): 17 (compulsory 5)" in text
    assert "Misses random/routed: 2.50x" in text
    assert "Average task runtime random/routed: 3.00x" in text


def test_comparison_latency_rows() -> None:
    """The side-by-side table lists p50/p95/p99 and throughput for both policies."""
    text = render(_result())
    row = next(line for line in text.splitlines() if line.startswith("Latency p50"))
    assert row.split()[-2:] == [
        f"{percentile([0.01 * i for i in range(1, 99)], 50):.3f}",
        f"{percentile([0.01 * i for i in range(1, 101)], 50):.3f}",
    ]
    thr = next(line for line in text.splitlines() if line.startswith("Throughput"))
    assert thr.split()[-2:] == ["4.90", "5.00"]


def test_results_json_and_charts(tmp_path: Path) -> None:
    """results.json holds both summaries and the bound; the three PNGs are written."""
    result = _result()
    path = result.write_json(tmp_path / "results.json")
    data = json.loads(path.read_text())
    routed = data["policies"]["routed"]
    assert routed["worker_log_summary"]["total_label_misses"] == 24
    assert routed["producer_log_summary"]["total_requests"] == 100
    assert data["belady_bound"]["misses"] == 17
    pngs = write_charts(result, tmp_path)
    assert [p.name for p in pngs] == ["misses.png", "latency.png", "runtime.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
