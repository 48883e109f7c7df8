"""benchmark/locustfile.py drives a local cluster headless with no failures.

A real dispatcher and two SIMULATED workers (child processes); Locust runs as its own process
(it patches the standard library with gevent when imported, so never inside pytest).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, ProcessFactory, free_port, scaled, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_locust_headless_run_has_no_failures(processes: ProcessFactory, tmp_path: Path) -> None:
    """`locust --headless -u 8 -r 8 -t 5s` against a local cluster: requests, 0 failures, and
    the labels the options ask for reach the dispatcher."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes.dispatcher(port, "--log-level", "warning")
    sim = ("--engine", "simulated", "--time-scale", "0.05", "--capacity", "2")
    for worker_id in ("w1", "w2"):
        processes.worker(
            f"ws://127.0.0.1:{port}/worker-listen",
            worker_id,
            *sim,
            "--state-dir",
            str(tmp_path / worker_id),
        )
    wait_until(
        lambda: len(httpx.get(f"{base}/workers", timeout=2).json()["workers"]) == 2,
        60,
        "both workers to connect",
    )
    prefix = tmp_path / "locust"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "benchmark" / "locustfile.py"),
        "--host", base, "--headless", "-u", "8", "-r", "8", "-t", "5s",
        "--labels", "3", "--distribution", "zipf", "--wait-avg", "0.5", "--wait-stddev", "0.2",
        "--time-scale", "0.1", "--seed", "1", "--csv", str(prefix), "--only-summary",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=scaled(120), check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    print(f"\nLOCUST {total['Request Count']} requests, {total['Failure Count']} failures")
    assert int(total["Request Count"]) >= 20, total
    assert int(total["Failure Count"]) == 0, total
    assert set(rows) == {"POST /run-task", "Aggregated"}
    labels = httpx.get(f"{base}/stats", timeout=5).json()["per_label"]
    assert set(labels) <= {"label-0", "label-1", "label-2"} and "label-0" in labels
