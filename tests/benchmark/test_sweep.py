"""`python -m benchmark simulate --seeds`: one simulation over several seeds, summed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.__main__ import main, parse
from benchmark.simulate import SimulateReport, simulate
from benchmark.sweep import SeedSweep, parse_seeds, render_sweep, sweep
from tests.benchmark.test_simulate import SMALL, _without_wall_times

#: The small Zipf simulation of test_simulate, shorter, with routed and random only.
TINY = replace(
    SMALL, trace=replace(SMALL.trace, requests=1500), policies=("random", "routed"), preload="off"
)
SEEDS = (1, 2, 3)


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [
        ("1-10", tuple(range(1, 11))),
        ("1,4,7", (1, 4, 7)),
        ("1-3,9", (1, 2, 3, 9)),
        (" 5 ", (5,)),
        ("0-1", (0, 1)),
    ],
)
def test_seed_specs(spec: str, seeds: tuple[int, ...]) -> None:
    """A spec names seeds one by one, by ranges, or both, in the order given."""
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "'' is not a seed"),
        ("a", "'a' is not a seed"),
        ("1-", "'1-' is not a seed"),
        ("3-1", "'3-1' runs backwards"),
        ("1,1", "names a seed twice"),
        ("1-3,2", "names a seed twice"),
    ],
)
def test_bad_seed_specs_are_refused(spec: str, message: str) -> None:
    """A spec that is not seeds and ranges, runs backwards or repeats a seed says so."""
    with pytest.raises(ValueError, match=message):
        parse_seeds(spec)


@pytest.fixture(scope="module")
def single_runs() -> dict[int, SimulateReport]:
    return {seed: simulate(replace(TINY, trace=replace(TINY.trace, seed=seed))) for seed in SEEDS}


@pytest.fixture(scope="module")
def result() -> SeedSweep:
    return sweep(TINY, SEEDS)


def test_each_seed_is_the_single_run_of_that_seed(
    result: SeedSweep, single_runs: dict[int, SimulateReport]
) -> None:
    """The sweep's report of seed N is what `simulate` gives with seed N."""
    assert result.seeds == SEEDS
    for report in result.reports:
        assert _without_wall_times(report) == _without_wall_times(
            single_runs[report.config.trace.seed]
        )


def test_totals_add_up_the_seeds(result: SeedSweep, single_runs: dict[int, SimulateReport]) -> None:
    """Misses of each variant and each reference are the sums of the single runs'; the seeds
    at or below a reference are counted seed by seed."""
    runs = single_runs.values()
    for name in ("random", "routed"):
        assert result.misses(name) == sum(r.run(name).misses for r in runs)
        assert result.misses(name, second_half=True) == sum(
            r.run(name).misses_second_half for r in runs
        )
        for policy in ("lru", "wtinylfu"):
            expected = sum(r.run(name).misses <= r.references.whole.misses(policy) for r in runs)
            assert result.seeds_at_or_below(name, policy) == expected
    for policy in ("compulsory", "belady", "lru", "lfu", "wtinylfu"):
        assert result.reference(policy) == sum(r.references.whole.misses(policy) for r in runs)
    # Random reloads all day; routed is far below it on every seed.
    assert result.misses("routed") * 2 < result.misses("random")
    assert result.seeds_at_or_below("random", "lru") == 0


def test_seeds_in_several_processes_give_the_same_without_wall_times(result: SeedSweep) -> None:
    """`jobs` changes only where the seeds run, not what they give."""
    parallel = sweep(TINY, SEEDS, jobs=2)
    assert [_without_wall_times(r) for r in parallel.reports] == [
        _without_wall_times(r) for r in result.reports
    ]


def test_render_shows_every_seed_the_sums_and_the_comparisons(result: SeedSweep) -> None:
    """The table has a row per seed and the sums; each variant is set against W-TinyLFU and
    LRU with its count of seeds at or below them."""
    text = render_sweep(result)
    lines = text.splitlines()
    for seed in SEEDS:
        assert any(line.startswith(f"│ {seed} ") for line in lines), text
    assert str(result.misses("routed")) in text and "│ sum" in text
    below = result.seeds_at_or_below("routed", "lru")
    assert f"vs lru (at or below on {below} of 3 seeds)" in text


def test_an_empty_sweep_and_no_jobs_are_refused() -> None:
    """A sweep of no seed, or with fewer than one process, is refused."""
    with pytest.raises(ValueError, match="at least one seed"):
        SeedSweep(())
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        sweep(TINY, SEEDS, jobs=0)


def test_cli_sweeps_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --seeds 1-2` prints the summed table and writes every seed and the totals."""
    out = tmp_path / "sweep.json"
    argv = ["simulate", "--workers", "4", "--labels", "10", "--requests", "200", "--rate", "20"]
    argv += ["--dispatch", "routed", "--preload", "off", "--seeds", "1-2", "--output", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["seeds"] == [1, 2]
    assert [r["trace"]["seed"] for r in data["reports"]] == [1, 2]
    total = sum(r["runs"][0]["misses"] for r in data["reports"])
    assert data["totals"]["runs"]["routed"]["misses"] == total
    lru = sum(r["references"]["whole"]["lru"] for r in data["reports"])
    assert data["totals"]["references"]["lru"]["misses"] == lru
    assert "routed: " in capsys.readouterr().out


def test_cli_refuses_a_bad_seed_spec(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --seeds or --jobs is one line and exit 2, before anything runs."""
    for argv in (["simulate", "--seeds", "4-2"], ["simulate", "--seeds", "1-2", "--jobs", "0"]):
        with pytest.raises(SystemExit) as exited:
            parse(argv, {})
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "runs backwards" in err and "--jobs must be at least 1" in err
