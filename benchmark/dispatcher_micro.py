"""Micro-benchmark of the dispatcher alone: no-op workers, many concurrent callers.

Measures (1) the latency the dispatcher adds to a task and its throughput, with a real
`python -m dispatcher` subprocess, `--workers` no-op protocol workers answering every Task at
once over real websockets, and `--concurrency` callers posting `/run-task` through
`httpx.AsyncClient`; the same callers hitting `/health` give the bare HTTP round trip, and
"added" is the difference; (2) the cost of one routing decision of the pure policy with 10
and with 1,000 workers in the registry (timeit). With `--dispatchers 2` two dispatchers run
active-active (a shared PostgreSQL store, every no-op worker linked to both) and the callers
alternate between them: the throughput of one dispatcher against two.

Run: `python -m benchmark.dispatcher_micro [--json-out FILE]` or
`python -m benchmark dispatcher-micro ...`.
"""

from __future__ import annotations

# The command line; the parts live in `benchmark.micro` and are re-exported here under the
# names callers already use.
import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.micro.clients import RawClient
from benchmark.micro.decisions import DecisionResult, decision_cost, realistic_state
from benchmark.micro.load import LatencyResult, process_cpu_s, run_load
from benchmark.micro.peers import noop_worker
from benchmark.micro.report import (
    added_latency,
    decision_ratios,
    decision_table,
    http_tables,
)
from benchmark.micro.runner import http_benchmark, measure_http

__all__ = [
    "DecisionResult",
    "LatencyResult",
    "RawClient",
    "build_parser",
    "decision_cost",
    "http_benchmark",
    "main",
    "noop_worker",
    "process_cpu_s",
    "realistic_state",
    "run_load",
]


def build_parser() -> argparse.ArgumentParser:
    """The micro-benchmark's options."""
    p = argparse.ArgumentParser(prog="python -m benchmark dispatcher-micro", description=__doc__)
    p.add_argument("--dispatcher-url", help="measure this running dispatcher, start none")
    p.add_argument("--policy", choices=("routed", "random"), default="routed")
    p.add_argument(
        "--dispatchers",
        type=int,
        default=1,
        help="dispatchers started, active-active on one throwaway PostgreSQL store; the callers "
        "go to them in turn",
    )
    p.add_argument("--workers", type=int, default=4, help="no-op workers")
    p.add_argument("--slots", type=int, default=16, help="task slots per no-op worker")
    p.add_argument("--labels", type=int, default=4, help="labels, uniform over tasks")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent callers")
    p.add_argument("--requests", type=int, default=4000, help="requests per measurement")
    p.add_argument(
        "--paced-rate",
        type=float,
        action="append",
        default=None,
        help="also measure the raw callers paced to this total rate (req/s); repeatable "
        "(default: 500 and 1000)",
    )
    p.add_argument("--warmup", type=int, default=500, help="requests before measuring")
    p.add_argument("--decision-iterations", type=int, default=20000)
    p.add_argument("--skip-http", action="store_true", help="only the decision cost")
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark, print tables, write JSON if asked; 0 on success."""
    args = build_parser().parse_args(argv)
    if args.paced_rate is None:
        args.paced_rate = [500.0, 1000.0]
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if not args.skip_http:
        http = measure_http(args)
        added = added_latency(http)
        report["http"] = [asdict(r) for r in http]
        report["added_latency"] = added
        print(http_tables(http, added))
        print()
    # 10,000 as well, to show the cost stays flat past the target's 1,000.
    decisions = [decision_cost(n, args.decision_iterations) for n in (10, 1000, 10_000)]
    ratios = decision_ratios(decisions[0], decisions[1])
    report["decisions"] = [asdict(d) for d in decisions]
    report["decision_cost_ratio_1000_vs_10"] = ratios
    print(decision_table(decisions, ratios))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
