"""`python -m benchmark`: run | simulate | demo | swarm | dispatcher-micro | throughput.

`run` compares random and routed dispatch on one seeded trace (docs/architecture.md);
`simulate` replays such a trace through the real dispatcher core in virtual time (seconds
for 200 workers x 72,000 tasks); `demo` is the project's main command (a real Triton cluster
answering a real embedding request); `swarm` runs many SIMULATED workers in one process
(scale runs); `dispatcher-micro` is the dispatcher's micro-benchmark; `throughput` measures
one worker on one hot label under concurrent callers (slots, dynamic batching, engines).

Each subcommand's options are one dataclass below (smartrouting.config derives the flags);
every flag has an environment variable `BENCHMARK_<COMMAND>_<FIELD>`, and `--help` of each
subcommand shows the defaults. As in the original system, `NUM_WORKERS` is the default of
`--workers` (run, demo), and `RANDOM_DISPATCH=true` selects `--dispatch random`,
`RANDOM_DISPATCH=false` `--dispatch routed` (unset: both). `--log-level` and `--log-format`
(before the subcommand; `BENCHMARK_LOG_LEVEL`, `BENCHMARK_LOG_FORMAT`) set up the
benchmark's own log (smartrouting/logs.py); the programs it starts have their own flags.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Literal

from benchmark.cluster import EngineName, PolicyName
from benchmark.errors import BenchmarkError
from benchmark.producers import SubmitMode
from benchmark.simulate import PreloadChoice, SimulateConfig
from benchmark.swarm import FALLBACK_COSTS, default_costs
from benchmark.sweep import parse_seeds
from benchmark.trace import Distribution, Mode
from dispatcher.config import Config
from smartrouting import config as toolkit
from smartrouting.config import setting
from smartrouting.logs import LogFormat, configure_logging

Dispatch = Literal["random", "routed", "both"]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIM = "the simulated engine's measured cost"
_DISPATCHER = Config()


@dataclass(frozen=True)
class CommonArgs:
    """Options of every subcommand, given before it."""

    env_prefix: ClassVar[str] = "BENCHMARK_"

    log_level: Literal["critical", "error", "warning", "info", "debug"] = setting(
        "warning", "log level of the benchmark's own lines (progress goes to stdout)"
    )
    log_format: LogFormat = setting(
        "text", "log lines: text, or json (one object per line, for log collectors)"
    )


@dataclass(frozen=True)
class RunArgs:
    """`run`: random versus routed dispatch on one seeded trace."""

    env_prefix: ClassVar[str] = "BENCHMARK_RUN_"

    workers: int = setting(
        2, "workers in the cluster", env=("BENCHMARK_RUN_WORKERS", "NUM_WORKERS")
    )
    capacity: int = setting(2, "labels each worker keeps loaded")
    engine: EngineName = setting("simulated", "engine of the workers")
    labels: int = setting(5, "distinct labels (models) in the trace")
    distribution: Distribution = setting("uniform", "how labels are drawn")
    zipf_s: float = setting(1.1, "exponent of the zipf distribution")
    requests: int = setting(2400, "requests in the trace")
    producers: int = setting(2, "concurrent producers")
    wait_avg: float = setting(2.5, "closed loop: mean think time between requests, s")
    wait_stddev: float = setting(1.0, "closed loop: think time stddev, s")
    mode: Mode = setting("closed", "closed: producers wait for answers; open: a fixed rate")
    rate: float = setting(10.0, "open loop: requests/s (wall clock)")
    dispatch: Dispatch = setting(
        "both", "policies to run on the same trace (RANDOM_DISPATCH=true/false: random/routed)"
    )
    time_scale: float = setting(0.05, "multiplies think times and simulated costs (1 = real time)")
    seed: int = setting(1, "seed of the trace and the simulated costs")
    submit: SubmitMode = setting("sync", "sync: POST /run-task; async: POST /tasks, then poll")
    out: Path | None = setting(
        None,
        "results directory",
        shown_default="benchmark-results/<engine>-<workers>w-<labels>l-<distribution>-<mode>"
        "[-<dispatchers>d]-<requests>r",
    )
    dispatcher_url: str | None = setting(None, "use this running dispatcher, start nothing")
    dispatchers: int = setting(
        1,
        "dispatcher processes, active-active: more than one share a PostgreSQL task store and "
        "every worker links to all; requests go to them round robin",
    )
    store_url: str | None = setting(
        None,
        "postgresql:// URL of the task store shared by the dispatchers",
        secret=True,
        shown_default="a throwaway server started for the run (needs PostgreSQL installed)",
    )
    swarm: bool = setting(False, "run the workers as SIMULATED ones inside one process")
    model_repository: Path | None = setting(
        None, "model repository of the workers", shown_default="<out>/models"
    )
    sim_load_ms: float | None = setting(None, "simulated mean load time, ms", shown_default=_SIM)
    sim_load_stddev_ms: float | None = setting(
        None, "simulated load time stddev, ms", shown_default=_SIM
    )
    sim_run_ms: float | None = setting(None, "simulated mean run time, ms", shown_default=_SIM)
    sim_run_stddev_ms: float | None = setting(
        None, "simulated run time stddev, ms", shown_default=_SIM
    )
    dispatcher_args: tuple[str, ...] = setting(
        (),
        "extra flag for `python -m dispatcher` (repeatable; whitespace-separated in the variable)",
        flag="--dispatcher-arg",
        repeat=True,
        sep=None,
    )
    progress: bool = setting(True, "print progress while the run goes")
    ready_timeout_s: float = setting(120.0, "how long the cluster may take to be ready")

    def __post_init__(self) -> None:
        if self.swarm and self.engine != "simulated":
            raise ValueError("--swarm runs simulated workers: use --engine simulated")
        if self.dispatchers < 1:
            raise ValueError(f"--dispatchers must be at least 1, got {self.dispatchers}")
        if self.dispatcher_url is not None and self.dispatchers > 1:
            raise ValueError("--dispatcher-url uses a running dispatcher: no --dispatchers")


@dataclass(frozen=True)
class SimulateArgs:
    """`simulate`: a seeded trace through the REAL dispatcher core in virtual time."""

    env_prefix: ClassVar[str] = "BENCHMARK_SIMULATE_"

    workers: int = setting(200, "simulated workers")
    capacity: int = setting(2, "labels each worker keeps loaded")
    slots: int = setting(1, "tasks each worker runs at once")
    labels: int = setting(1000, "distinct labels (models) in the trace")
    distribution: Distribution = setting("zipf", "how labels are drawn")
    zipf_s: float = setting(1.1, "exponent of the zipf (and shifting) distribution")
    shift_every_s: float = setting(10.0, "shifting: seconds of trace time between hot-set moves")
    requests: int = setting(72_000, "requests in the trace")
    mode: Mode = setting("open", "open: Poisson arrivals at --rate; closed: producers wait")
    rate: float = setting(1200.0, "open loop: requests/s (virtual time)")
    producers: int = setting(2, "closed loop: concurrent producers")
    wait_avg: float = setting(2.5, "closed loop: mean think time between requests, s")
    wait_stddev: float = setting(1.0, "closed loop: think time stddev, s")
    dispatch: Dispatch = setting("both", "policies to run on the same trace")
    preload: PreloadChoice = setting(
        "both", "routed: with the dispatcher's preloading (on), without (off), or both"
    )
    seed: int = setting(1, "seed of the trace, the simulated costs and the policies")
    seeds: str | None = setting(
        None,
        "run once per seed (e.g. 1-10 or 1,4,7; replaces --seed) and sum the misses",
        shown_default="one run, --seed",
    )
    jobs: int = setting(1, "with --seeds: seeds simulated at once, each in its own process")
    # Defaults replaced at start-up by the worker's simulated-engine ones (default_costs).
    load_ms: float = setting(FALLBACK_COSTS["sim_load_ms"], "mean load time, ms")
    load_stddev_ms: float = setting(FALLBACK_COSTS["sim_load_stddev_ms"], "load stddev, ms")
    run_ms: float = setting(FALLBACK_COSTS["sim_run_ms"], "mean run time, ms")
    run_stddev_ms: float = setting(FALLBACK_COSTS["sim_run_stddev_ms"], "run stddev, ms")
    max_queue: int = setting(1_000_000, "dispatcher: queued tasks before admission refuses")
    task_timeout_s: float = setting(300.0, "dispatcher: deadline of a task, s")
    demand_time_constant_s: float = setting(
        _DISPATCHER.demand_time_constant_s, "dispatcher: time constant of the demand model, s"
    )
    target_utilisation: float = setting(
        _DISPATCHER.target_utilisation, "dispatcher: busy share of a copy the demand model plans"
    )
    max_preload_share: float = setting(
        _DISPATCHER.max_preload_share, "dispatcher: most of the idle workers preloading at once"
    )
    dispatcher_args: tuple[str, ...] = setting(
        (),
        "any other `python -m dispatcher` flag (repeatable; whitespace-separated in the variable)",
        flag="--dispatcher-arg",
        repeat=True,
        sep=None,
    )
    output: Path | None = setting(None, "also write the report as JSON here")

    def __post_init__(self) -> None:
        if self.seeds is not None:
            parse_seeds(self.seeds)  # a bad spec is refused before anything runs
        if self.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {self.jobs}")


@dataclass(frozen=True)
class DemoArgs:
    """`demo`: a real Triton cluster answering a real embedding request."""

    env_prefix: ClassVar[str] = "BENCHMARK_DEMO_"

    workers: int = setting(
        2, "workers in the cluster", env=("BENCHMARK_DEMO_WORKERS", "NUM_WORKERS")
    )
    keep_running: bool = setting(False, "stay up until Ctrl-C")
    keep_run_dir: bool = setting(False, "keep the temporary run directory (logs, models)")
    dispatcher_port: int = setting(
        0,
        "port of the dispatcher; 0: a free one",
        env=("BENCHMARK_DEMO_DISPATCHER_PORT", "DISPATCHER_PORT"),
    )
    engine: Literal["triton", "onnxruntime"] = setting("triton", "engine of the workers")
    dispatchers: int = setting(
        1,
        "dispatchers, active-active (more than 1: a throwaway PostgreSQL is their shared store,"
        " and the second call goes through another dispatcher)",
    )
    run_dir: Path | None = setting(
        None, "directory for logs and the model repository", shown_default="a new temporary one"
    )
    ready_timeout_s: float = setting(180.0, "how long the cluster may take to be ready")
    worker_args: tuple[str, ...] = setting(
        (),
        "extra flag for `python -m worker` (repeatable; whitespace-separated in the variable)",
        flag="--worker-arg",
        repeat=True,
        sep=None,
    )


@dataclass(frozen=True)
class SwarmArgs:
    """`swarm`: many SIMULATED workers in one process (see benchmark/swarm.py)."""

    env_prefix: ClassVar[str] = "BENCHMARK_SWARM_"

    dispatcher_url: tuple[str, ...] = setting(
        ("ws://127.0.0.1:8080/worker-listen",),
        "websocket URL of a dispatcher's /worker-listen; repeat the flag (or separate the "
        "variable's URLs with commas) to link every worker to several dispatchers",
        repeat=True,
    )
    workers: int = setting(200, "simulated workers")
    capacity: int = setting(2, "labels each worker keeps loaded")
    worker_prefix: str = setting("w-", "prefix of the worker ids")
    time_scale: float = setting(1.0, "multiplies simulated costs (1 = real time)")
    seed: int = setting(1, "seed of the simulated costs")
    # Defaults replaced at start-up by the worker's simulated-engine ones (default_costs).
    sim_load_ms: float = setting(FALLBACK_COSTS["sim_load_ms"], "mean load time, ms")
    sim_load_stddev_ms: float = setting(FALLBACK_COSTS["sim_load_stddev_ms"], "load stddev, ms")
    sim_run_ms: float = setting(FALLBACK_COSTS["sim_run_ms"], "mean run time, ms")
    sim_run_stddev_ms: float = setting(FALLBACK_COSTS["sim_run_stddev_ms"], "run stddev, ms")


@dataclass(frozen=True)
class MicroArgs:
    """`dispatcher-micro`: the dispatcher's micro-benchmark (benchmark/dispatcher_micro.py)."""

    env_prefix: ClassVar[str] = "BENCHMARK_MICRO_"

    dispatcher_url: str | None = setting(None, "measure this running dispatcher, start none")
    policy: PolicyName = setting("routed", "routing policy of the started dispatcher")
    dispatchers: int = setting(
        1,
        "dispatchers started, active-active on one throwaway PostgreSQL store; the callers "
        "go to them in turn",
    )
    workers: int = setting(4, "no-op workers")
    slots: int = setting(16, "task slots per no-op worker")
    labels: int = setting(4, "labels, uniform over tasks")
    concurrency: int = setting(64, "concurrent callers")
    requests: int = setting(4000, "requests per measurement")
    paced_rates: tuple[float, ...] = setting(
        (500.0, 1000.0),
        "also measure the callers paced to this total rate, req/s (repeatable)",
        flag="--paced-rate",
        repeat=True,
    )
    warmup: int = setting(500, "requests before measuring")
    decision_iterations: int = setting(20_000, "timeit iterations of one routing decision")
    skip_http: bool = setting(False, "only measure the decision cost")
    json_out: Path | None = setting(None, "write the results as JSON here")


