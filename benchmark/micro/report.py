"""The micro-benchmark's derived figures and its plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence

from benchmark.micro.decisions import DecisionResult
from benchmark.micro.load import LatencyResult


def table(rows: Sequence[Sequence[object]], header: list[str]) -> str:
    """Left-aligned columns under a header and a rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def added_latency(http: list[LatencyResult]) -> dict[str, dict[str, float]]:
    """What `/run-task` adds to the bare `/health` round trip, per client and concurrency."""
    added: dict[str, dict[str, float]] = {}
    for r in http:
        if r.endpoint != "/run-task":
            continue
        health = next(
            h
            for h in http
            if (h.endpoint, h.client, h.concurrency) == ("/health", r.client, r.concurrency)
        )
        added[f"{r.client} x{r.concurrency}"] = {
            "p50_ms": round(r.p50_ms - health.p50_ms, 3),
            "p99_ms": round(r.p99_ms - health.p99_ms, 3),
            "tasks_per_s": r.per_second,
        }
    return added


def http_tables(http: list[LatencyResult], added: dict[str, dict[str, float]]) -> str:
    """Every HTTP measurement, then the added latency."""
    columns = ["endpoint", "client", "conc", "n", "req/s", "p50 ms", "p90 ms", "p99 ms"]
    columns += ["failed", "srv cpu ms/req"]
    rows = [
        [r.endpoint, r.client, r.concurrency, r.requests, r.per_second, r.p50_ms, r.p90_ms]
        + [r.p99_ms, r.failed, r.server_cpu_ms_per_request]
        for r in http
    ]
    added_rows = [[c, v["p50_ms"], v["p99_ms"], v["tasks_per_s"]] for c, v in added.items()]
    added_header = ["client x callers", "added p50 ms", "added p99 ms", "tasks/s"]
    return table(rows, columns) + "\n\n" + table(added_rows, added_header)


def decision_ratios(small: DecisionResult, large: DecisionResult) -> dict[str, float]:
    """How much dearer each decision is with `large.workers` than with `small.workers`."""
    return {
        "place_hit": round(large.place_hit_us / small.place_hit_us, 2),
        "place_load": round(large.place_load_us / small.place_load_us, 2),
        "next_for": round(large.next_for_us / small.next_for_us, 2),
    }


def decision_table(decisions: list[DecisionResult], ratios: dict[str, float]) -> str:
    """The decision costs, one row per registry size, then the 1000/10 ratios."""
    rows: list[list[object]] = [
        [d.workers, d.place_hit_us, d.place_load_us, d.next_for_us] for d in decisions
    ]
    rows.append(["1000/10", ratios["place_hit"], ratios["place_load"], ratios["next_for"]])
    return table(rows, ["workers", "place hit us", "place load us", "next_for us"])
