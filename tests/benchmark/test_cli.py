"""Tests of the command line's environment defaults (no cluster)."""

from __future__ import annotations

import pytest

from benchmark import dispatcher_micro
from benchmark.__main__ import MicroArgs, RunArgs, SwarmArgs, _default_dispatch, parse
from benchmark.producers import ProducerSettings
from benchmark.runner import policies_of, stats_delta
from benchmark.swarm import SwarmConfig, default_costs
from benchmark.trace import TraceConfig, build_trace
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


def test_several_dispatchers_options_and_their_checks(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --dispatchers N --store-url URL` (the URL a secret); N < 1, or N > 1 with a running
    dispatcher, is refused; the swarm links to every `--dispatcher-url` given."""
    args = parse(["run", "--dispatchers", "3", "--store-url", "postgresql://u:pw@db/x"], {})
    assert (args.dispatchers, args.store_url) == (3, "postgresql://u:pw@db/x")
    assert "pw" not in repr(args)
    assert parse(["run"], {"BENCHMARK_RUN_DISPATCHERS": "2"}).dispatchers == 2
    for bad in (["--dispatchers", "0"], ["--dispatchers", "2", "--dispatcher-url", "http://d"]):
        with pytest.raises(SystemExit) as exited:
            parse(["run", *bad], {})
        assert exited.value.code == 2
    assert "--dispatchers" in capsys.readouterr().err
    urls = ("ws://a/worker-listen", "ws://b/worker-listen")
    swarm = parse(["swarm", "--dispatcher-url", urls[0], "--dispatcher-url", urls[1]], {})
    config = SwarmConfig(swarm.dispatcher_url, workers=1)
    assert config.worker_config(0).dispatcher_url == urls
    assert SwarmConfig(urls[0], workers=1).worker_config(0).dispatcher_url == urls[:1]


def test_requests_go_round_robin_over_the_dispatchers() -> None:
    """Request i goes to dispatcher i mod N; one URL is one dispatcher."""
    trace = build_trace(TraceConfig(requests=6, labels=2, seed=1))
    settings = ProducerSettings(base_url=("http://a/", "http://b", "http://c"))
    chosen = [settings.base_url_of(entry) for entry in trace.entries]
    assert chosen == ["http://a", "http://b", "http://c"] * 2
    assert ProducerSettings(base_url="http://one/").base_urls == ("http://one",)


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