@dataclass(frozen=True)
class ThroughputArgs:
    """`throughput`: one worker, one hot label, N concurrent callers (benchmark/throughput.py)."""

    env_prefix: ClassVar[str] = "BENCHMARK_THROUGHPUT_"

    engines: tuple[Literal["triton", "onnxruntime"], ...] = setting(
        ("triton", "onnxruntime"), "engines to measure (repeatable)", flag="--engine", repeat=True
    )
    slots: tuple[int, ...] = setting((1, 64), "worker slots to measure (repeatable)", repeat=True)
    batching: tuple[Literal["off", "on"], ...] = setting(
        ("off", "on"), "dynamic batching off and/or on (repeatable)", repeat=True
    )
    callers: tuple[int, ...] = setting(
        (1, 8, 32, 64), "concurrent callers to measure (repeatable)", repeat=True
    )
    texts: tuple[int, ...] = setting((1, 8), "texts per task to measure (repeatable)", repeat=True)
    duration_s: float = setting(5.0, "measured seconds per cell")
    warmup_s: float = setting(1.0, "seconds of load before each cell's measurement")
    batch_delay_ms: float = setting(2.0, "dynamic batching: longest wait for a batch, ms")
    run_dir: Path | None = setting(
        None, "directory for logs and the model repositories", shown_default="a new temporary one"
    )
    out: Path | None = setting(None, "write results.json here")
    ready_timeout_s: float = setting(180.0, "how long each cluster may take to be ready")


