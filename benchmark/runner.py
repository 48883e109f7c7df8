"""One benchmark run end to end: trace, cluster per policy, producers, /stats, report.

`run_benchmark` builds the seeded trace once, then for each policy starts a fresh
`LocalCluster` (or uses an existing dispatcher), replays the trace, reads the
dispatcher's `GET /stats` before and after (the difference is the run's own
counts, so a long-lived dispatcher works too), and writes `results.json`,
`summary.txt` and the PNG charts into the output directory. With `dispatchers` > 1
the cluster runs that many dispatchers on one shared task store, the producers spread
the requests over them round robin, and the counts are the sums of every dispatcher's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from benchmark.bounds import belady_misses, lru_misses
from benchmark.charts import write_charts
from benchmark.cluster import ClusterConfig, EngineName, LocalCluster, PolicyName
from benchmark.errors import RunError
from benchmark.producers import ProducerSettings, SubmitMode, run_producers
from benchmark.results import BenchmarkResult, PolicyResult
from benchmark.summary import render
from benchmark.trace import Distribution, Mode, Trace, TraceConfig, build_trace, fingerprint

#: Counters of /stats that add up over a run (the rest are gauges or maps).
_ADDITIVE = (
    "tasks_submitted",
    "tasks_completed",
    "tasks_failed",
    "tasks_redispatched",
    "label_hits",
    "label_misses",
    "load_time_s_total",
    "run_time_s_total",
)


@dataclass
class RunConfig:
    """Every option of `python -m benchmark run`."""

    out: Path
    workers: int = 2
    capacity: int = 2
    engine: EngineName = "simulated"
    labels: int = 5
    distribution: Distribution = "uniform"
    zipf_s: float = 1.1
    requests: int = 2400
    producers: int = 2
    wait_avg: float = 2.5
    wait_stddev: float = 1.0
    mode: Mode = "closed"
    rate: float = 10.0
    dispatch: list[PolicyName] = field(default_factory=lambda: ["random", "routed"])
    time_scale: float = 0.05
    seed: int = 1
    submit: SubmitMode = "sync"
    dispatcher_url: str | None = None
    #: Dispatchers of the started cluster (more than one: a shared PostgreSQL task store).
    dispatchers: int = 1
    #: The shared store's postgresql:// URL; None: a throwaway server per cluster.
    store_url: str | None = None
    swarm: bool = False
    model_repository: Path | None = None
    sim_costs: dict[str, float] = field(default_factory=dict)
    dispatcher_args: list[str] = field(default_factory=list)
    progress: bool = True
    ready_timeout_s: float = 120.0

    def trace_config(self) -> TraceConfig:
        """The trace these options describe."""
        return TraceConfig(
            requests=self.requests,
            producers=self.producers,
            labels=self.labels,
            distribution=self.distribution,
            zipf_s=self.zipf_s,
            wait_avg=self.wait_avg,
            wait_stddev=self.wait_stddev,
            mode=self.mode,
            rate=self.rate,
            seed=self.seed,
        )

    @property
    def task_type(self) -> str:
        """`sample_task` for the simulated engine, `embed_texts` for real models."""
        return "sample_task" if self.engine == "simulated" else "embed_texts"


def fetch_stats(base_url: str) -> dict[str, Any]:
    """GET /stats of the dispatcher."""
    answer = httpx.get(f"{base_url}/stats", timeout=10.0)
    if answer.status_code != 200:
        raise RunError(f"GET {base_url}/stats answered {answer.status_code}: {answer.text[:200]}")
    data: dict[str, Any] = answer.json()
    return data


def combined_stats(base_urls: list[str]) -> dict[str, Any]:
    """`GET /stats` of every dispatcher, the counters added up (and the tasks in flight and
    queued, for `_wait_idle`); the other fields are the first dispatcher's. With several,
    `per_dispatcher` keeps each one's counters (cumulative, not a run's difference)."""
    every = [fetch_stats(url) for url in base_urls]
    combined = dict(every[0])
    for key in (*_ADDITIVE, "in_flight", "queue_depth"):
        values = [stats[key] for stats in every if isinstance(stats.get(key), int | float)]
        if values:
            combined[key] = sum(values)
    if len(every) > 1:
        combined["dispatchers"] = len(every)
        own = (*_ADDITIVE, "workers_connected")
        combined["per_dispatcher"] = [{k: s[k] for k in own if k in s} for s in every]
    return combined


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`after` with its additive counters reduced by `before` (one run's own counts)."""
    delta = dict(after)
    for key in _ADDITIVE:
        if key in after:
            delta[key] = after[key] - before.get(key, 0)
    completed = delta.get("tasks_completed", 0)
    if completed and "load_time_s_total" in delta and "run_time_s_total" in delta:
        delta["avg_task_runtime_s"] = (
            delta["load_time_s_total"] + delta["run_time_s_total"]
        ) / completed
    return delta


