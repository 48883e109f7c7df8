"""Smoke test of the dispatcher micro-benchmark (tiny sizes; numbers are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark import dispatcher_micro


def test_decision_cost_state_takes_the_slow_next_for_path() -> None:
    """The benchmark's registry makes next_for examine queued labels and take nothing."""
    policy = dispatcher_micro.realistic_state(100)
    idle = policy.registry.idle.first()
    assert idle is not None and len(policy.queue) == 5
    assert policy.next_for(idle, 2.0) is None


def test_micro_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """A short run starts a real dispatcher, measures both clients and writes its JSON."""
    out = tmp_path / "micro.json"
    code = dispatcher_micro.main(
        ["--requests", "60", "--warmup", "10", "--concurrency", "4", "--workers", "2"]
        + ["--slots", "2", "--decision-iterations", "50", "--json-out", str(out)]
        + ["--paced-rate", "400"]
    )
    assert code == 0
    report = json.loads(out.read_text())
    runs = report["http"]
    assert {(r["endpoint"], r["client"]) for r in runs} == {
        ("/health", "AsyncClient"), ("/run-task", "AsyncClient"),
        ("/health", "RawClient"), ("/run-task", "RawClient"),
        ("/health", "RawClient@400/s"), ("/run-task", "RawClient@400/s"),
    }  # fmt: skip
    paced = [r for r in runs if r["client"] == "RawClient@400/s"]
    # 60 requests paced at 400/s cannot finish in much less than 60/400 s.
    assert all(r["seconds"] >= 0.9 * 60 / 400 for r in paced)
    assert all(r["failed"] == 0 and r["requests"] > 0 for r in runs)
    assert [d["workers"] for d in report["decisions"]] == [10, 1000, 10_000]
    assert set(report["decision_cost_ratio_1000_vs_10"]) == {"place_hit", "place_load", "next_for"}