_COMMANDS: dict[str, tuple[type[Any], str]] = {
    "run": (RunArgs, "random versus routed dispatch on one seeded trace"),
    "simulate": (SimulateArgs, "the real dispatcher core on a seeded trace, in virtual time"),
    "demo": (DemoArgs, "real Triton cluster + real embedding request"),
    "swarm": (SwarmArgs, "many SIMULATED workers in one process"),
    "dispatcher-micro": (MicroArgs, "the dispatcher's micro-benchmark"),
    "throughput": (ThroughputArgs, "one worker, one hot label: slots, batching, engines"),
}


def _default_dispatch(environ: Mapping[str, str] | None = None) -> Dispatch:
    """`--dispatch` as RANDOM_DISPATCH asks: true → random, false → routed, unset → both."""
    value = (os.environ if environ is None else environ).get("RANDOM_DISPATCH", "")
    if value.strip().lower() in _TRUE:
        return "random"
    if value.strip().lower() in _FALSE:
        return "routed"
    return "both"


def _start_up_defaults(
    environ: Mapping[str, str] | None = None,
) -> dict[type[Any], Mapping[str, Any]]:
    # RANDOM_DISPATCH picks run's default policies; the swarm's costs are the worker's own.
    return {
        RunArgs: {"dispatch": _default_dispatch(environ)},
        SwarmArgs: default_costs(),
        SimulateArgs: {key.removeprefix("sim_"): value for key, value in default_costs().items()},
    }


