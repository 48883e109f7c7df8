"""Load tests with Locust, the way operators already run them (benchmark/README.md).

    locust -f benchmark/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 8 -r 8 -t 60s --labels 5 --distribution zipf --wait-avg 2.5

Each simulated user is a closed-loop producer as in `python -m benchmark run`: it picks a
label from `label-0 .. label-N-1` (uniform or Zipf, `benchmark.trace.label_weights`), sends
one task, waits for the answer, then thinks `max(0.1, N(avg, sd))` seconds times
`--time-scale`. `--task-type sample_task` suits simulated workers; `embed_texts` real ones;
`--endpoint openai` sends `POST /v1/embeddings` instead of `/run-task`. Requests are named by
endpoint (not by label), so Locust's table has one row per endpoint; `--api-key` is sent as
`Authorization: Bearer`. Every option is also an environment variable (`LOCUST_LABELS`, ...).

Run it as its own process: Locust patches the standard library with gevent when imported.
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

from locust import FastHttpUser, events, task
from locust.env import Environment

from benchmark.trace import MIN_WAIT_S, label_names, label_weights

#: The text of `embed_texts` tasks.
SAMPLE_TEXT = "Smart routing sends each task to a worker that already holds its model."


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """The benchmark's traffic options, as Locust options."""
    group = parser.add_argument_group("smart routing")
    group.add_argument("--labels", type=int, default=5, help="labels label-0 .. label-N-1")
    group.add_argument(
        "--distribution",
        choices=["uniform", "zipf"],
        default="uniform",
        help="how labels are drawn",
    )
    group.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent")
    group.add_argument("--wait-avg", type=float, default=2.5, help="mean think time, seconds")
    group.add_argument("--wait-stddev", type=float, default=1.0, help="its standard deviation")
    group.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies think times (as the benchmark)"
    )
    group.add_argument(
        "--task-type",
        choices=["sample_task", "embed_texts"],
        default="sample_task",
        help="sample_task for simulated workers, embed_texts for real ones",
    )
    group.add_argument(
        "--endpoint", choices=["run-task", "openai"], default="run-task", help="the API to load"
    )
    group.add_argument("--sample-run-ms", type=float, default=None, help="sample_task run_ms")
    group.add_argument("--api-key", default="", help="sent as Authorization: Bearer")
    group.add_argument("--seed", type=int, default=None, help="seed of labels and think times")


class Traffic:
    """The label and think-time draws of one user (seeded per user when --seed is set)."""

    _users = itertools.count()

    def __init__(self, options: Any) -> None:
        seed = None if options.seed is None else f"{options.seed}:{next(self._users)}"
        self.rng = random.Random(seed)
        self.names = label_names(options.labels)
        weights = label_weights(options.labels, options.distribution, options.zipf_s)
        self.cumulative = list(itertools.accumulate(weights))
        self.options = options

    def label(self) -> str:
        """A label drawn from the distribution."""
        point = self.rng.random() * self.cumulative[-1]
        index = bisect.bisect_right(self.cumulative, point)
        return self.names[min(index, len(self.names) - 1)]

    def think_s(self) -> float:
        """A think time, as the benchmark's trace draws it, times the time scale."""
        o = self.options
        return max(MIN_WAIT_S, self.rng.gauss(o.wait_avg, o.wait_stddev)) * o.time_scale


class Producer(FastHttpUser):
    """One closed-loop producer: a task, its answer, a think time."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.traffic = Traffic(environment.parsed_options)

    def wait_time(self) -> float:
        return self.traffic.think_s()

    def on_start(self) -> None:
        key = self.traffic.options.api_key
        self.auth_headers = {"Authorization": f"Bearer {key}"} if key else {}

    @task
    def send(self) -> None:
        options, label = self.traffic.options, self.traffic.label()
        if options.endpoint == "openai":
            body: dict[str, Any] = {"model": label, "input": [SAMPLE_TEXT]}
            name, path = "POST /v1/embeddings", "/v1/embeddings"
        else:
            parameters: dict[str, Any] = {}
            if options.task_type == "embed_texts":
                parameters = {"texts": [SAMPLE_TEXT]}
            elif options.sample_run_ms is not None:
                parameters = {"run_ms": options.sample_run_ms}
            body = {"task_type": options.task_type, "label": label, "parameters": parameters}
            name, path = "POST /run-task", "/run-task"
        with self.client.post(
            path, json=body, headers=self.auth_headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
