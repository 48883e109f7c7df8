"""A tiny benchmark end to end: real dispatcher, real worker processes (simulated engine).

The simulated engine is the worker's benchmark engine; everything else (HTTP,
websockets, protobuf, the dispatcher's policies, child processes) is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cluster import ClusterConfig, LocalCluster
from benchmark.runner import RunConfig, run_benchmark
from benchmark.trace import build_trace
from tests.support import scaled

pytestmark = pytest.mark.slow


def _tiny(out: Path, **overrides: object) -> RunConfig:
    cfg = RunConfig(
        out=out,
        workers=2,
        capacity=2,
        engine="simulated",
        labels=5,
        requests=40,
        producers=2,
        wait_avg=0.2,
        wait_stddev=0.1,
        time_scale=0.05,
        seed=7,
        progress=False,
        ready_timeout_s=scaled(60),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.mark.timeout(180)
def test_tiny_benchmark_numbers_agree(tmp_path: Path) -> None:
    """Summary numbers equal /stats and the producers' own counts, for both policies."""
    cfg = _tiny(tmp_path / "tiny")
    result = run_benchmark(cfg)
    trace = build_trace(cfg.trace_config())
    expected_per_label = trace.label_counts()
    assert list(result.policies) == ["random", "routed"]
    for name, policy in result.policies.items():
        p, stats = policy.producers, policy.stats
        assert stats["policy"] == name
        # Every request is accounted for exactly once, on both sides.
        assert p.requests == 40 == p.synchronous
        assert p.failed == 0, p.errors
        assert p.requests == stats["tasks_completed"] + stats.get("tasks_failed", 0)
        assert len(p.latencies_s) == p.succeeded == stats["tasks_completed"]
        # Misses the dispatcher counted are the misses the answers reported.
        assert stats["label_misses"] == p.label_misses
        assert stats["label_misses"] + stats["label_hits"] == stats["tasks_completed"]
        # The run replayed exactly the trace: per-label counts match it.
        per_label = {k: v["completed"] for k, v in stats["per_label"].items() if v["completed"]}
        assert per_label == dict(expected_per_label)
        # No policy beats the clairvoyant bound.
        assert policy.label_misses >= result.bound["misses"]
        assert policy.avg_task_runtime_s > 0
    summary = (cfg.out / "summary.txt").read_text()
    for policy in result.policies.values():
        assert f"Total Label Misses: {policy.stats['label_misses']}" in summary
        assert f"Tasks Completed: {policy.stats['tasks_completed']}" in summary
    data = json.loads((cfg.out / "results.json").read_text())
    assert data["trace"]["fingerprint"] == result.trace["fingerprint"]
    routed = data["policies"]["routed"]["worker_log_summary"]
    assert routed["total_label_misses"] == result.policies["routed"].stats["label_misses"]
    assert {p.name for p in cfg.out.glob("*.png")} == {"misses.png", "latency.png", "runtime.png"}


@pytest.mark.timeout(120)
def test_swarm_open_loop_zipf(tmp_path: Path) -> None:
    """Twenty SIMULATED swarm workers serve an open-loop Zipf trace, every request counted."""
    cfg = _tiny(
        tmp_path / "swarm",
        workers=20,
        labels=60,
        distribution="zipf",
        mode="open",
        rate=100.0,
        requests=150,
        swarm=True,
        dispatch=["routed"],
    )
    result = run_benchmark(cfg)
    policy = result.policies["routed"]
    assert policy.producers.failed == 0, policy.producers.errors
    assert policy.stats["tasks_completed"] == 150
    assert policy.stats["workers_connected"] == 20
    assert policy.stats["label_misses"] == policy.producers.label_misses
    assert result.bound["misses"] <= policy.label_misses


@pytest.mark.timeout(120)
def test_cluster_stops_children_on_error(tmp_path: Path) -> None:
    """An exception inside the `with` block still stops every child process."""
    cluster = LocalCluster(
        ClusterConfig(run_dir=tmp_path, workers=1, engine="simulated", ready_timeout_s=scaled(60))
    )
    with pytest.raises(RuntimeError, match="boom"), cluster:
        assert cluster.registered_workers() == ["w-0"]
        raise RuntimeError("boom")
    assert cluster.children and all(not c.alive() for c in cluster.children)
    assert (tmp_path / "dispatcher.log").exists()
