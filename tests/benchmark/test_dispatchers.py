"""`python -m benchmark run --dispatchers N`: the local cluster with several dispatchers.

Real processes throughout: two `python -m dispatcher` on a throwaway PostgreSQL server that
the cluster starts and removes itself (smartrouting/postgres.py), one swarm process whose
SIMULATED workers link to both, and the benchmark's producers spreading a trace over them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmark.cluster
from benchmark.runner import RunConfig, run_benchmark
from smartrouting.postgres import PostgresServer
from tests.support import scaled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_a_run_on_two_dispatchers_spreads_the_trace_and_adds_up_their_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker registers with both dispatchers; the requests are split between them
    (round robin: 20 each), the summary's counts are the sums of both, and the PostgreSQL
    server the cluster started is gone afterwards."""
    started: list[PostgresServer] = []
    real_start = benchmark.cluster.start_postgres

    def start_and_note() -> PostgresServer:
        started.append(real_start())
        return started[-1]

    monkeypatch.setattr(benchmark.cluster, "start_postgres", start_and_note)
    cfg = RunConfig(
        out=tmp_path / "run",
        workers=3,
        capacity=2,
        labels=6,
        requests=40,
        producers=4,
        wait_avg=0.1,
        wait_stddev=0.05,
        dispatch=["routed"],
        dispatchers=2,
        swarm=True,
        seed=3,
        progress=False,
        ready_timeout_s=scaled(60),
    )
    result = run_benchmark(cfg)

    policy = result.policies["routed"]
    assert policy.producers.failed == 0, policy.producers.errors
    assert policy.producers.requests == 40 == policy.tasks_completed
    assert policy.stats["dispatchers"] == 2
    assert policy.stats["label_misses"] == policy.producers.label_misses
    each = policy.stats["per_dispatcher"]
    assert [d["tasks_submitted"] for d in each] == [20, 20]
    assert [d["workers_connected"] for d in each] == [3, 3]
    assert sum(d["label_misses"] for d in each) == policy.label_misses
    assert result.params["store_url"] is None and result.params["dispatchers"] == 2
    logs = sorted(p.name for p in (cfg.out / "logs" / "routed").iterdir())
    assert logs == ["dispatcher-0.log", "dispatcher-1.log", "swarm.log"]
    assert len(started) == 1 and not started[0].root.exists()
