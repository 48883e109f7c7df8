"""`python -m benchmark simulate`: the real dispatcher core on a seeded trace, in virtual time."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmark.__main__ import SimulateArgs, main, parse
from benchmark.simulate import (
    SimulateConfig,
    SimulateReport,
    percentile,
    render,
    simulate,
    variants,
)
from benchmark.simulation import Simulation, WorkerModel
from benchmark.trace import TraceConfig
from dispatcher.config import Config
from proto import smartrouting_pb2 as pb

SMALL = SimulateConfig(
    trace=TraceConfig(
        requests=3000, labels=100, distribution="zipf", zipf_s=1.1, mode="open", rate=100.0
    ),
    workers=20,
    model=WorkerModel(capacity=2, load_ms=270.0, load_stddev_ms=30.0, run_ms=10.0),
    dispatcher=Config(max_queue=1_000_000),
)


@pytest.fixture(scope="module")
def report() -> SimulateReport:
    return simulate(SMALL)


def _without_wall_times(report: SimulateReport) -> dict[str, Any]:
    data = report.to_json()
    data.pop("references_wall_s")
    for run in data["runs"]:
        run.pop("wall_s")
    return data


def test_same_options_give_the_same_numbers(report: SimulateReport) -> None:
    """Two simulations with the same options agree on every number but the wall time."""
    assert _without_wall_times(simulate(SMALL)) == _without_wall_times(report)


def test_routed_misses_fewer_than_random(report: SimulateReport) -> None:
    """On a skewed trace routing keeps hot labels where they are; random reloads them."""
    routed, random_ = report.run("routed"), report.run("random")
    assert routed.completed == random_.completed == 3000
    assert routed.misses * 2 < random_.misses, (routed, random_)
    assert routed.latency_p50_ms < random_.latency_p50_ms


def test_second_half_is_part_of_the_whole(report: SimulateReport) -> None:
    """Second-half counts cover tasks n//2 .. n-1 and never exceed the whole run's."""
    for run in report.runs:
        assert run.tasks == 3000 and run.second_half_tasks == 1500
        assert 0 < run.misses_second_half <= run.misses
        assert run.preloads_second_half <= run.preloads
        assert run.latency_p50_ms <= run.latency_p95_ms <= run.latency_p99_ms


def test_references_are_present_and_ordered(report: SimulateReport) -> None:
    """The pooled cache has workers x capacity slots; Belady is the lowest, compulsory below."""
    for window in (report.references.whole, report.references.second_half):
        assert window.cache_size == 40
        assert window.compulsory <= window.belady <= window.lru
        assert window.belady <= min(window.lfu, window.wtinylfu)
    assert report.references.whole.requests == 3000
    assert report.references.second_half.start == 1500


def test_variants_run_random_once() -> None:
    """Random ignores preloading, so it runs once; routed once per preload choice."""
    assert variants(("random", "routed"), "both") == [
        ("random", False),
        ("routed", False),
        ("routed", True),
    ]
    assert variants(("routed",), "on") == [("routed", True)]
    assert variants(("random",), "on") == [("random", False)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 50, 0.0), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([1.0, 2.0], 100, 2.0)],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    """Nearest rank on sorted values."""
    assert percentile(values, q) == expected


def test_closed_loop_runs_every_request() -> None:
    """Closed-loop producers send the whole trace and every task is answered."""
    config = replace(
        SMALL,
        trace=replace(SMALL.trace, mode="closed", requests=400, producers=4, wait_avg=0.2),
        policies=("routed",),
        preload="off",
    )
    run = simulate(config).run("routed")
    assert (run.tasks, run.completed, run.failed, run.rejected) == (400, 400, 0, 0)


def test_render_names_every_variant_and_reference(report: SimulateReport) -> None:
    """The printed tables carry a row per variant and per reference policy."""
    text = render(report)
    for name in ("random", "routed+preload", "compulsory", "belady", "lru", "lfu", "wtinylfu"):
        assert name in text


