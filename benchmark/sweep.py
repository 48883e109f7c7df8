"""`python -m benchmark simulate --seeds`: one simulation over several seeds, summed.

One seed is one draw of the trace, the simulated costs and the policies' random choices, and a
routed run's misses move by about ±2% from seed to seed on the scale scenarios (200 workers x
1,000 labels), as much as a policy change is often worth. So a change is judged on the sum
over seeds and on how many seeds agree: `SeedSweep` keeps one `SimulateReport` per seed and
adds up the misses of each variant and each reference cache, and `render_sweep` prints the
per-seed rows, the totals and each variant against W-TinyLFU and LRU on one pooled cache
("at or below on k of n seeds"). The seeds run in separate processes (`jobs`); each seed's
numbers are the same whichever process ran it.
"""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmark.references import POLICIES
from benchmark.simulate import SimulateConfig, SimulateReport, simulate

__all__ = ["SeedSweep", "parse_seeds", "render_sweep", "sweep", "write_sweep_json"]

#: The references each variant is set against in the summary, in that order.
COMPARED_WITH = ("wtinylfu", "lru")


def parse_seeds(spec: str) -> tuple[int, ...]:
    """The seeds of a spec such as `1-10`, `1,4,7` or `1-3,9`, in the order given.

    Raises ValueError, naming the part that is wrong, on an empty spec, a part that is not an
    integer or a range, a range that runs backwards, or a seed given twice.
    """
    seeds: list[int] = []
    for part in (piece.strip() for piece in spec.split(",")):
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"seeds: {part!r} is not a seed or a range like 1-10") from None
        if high < low:
            raise ValueError(f"seeds: the range {part!r} runs backwards")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {spec!r} names a seed twice")
    return tuple(seeds)


@dataclass(frozen=True)
class SeedSweep:
    """One simulation's report per seed (same options otherwise), and their sums."""

    reports: tuple[SimulateReport, ...]

    def __post_init__(self) -> None:
        if not self.reports:
            raise ValueError("a sweep needs at least one seed")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(report.config.trace.seed for report in self.reports)

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants' names, as every seed ran them."""
        return tuple(run.name for run in self.reports[0].runs)

    def misses(self, variant: str, *, second_half: bool = False) -> int:
        """`variant`'s misses summed over the seeds (whole runs, or their second halves)."""
        return sum(
            r.run(variant).misses_second_half if second_half else r.run(variant).misses
            for r in self.reports
        )

    def reference(self, policy: str, *, second_half: bool = False) -> int:
        """A reference cache's misses summed over the seeds (`benchmark.references.POLICIES`)."""
        return sum(
            (r.references.second_half if second_half else r.references.whole).misses(policy)
            for r in self.reports
        )

    def seeds_at_or_below(self, variant: str, policy: str) -> int:
        """On how many seeds `variant` missed no more than the reference `policy`."""
        return sum(r.run(variant).misses <= r.references.whole.misses(policy) for r in self.reports)

    def p50_range_ms(self, variant: str) -> tuple[float, float]:
        """The lowest and highest p50 latency of `variant` over the seeds."""
        p50s = [r.run(variant).latency_p50_ms for r in self.reports]
        return min(p50s), max(p50s)

    def to_json(self) -> dict[str, Any]:
        """Every seed's report and the sums, as a JSON object."""
        return {
            "seeds": list(self.seeds),
            "totals": {
                "runs": {
                    name: {
                        "misses": self.misses(name),
                        "misses_second_half": self.misses(name, second_half=True),
                        **{
                            f"seeds_at_or_below_{policy}": self.seeds_at_or_below(name, policy)
                            for policy in COMPARED_WITH
                        },
                    }
                    for name in self.variants
                },
                "references": {
                    policy: {
                        "misses": self.reference(policy),
                        "misses_second_half": self.reference(policy, second_half=True),
                    }
                    for policy in POLICIES
                },
            },
            "reports": [report.to_json() for report in self.reports],
        }


def _simulate_seed(config: SimulateConfig, seed: int) -> SimulateReport:
    return simulate(replace(config, trace=replace(config.trace, seed=seed)))


def sweep(config: SimulateConfig, seeds: Sequence[int], *, jobs: int = 1) -> SeedSweep:
    """Run `config` once per seed (its own seed is replaced), `jobs` seeds at a time."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(seeds) == 1:
        return SeedSweep(tuple(_simulate_seed(config, seed) for seed in seeds))
    # Spawned, not forked: a fork of a process with threads (a test runner's, a logging
    # handler's) may deadlock, and each seed needs nothing from this process but its config.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(seeds)), mp_context=context) as pool:
        reports = pool.map(_simulate_seed, [config] * len(seeds), seeds)
        return SeedSweep(tuple(reports))


def write_sweep_json(result: SeedSweep, path: Path) -> None:
    """Write `result.to_json()` to `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")


def _change(value: int, reference: int) -> str:
    return f"{100.0 * (value / reference - 1.0):+.1f}%" if reference else "n/a"


def render_sweep(result: SeedSweep) -> str:
    """Per-seed misses of every variant and reference, the totals, and each variant against
    W-TinyLFU and LRU on one pooled cache."""
    from rich.console import Console
    from rich.table import Table

    first = result.reports[0]
    c, tc = first.config, first.config.trace
    rate = f" at {tc.rate:g}/s" if tc.mode == "open" else f", {tc.producers} producers"
    shape = f" s={tc.zipf_s:g}" if tc.distribution != "uniform" else ""
    title = (
        f"{c.workers} workers x {c.model.capacity} labels, {tc.labels} labels "
        f"{tc.distribution}{shape}, {tc.requests} tasks{rate}: misses on seeds "
        f"{', '.join(map(str, result.seeds))}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("seed")
    for name in (*result.variants, *POLICIES):
        table.add_column(name, justify="right")
    shown = "routed" if "routed" in result.variants else result.variants[0]
    table.add_column(f"p50 ms ({shown})", justify="right")
    for report in result.reports:
        whole = report.references.whole
        table.add_row(
            str(report.config.trace.seed),
            *(str(run.misses) for run in report.runs),
            *(str(whole.misses(policy)) for policy in POLICIES),
            f"{report.run(shown).latency_p50_ms:.1f}",
        )
    table.add_row(
        "sum",
        *(str(result.misses(name)) for name in result.variants),
        *(str(result.reference(policy)) for policy in POLICIES),
        "",
    )
    table.add_row(
        "2nd half",
        *(str(result.misses(name, second_half=True)) for name in result.variants),
        *(str(result.reference(policy, second_half=True)) for policy in POLICIES),
        "",
    )
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(table)
    n = len(result.seeds)
    for name in result.variants:
        low, high = result.p50_range_ms(name)
        against = "; ".join(
            f"{_change(result.misses(name), result.reference(policy))} vs {policy} "
            f"(at or below on {result.seeds_at_or_below(name, policy)} of {n} seeds)"
            for policy in COMPARED_WITH
        )
        console.print(
            f"{name}: {result.misses(name)} misses, {against}; p50 {low:.1f}-{high:.1f} ms"
        )
    return console.export_text()
