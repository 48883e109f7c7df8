"""Tests of the command line's environment defaults (no cluster)."""

from __future__ import annotations

import pytest

from benchmark import dispatcher_micro
from benchmark.__main__ import MicroArgs, RunArgs, SwarmArgs, _default_dispatch, parse
from benchmark.runner import policies_of, stats_delta
from benchmark.swarm import default_costs
from smartrouting.config import to_argv


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", "random"), ("TRUE", "random"), ("1", "random"), ("false", "routed"), ("", "both")],
)
def test_random_dispatch_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    """RANDOM_DISPATCH selects the policy as in the original system; unset runs both."""
    monkeypatch.setenv("RANDOM_DISPATCH", value)
    assert _default_dispatch() == expected


def test_run_options_from_the_environment() -> None:
    """NUM_WORKERS and RANDOM_DISPATCH fill `run` in; flags win; the defaults are the documented
    ones (simulated engine, time scale 0.05)."""
    args = parse(["run"], {"NUM_WORKERS": "6", "RANDOM_DISPATCH": "false"})
    assert isinstance(args, RunArgs)
    assert (args.workers, args.dispatch, args.engine, args.time_scale) == (
        6,
        "routed",
        "simulated",
        0.05,
    )
    args = parse(
        ["run", "--workers", "3", "--dispatch", "both", "--no-progress"], {"NUM_WORKERS": "6"}
    )
    assert (args.workers, args.dispatch, args.progress) == (3, "both", False)
    args = parse(["run", "--dispatcher-arg=--max-queue=5", "--dispatcher-arg=--seed=2"], {})
    assert args.dispatcher_args == ("--max-queue=5", "--seed=2")


def test_swarm_with_a_real_engine_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --swarm` needs the simulated engine: one line, exit 2."""
    with pytest.raises(SystemExit) as exited:
        parse(["run", "--swarm", "--engine", "triton"], {})
    assert exited.value.code == 2
    assert "use --engine simulated" in capsys.readouterr().err


def test_swarm_costs_default_to_the_workers() -> None:
    """The swarm's simulated costs default to the worker's simulated-engine ones."""
    args = parse(["swarm", "--workers", "3"], {})
    assert isinstance(args, SwarmArgs) and args.workers == 3
    assert {key: getattr(args, key) for key in default_costs()} == default_costs()


def test_dispatcher_micro_options_reach_the_micro_benchmark() -> None:
    """MicroArgs has the micro-benchmark's own defaults, and `to_argv` passes changes on."""
    own = vars(dispatcher_micro.build_parser().parse_args([]))
    own["paced_rates"] = tuple(own.pop("paced_rate") or (500.0, 1000.0))
    assert own == vars(MicroArgs())
    args = parse(["dispatcher-micro", "--paced-rate", "50", "--skip-http", "--workers", "2"], {})
    passed = vars(dispatcher_micro.build_parser().parse_args(to_argv(args)))
    assert (passed["paced_rate"], passed["skip_http"], passed["workers"]) == ([50.0], True, 2)


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