def test_cli_runs_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`main([...])` runs a tiny simulation, prints the tables and writes the JSON report."""
    out = tmp_path / "sim" / "report.json"
    argv = ["simulate", "--workers", "4", "--labels", "10", "--requests", "200", "--rate", "20"]
    assert main([*argv, "--dispatch", "routed", "--preload", "off", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [run["name"] for run in data["runs"]] == ["routed"]
    assert data["cache_size"] == 8 and data["trace"]["requests"] == 200
    assert data["runs"][0]["completed"] == 200
    assert set(data["references"]) == {"whole", "second_half"}
    assert "wtinylfu" in capsys.readouterr().out


def test_cli_options() -> None:
    """Flags reach the options; --dispatcher-arg is checked by the dispatcher's own parser."""
    args = parse(["simulate", "--target-utilisation", "0.5", "--dispatcher-arg=--seed=3"], {})
    assert isinstance(args, SimulateArgs)
    assert (args.workers, args.labels, args.mode, args.preload) == (200, 1000, "open", "both")
    assert args.target_utilisation == 0.5 and args.dispatcher_args == ("--seed=3",)


def test_cli_help() -> None:
    """`python -m benchmark simulate --help` lists the trace and worker options."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "simulate", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--rate", "--zipf-s", "--load-ms", "--preload", "--output"):
        assert flag in done.stdout


# ---- the simulated worker's Preload and Unload ------------------------------------------------


def _one_worker() -> Simulation:
    model = WorkerModel(capacity=2, load_ms=300.0, load_stddev_ms=0.0, run_ms=10.0, run_stddev_ms=0)
    return Simulation(Config(), workers=1, model=model, seed=1)


def test_preload_reports_the_label_once_loaded() -> None:
    """A Preload loads the label (taking the load time) and then reports LabelsChanged."""
    sim = _one_worker()
    link = sim.links[0]
    link.send(pb.DispatcherMessage(preload=pb.Preload(label="a")))
    assert link.loading == ["a"] and "a" not in sim.core.registry.get("w0").labels
    sim.run(until=0.299)
    assert "a" not in sim.core.registry.get("w0").labels
    sim.run()
    assert sim.clock.now == pytest.approx(0.3)
    assert list(sim.core.registry.get("w0").labels) == ["a"]
    assert (link.preloads, link.loads, link.preload_times) == (1, 0, [0.0])


def test_a_task_waits_for_the_preload_in_progress() -> None:
    """A task on the preloading label is a hit but starts when the load ends; the engine is busy."""
    sim = _one_worker()
    sim.links[0].send(pb.DispatcherMessage(preload=pb.Preload(label="a")))
    sim.timers.call_at(0.1, sim.submit, "a")
    outcome = sim.run()
    assert (outcome.completed, outcome.misses) == (1, 0)
    assert outcome.latencies_s == [pytest.approx(0.3 + 0.01 - 0.1)]


def test_preload_honours_the_evict_hint_and_unload_drops_a_label() -> None:
    """A full worker evicts the hinted label for a preload; an Unload drops a ready label."""
    sim = _one_worker()
    link = sim.links[0]
    for label in ("a", "b"):
        sim.submit(label)
        sim.run()
    link.send(pb.DispatcherMessage(preload=pb.Preload(label="c", evict_hint=["b"])))
    sim.run()
    assert list(link.loaded) == ["a", "c"]
    assert set(sim.core.registry.get("w0").labels) == {"a", "c"}
    link.send(pb.DispatcherMessage(unload=pb.Unload(label="a")))
    sim.run()
    assert list(link.loaded) == ["c"] and set(sim.core.registry.get("w0").labels) == {"c"}


def test_second_half_misses_come_from_submission_indexes() -> None:
    """The outcome keeps each missing task's submission index; task ids follow the index."""
    sim = _one_worker()
    first = sim.submit("a")
    sim.run()
    second = sim.submit("a")
    sim.run()
    third = sim.submit("b")
    sim.run()
    assert (first.task_id, second.task_id, third.task_id) == ("t0", "t1", "t2")
    assert sim.outcome.miss_indices == [0, 2]
    assert (sim.outcome.misses_from(1), sim.outcome.misses_from(3)) == (1, 0)