def _wait_idle(base_urls: list[str], timeout_s: float = 30.0) -> dict[str, Any]:
    # Synchronous answers mean the tasks finished, but the counters of the last
    # result may be updated just after; wait until nothing is in flight.
    deadline = time.monotonic() + timeout_s
    stats = combined_stats(base_urls)
    while time.monotonic() < deadline:
        if not stats.get("in_flight") and not stats.get("queue_depth"):
            return stats
        time.sleep(0.1)
        stats = combined_stats(base_urls)
    return stats


def _replay(cfg: RunConfig, trace: Trace, base_urls: list[str], policy: str) -> PolicyResult:
    before = combined_stats(base_urls)
    settings = ProducerSettings(
        base_url=tuple(base_urls),
        task_type=cfg.task_type,
        time_scale=cfg.time_scale,
        submit=cfg.submit,
        run_tag=f"bench-{policy}-{int(time.time() * 1000)}",
    )
    shape = f"{cfg.engine}, {cfg.workers}x{cfg.capacity}"
    if len(base_urls) > 1:
        shape += f", {len(base_urls)} dispatchers"
    label = f"{policy:>6} ({shape})" if cfg.progress else None
    report = asyncio.run(run_producers(trace, settings, label))
    after = _wait_idle(base_urls)
    runtime_scale = cfg.time_scale if cfg.engine == "simulated" else 1.0
    return PolicyResult(
        policy=str(after.get("policy", policy)),
        producers=report,
        stats=stats_delta(before, after),
        runtime_scale=runtime_scale,
    )


def run_policy(cfg: RunConfig, trace: Trace, policy: PolicyName) -> PolicyResult:
    """Start a fresh local cluster with `policy`, replay the trace, stop the cluster."""
    cluster_cfg = ClusterConfig(
        run_dir=cfg.out / "logs" / policy,
        workers=cfg.workers,
        capacity=cfg.capacity,
        engine=cfg.engine,
        policy=policy,
        time_scale=cfg.time_scale,
        seed=cfg.seed,
        model_repository=cfg.model_repository,
        swarm=cfg.swarm,
        sim_costs=cfg.sim_costs,
        dispatcher_args=cfg.dispatcher_args,
        ready_timeout_s=cfg.ready_timeout_s,
        dispatchers=cfg.dispatchers,
        store_url=cfg.store_url,
    )
    with LocalCluster(cluster_cfg) as cluster:
        result = _replay(cfg, trace, cluster.base_urls, policy)
        cluster.check_alive()
    return result


def run_benchmark(cfg: RunConfig, name: str | None = None) -> BenchmarkResult:
    """Run every policy of `cfg.dispatch` on one trace; write results into `cfg.out`."""
    trace = build_trace(cfg.trace_config())
    cache = cfg.workers * cfg.capacity
    result = BenchmarkResult(
        name=name or cfg.out.name,
        params={k: _param(k, v) for k, v in asdict(cfg).items()},
        trace={**trace.to_json(), "fingerprint": fingerprint(trace)},
        bound=belady_misses(trace.labels, cache).to_json(),
        lru_reference=lru_misses(trace.labels, cache).to_json(),
    )
    if cfg.engine != "simulated" and cfg.dispatcher_url is None:
        from benchmark.models import prepare_label_models

        repo = cfg.model_repository or cfg.out / "models"
        prepare_label_models(repo, trace.label_set, progress=cfg.progress)
        cfg.model_repository = repo
    if cfg.dispatcher_url is not None:
        base_url = cfg.dispatcher_url.rstrip("/")
        policy = str(fetch_stats(base_url).get("policy", "remote"))
        result.policies[policy] = _replay(cfg, trace, [base_url], policy)
    else:
        for policy in cfg.dispatch:
            result.policies[policy] = run_policy(cfg, trace, policy)
    write_report(result, cfg.out)
    return result


def _param(name: str, value: Any) -> Any:
    """A run option as results.json shows it: paths as text, the store URL (it may hold a
    password) only as whether one was given."""
    if name == "store_url":
        return None if value is None else "(given)"
    return str(value) if isinstance(value, Path) else value


def write_report(result: BenchmarkResult, out: Path) -> str:
    """Write results.json, summary.txt and the charts; returns the summary text."""
    out.mkdir(parents=True, exist_ok=True)
    result.write_json(out / "results.json")
    text = render(result)
    (out / "summary.txt").write_text(text + "\n")
    write_charts(result, out)
    return text


Policies = Literal["random", "routed", "both"]


def policies_of(dispatch: Policies) -> list[PolicyName]:
    """`both` → random then routed."""
    return ["random", "routed"] if dispatch == "both" else [dispatch]