def build_parsers(
    defaults: Mapping[type[Any], Mapping[str, Any]] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the parser of each subcommand, by name.

    `defaults`: per options class, the defaults computed at start-up (_start_up_defaults).
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    toolkit.add_arguments(parser, CommonArgs)
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = _start_up_defaults() if defaults is None else defaults
    subparsers = {}
    for name, (cls, summary) in _COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=cls.__doc__)
        subparsers[name] = toolkit.add_arguments(sub, cls, defaults=defaults.get(cls))
    return parser, subparsers


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """The options of the chosen subcommand (RunArgs, DemoArgs, ...); exits 2 on a bad one."""
    return parse_all(argv, environ)[1]


def parse_all(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[CommonArgs, Any]:
    """The common options and the chosen subcommand's; exits 2 on a bad one."""
    defaults = _start_up_defaults(environ)
    parser, subparsers = build_parsers(defaults)
    flags = vars(parser.parse_args(argv))
    cls = _COMMANDS[flags["command"]][0]
    try:
        common = toolkit.load(CommonArgs, flags, environ)
        return common, toolkit.load(cls, flags, environ, defaults=defaults.get(cls))
    except toolkit.ConfigError as exc:
        toolkit.fail(subparsers[flags["command"]], exc)


def _cmd_run(args: RunArgs) -> int:
    from benchmark.runner import RunConfig, policies_of, run_benchmark
    from benchmark.summary import render

    name = f"{args.engine}-{args.workers}w-{args.labels}l-{args.distribution}-{args.mode}"
    if args.dispatchers > 1:
        name += f"-{args.dispatchers}d"
    out = args.out or Path("benchmark-results") / f"{name}-{args.requests}r"
    sim_costs = {
        key: value
        for key in ("sim_load_ms", "sim_load_stddev_ms", "sim_run_ms", "sim_run_stddev_ms")
        if (value := getattr(args, key)) is not None
    }
    cfg = RunConfig(
        out=out,
        workers=args.workers,
        capacity=args.capacity,
        engine=args.engine,
        labels=args.labels,
        distribution=args.distribution,
        zipf_s=args.zipf_s,
        requests=args.requests,
        producers=args.producers,
        wait_avg=args.wait_avg,
        wait_stddev=args.wait_stddev,
        mode=args.mode,
        rate=args.rate,
        dispatch=policies_of(args.dispatch),
        time_scale=args.time_scale,
        seed=args.seed,
        submit=args.submit,
        dispatcher_url=args.dispatcher_url,
        dispatchers=args.dispatchers,
        store_url=args.store_url,
        swarm=args.swarm,
        model_repository=args.model_repository,
        sim_costs=sim_costs,
        dispatcher_args=list(args.dispatcher_args),
        progress=args.progress,
        ready_timeout_s=args.ready_timeout_s,
    )
    result = run_benchmark(cfg)
    print(render(result))
    print(f"\nresults: {out / 'results.json'}, {out / 'summary.txt'}, charts *.png in {out}")
    return 0


def _cmd_simulate(args: SimulateArgs) -> int:
    from benchmark.simulate import render, simulate, write_json
    from benchmark.simulation import WorkerModel
    from benchmark.trace import TraceConfig
    from dispatcher.config import config_from_args

    # The dispatcher's own parser reads --dispatcher-arg; the environment is left out so that
    # the same flags always give the same numbers.
    base = config_from_args(list(args.dispatcher_args), environ={})
    dispatcher = replace(
        base,
        max_queue=args.max_queue,
        task_timeout_s=args.task_timeout_s,
        demand_time_constant_s=args.demand_time_constant_s,
        target_utilisation=args.target_utilisation,
        max_preload_share=args.max_preload_share,
    )
    config = SimulateConfig(
        trace=TraceConfig(
            requests=args.requests,
            producers=args.producers,
            labels=args.labels,
            distribution=args.distribution,
            zipf_s=args.zipf_s,
            shift_every_s=args.shift_every_s,
            wait_avg=args.wait_avg,
            wait_stddev=args.wait_stddev,
            mode=args.mode,
            rate=args.rate,
            seed=args.seed,
        ),
        workers=args.workers,
        model=WorkerModel(
            capacity=args.capacity,
            slots=args.slots,
            load_ms=args.load_ms,
            load_stddev_ms=args.load_stddev_ms,
            run_ms=args.run_ms,
            run_stddev_ms=args.run_stddev_ms,
        ),
        dispatcher=dispatcher,
        policies=("random", "routed") if args.dispatch == "both" else (args.dispatch,),
        preload=args.preload,
    )
    if args.seeds is not None:
        return _simulate_seeds(config, parse_seeds(args.seeds), args.jobs, args.output)
    report = simulate(config)
    print(render(report), end="")
    if args.output is not None:
        write_json(report, args.output)
        print(f"results: {args.output}")
    return 0


def _simulate_seeds(
    config: SimulateConfig, seeds: tuple[int, ...], jobs: int, output: Path | None
) -> int:
    from benchmark.sweep import render_sweep, sweep, write_sweep_json

    result = sweep(config, seeds, jobs=jobs)
    print(render_sweep(result), end="")
    if output is not None:
        write_sweep_json(result, output)
        print(f"results: {output}")
    return 0


def _cmd_demo(args: DemoArgs) -> int:
    from benchmark.demo import DemoConfig, run_demo

    return run_demo(
        DemoConfig(
            workers=args.workers,
            keep_running=args.keep_running,
            keep_run_dir=args.keep_run_dir,
            engine=args.engine,
            run_dir=args.run_dir,
            ready_timeout_s=args.ready_timeout_s,
            worker_args=list(args.worker_args),
            dispatcher_port=args.dispatcher_port,
            dispatchers=args.dispatchers,
        )
    )


def _cmd_swarm(args: SwarmArgs) -> int:
    from benchmark.swarm import SwarmConfig, run_swarm

    config = SwarmConfig(
        dispatcher_url=args.dispatcher_url,
        workers=args.workers,
        capacity=args.capacity,
        worker_prefix=args.worker_prefix,
        time_scale=args.time_scale,
        seed=args.seed,
        costs={key: getattr(args, key) for key in FALLBACK_COSTS},
    )

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_swarm(config, stop)

    return asyncio.run(serve())


def _cmd_micro(args: MicroArgs) -> int:
    from benchmark import dispatcher_micro

    # dispatcher_micro.main takes flags; pass on the ones that differ from the defaults.
    return int(dispatcher_micro.main(toolkit.to_argv(args)) or 0)


def _cmd_throughput(args: ThroughputArgs) -> int:
    from benchmark.throughput import (
        ThroughputConfig,
        checks,
        render_table,
        run_throughput,
        write_json,
    )

    cfg = ThroughputConfig(
        engines=args.engines,
        slots=args.slots,
        batching=args.batching,
        callers=args.callers,
        texts=args.texts,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        batch_delay_ms=args.batch_delay_ms,
        run_dir=args.run_dir,
        ready_timeout_s=args.ready_timeout_s,
    )
    cells = run_throughput(cfg)
    print("\n" + render_table(cells) + "\n")
    for line in checks(cells):
        print(line)
    if args.out is not None:
        write_json(cells, cfg, args.out)
        print(f"results: {args.out}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the Ctrl-C path, so every `with LocalCluster` block cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmark` and `smartrouting-benchmark`."""
    common, args = parse_all(argv)
    configure_logging(common.log_level, common.log_format)
    if isinstance(args, SwarmArgs):
        return _cmd_swarm(args)
    if isinstance(args, MicroArgs):
        return _cmd_micro(args)
    if isinstance(args, SimulateArgs):
        return _cmd_simulate(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C must always stop us cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if isinstance(args, ThroughputArgs):
            return _cmd_throughput(args)
        return _cmd_run(args) if isinstance(args, RunArgs) else _cmd_demo(args)
    except BenchmarkError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the cluster was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
