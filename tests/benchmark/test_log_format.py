"""`python -m benchmark --log-format json`: the benchmark's own log in the common format."""

from __future__ import annotations

import json
import signal

from benchmark.__main__ import CommonArgs, SimulateArgs, parse_all
from tests.support import ProcessFactory, scaled, wait_until


def test_log_options_come_before_the_subcommand_or_from_the_environment() -> None:
    common, args = parse_all(["--log-format", "json", "--log-level", "info", "simulate"], {})
    assert common == CommonArgs(log_level="info", log_format="json")
    assert isinstance(args, SimulateArgs)
    common, _ = parse_all(["simulate"], {"BENCHMARK_LOG_FORMAT": "json"})
    assert common.log_format == "json" and common.log_level == "warning"


def test_swarm_logs_json_lines(processes: ProcessFactory) -> None:
    """`--log-format json` before the subcommand: every line the swarm's workers log (here,
    failed connections to a dispatcher that is not there) is a JSON object."""
    child = processes.python_module(
        "swarm",
        "benchmark",
        "--log-format=json",
        "--log-level=info",
        "swarm",
        "--dispatcher-url=ws://127.0.0.1:9/worker-listen",
        "--workers=1",
    )
    wait_until(lambda: "reconnecting" in child.read_log(), 30, "a failed connection logged")
    child.signal(signal.SIGTERM)
    child.wait(scaled(20))
    lines = [json.loads(t) for t in child.read_log().splitlines() if t and not t.startswith("===")]
    assert any("reconnecting" in line["message"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
