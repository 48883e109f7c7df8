"""Tests of the command line's environment defaults (no cluster)."""

from __future__ import annotations

import pytest

from benchmark.__main__ import _default_dispatch
from benchmark.runner import policies_of, stats_delta


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", "random"), ("TRUE", "random"), ("1", "random"), ("false", "routed"), ("", "both")],
)
def test_random_dispatch_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    """RANDOM_DISPATCH selects the policy as in the original system; unset runs both."""
    monkeypatch.setenv("RANDOM_DISPATCH", value)
    assert _default_dispatch() == expected


def test_policies_of() -> None:
    """`both` runs random first, then routed, on the same trace."""
    assert policies_of("both") == ["random", "routed"]
    assert policies_of("routed") == ["routed"]


def test_stats_delta_subtracts_counters_and_recomputes_runtime() -> None:
    """A run's /stats are the difference of cumulative counters; gauges are kept."""
    before = {
        "tasks_completed": 10,
        "label_misses": 4,
        "load_time_s_total": 2.0,
        "run_time_s_total": 1.0,
        "queue_depth": 3,
    }
    after = {
        "tasks_completed": 30,
        "label_misses": 5,
        "load_time_s_total": 3.0,
        "run_time_s_total": 2.0,
        "queue_depth": 0,
        "avg_task_runtime_s": 0.1666,
    }
    delta = stats_delta(before, after)
    assert delta["tasks_completed"] == 20
    assert delta["label_misses"] == 1
    assert delta["queue_depth"] == 0
    assert delta["avg_task_runtime_s"] == pytest.approx(2.0 / 20)
