"""`python -m benchmark`: run | demo | swarm | dispatcher-micro.

`run` compares random and routed dispatch on one seeded trace (DESIGN.md section
8); `demo` is the project's main command (a real Triton cluster answering a real
embedding request); `swarm` runs many SIMULATED workers in one process (scale
runs); `dispatcher-micro` is the dispatcher's micro-benchmark.

Environment: `NUM_WORKERS` is the default of `--workers`; `RANDOM_DISPATCH=true`
selects `--dispatch random`, `RANDOM_DISPATCH=false` `--dispatch routed` (unset:
both), as in the original system.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import cast

from benchmark.errors import BenchmarkError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _default_dispatch() -> str:
    value = os.environ.get("RANDOM_DISPATCH", "").strip().lower()
    if value in _TRUE:
        return "random"
    if value in _FALSE:
        return "routed"
    return "both"


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="random versus routed dispatch on one seeded trace")
    p.add_argument("--workers", type=int, default=int(os.environ.get("NUM_WORKERS") or 2))
    p.add_argument("--capacity", type=int, default=2)
    p.add_argument("--engine", choices=["simulated", "onnxruntime", "triton"], default="simulated")
    p.add_argument("--labels", type=int, default=5)
    p.add_argument("--distribution", choices=["uniform", "zipf"], default="uniform")
    p.add_argument("--zipf-s", type=float, default=1.1)
    p.add_argument("--requests", type=int, default=2400)
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--wait-avg", type=float, default=2.5)
    p.add_argument("--wait-stddev", type=float, default=1.0)
    p.add_argument("--mode", choices=["closed", "open"], default="closed")
    p.add_argument("--rate", type=float, default=10.0, help="open loop: requests/s (wall clock)")
    p.add_argument("--dispatch", choices=["random", "routed", "both"], default=_default_dispatch())
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="multiplies think times and simulated costs (1 = real time)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--submit", choices=["sync", "async"], default="sync")
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--dispatcher-url", default=None, help="use this dispatcher, start nothing")
    p.add_argument(
        "--swarm",
        action="store_true",
        help="run the workers as SIMULATED ones inside one process (scale runs)",
    )
    p.add_argument("--model-repository", type=Path, default=None)
    for flag in ("sim-load-ms", "sim-load-stddev-ms", "sim-run-ms", "sim-run-stddev-ms"):
        p.add_argument(f"--{flag}", type=float, default=None, help="simulated cost override")
    p.add_argument(
        "--dispatcher-arg",
        action="append",
        default=[],
        help="extra flag for `python -m dispatcher` (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ready-timeout-s", type=float, default=120.0)


def _cmd_run(ns: argparse.Namespace) -> int:
    from benchmark.runner import RunConfig, policies_of, run_benchmark
    from benchmark.summary import render

    if ns.swarm and ns.engine != "simulated":
        raise SystemExit("--swarm runs simulated workers: use --engine simulated")
    name = f"{ns.engine}-{ns.workers}w-{ns.labels}l-{ns.distribution}-{ns.mode}-{ns.requests}r"
    out = ns.out or Path("benchmark-results") / name
    sim_costs = {
        key: getattr(ns, key)
        for key in ("sim_load_ms", "sim_load_stddev_ms", "sim_run_ms", "sim_run_stddev_ms")
        if getattr(ns, key) is not None
    }
    cfg = RunConfig(
        out=out,
        workers=ns.workers,
        capacity=ns.capacity,
        engine=ns.engine,
        labels=ns.labels,
        distribution=ns.distribution,
        zipf_s=ns.zipf_s,
        requests=ns.requests,
        producers=ns.producers,
        wait_avg=ns.wait_avg,
        wait_stddev=ns.wait_stddev,
        mode=ns.mode,
        rate=ns.rate,
        dispatch=policies_of(ns.dispatch),
        time_scale=ns.time_scale,
        seed=ns.seed,
        submit=ns.submit,
        dispatcher_url=ns.dispatcher_url,
        swarm=ns.swarm,
        model_repository=ns.model_repository,
        sim_costs=sim_costs,
        dispatcher_args=list(ns.dispatcher_arg),
        progress=not ns.no_progress,
        ready_timeout_s=ns.ready_timeout_s,
    )
    result = run_benchmark(cfg)
    print(render(result))
    print(f"\nresults: {out / 'results.json'}, {out / 'summary.txt'}, charts *.png in {out}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the Ctrl-C path, so every `with LocalCluster` block cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmark` and `smartrouting-benchmark`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "dispatcher-micro":
        from benchmark import dispatcher_micro

        return int(dispatcher_micro.main(args[1:]) or 0)
    if args and args[0] == "swarm":
        from benchmark.swarm import main as swarm_main

        return swarm_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    demo = sub.add_parser("demo", help="real Triton cluster + real embedding request")
    demo.add_argument("--workers", type=int, default=int(os.environ.get("NUM_WORKERS") or 2))
    demo.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
    demo.add_argument(
        "--dispatcher-port",
        type=int,
        default=int(os.environ.get("DISPATCHER_PORT") or 0),
        help="port of the dispatcher (DISPATCHER_PORT; default: a free one)",
    )
    demo.add_argument("--engine", choices=["triton", "onnxruntime"], default="triton")
    demo.add_argument("--run-dir", type=Path, default=None)
    demo.add_argument("--ready-timeout-s", type=float, default=180.0)
    demo.add_argument(
        "--worker-arg", action="append", default=[], help="extra flag for `python -m worker`"
    )
    sub.add_parser("swarm", help="many SIMULATED workers in one process (see --help there)")
    sub.add_parser("dispatcher-micro", help="the dispatcher's micro-benchmark")
    ns = parser.parse_args(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C must always stop us cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if ns.command == "run":
            return _cmd_run(ns)
        from benchmark.demo import DemoConfig, run_demo

        return run_demo(
            DemoConfig(
                workers=ns.workers,
                keep_running=ns.keep_running,
                engine=cast(str, ns.engine),
                run_dir=ns.run_dir,
                ready_timeout_s=ns.ready_timeout_s,
                worker_args=list(ns.worker_arg),
                dispatcher_port=ns.dispatcher_port,
            )
        )
    except BenchmarkError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the cluster was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
