"""The benchmark's text summary, in the original system's format.

For each policy a "Worker Log Summary" (Total Label Misses, Tasks Completed,
Average Task Runtime) and a "Producer Log Summary" (Total Requests, Total Failed
Requests, Total Synchronous Requests, Total Dispatched Jobs), then one table with
the policies side by side, client latency percentiles, throughput and the Belady
lower bound. Pure string formatting.
"""

from __future__ import annotations

import math

from benchmark.results import BenchmarkResult, PolicyResult


def _fmt_s(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def policy_block(result: PolicyResult) -> str:
    """The original system's two summaries for one policy."""
    p = result.producers
    lines = [
        f"=== {result.policy} dispatch ===",
        "Worker Log Summary",
        f"  Total Label Misses: {result.label_misses}",
        f"  Tasks Completed: {result.tasks_completed}",
        f"  Average Task Runtime: {result.avg_task_runtime_s:.3f} s",
        "Producer Log Summary",
        f"  Total Requests: {p.requests}",
        f"  Total Failed Requests: {p.failed}",
        f"  Total Synchronous Requests: {p.synchronous}",
        f"  Total Dispatched Jobs: {p.dispatched}",
    ]
    if p.errors:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items()))
        lines.append(f"  Failures by error: {errors}")
    return "\n".join(lines)


def comparison_table(result: BenchmarkResult) -> str:
    """The policies side by side, with the lower bound on misses."""
    names = list(result.policies)
    rows: list[tuple[str, list[str]]] = [
        ("Total Label Misses", [str(result.policies[n].label_misses) for n in names]),
        ("Tasks Completed", [str(result.policies[n].tasks_completed) for n in names]),
        (
            "Average Task Runtime (s)",
            [f"{result.policies[n].avg_task_runtime_s:.3f}" for n in names],
        ),
        ("Failed Requests", [str(result.policies[n].producers.failed) for n in names]),
        ("Latency p50 (s)", [_fmt_s(result.policies[n].latency(50)) for n in names]),
        ("Latency p95 (s)", [_fmt_s(result.policies[n].latency(95)) for n in names]),
        ("Latency p99 (s)", [_fmt_s(result.policies[n].latency(99)) for n in names]),
        ("Throughput (tasks/s)", [f"{result.policies[n].throughput:.2f}" for n in names]),
        ("Wall time (s)", [f"{result.policies[n].producers.duration_s:.1f}" for n in names]),
    ]
    label_w = max(len(r[0]) for r in rows) + 2
    col_w = max([12, *(len(n) + 2 for n in names)])
    header = " " * label_w + "".join(n.rjust(col_w) for n in names)
    out = [header]
    out += [label.ljust(label_w) + "".join(v.rjust(col_w) for v in vals) for label, vals in rows]
    bound = result.bound
    out.append(
        f"Belady lower bound on misses (one cache of {bound['cache_size']}): "
        f"{bound['misses']} (compulsory {bound['compulsory']}); "
        f"LRU on one cache: {result.lru_reference['misses']}"
    )
    if "random" in result.policies and "routed" in result.policies:
        r, o = result.policies["random"], result.policies["routed"]
        if o.label_misses > 0:
            out.append(f"Misses random/routed: {r.label_misses / o.label_misses:.2f}x")
        if o.avg_task_runtime_s > 0:
            ratio = r.avg_task_runtime_s / o.avg_task_runtime_s
            out.append(f"Average task runtime random/routed: {ratio:.2f}x")
    return "\n".join(out)


def render(result: BenchmarkResult) -> str:
    """The whole summary: a header, each policy's block, then the comparison."""
    params = result.params
    head = (
        f"Benchmark {result.name}: {params.get('workers')} workers x capacity "
        f"{params.get('capacity')}, engine {params.get('engine')}, {params.get('labels')} labels "
        f"({params.get('distribution')}), {params.get('requests')} requests, "
        f"mode {params.get('mode')}, time scale {params.get('time_scale')}, "
        f"trace {result.trace.get('fingerprint')}"
    )
    blocks = [head, *(policy_block(p) for p in result.policies.values()), comparison_table(result)]
    return "\n\n".join(blocks)
