"""`python -m worker` as a process: exit codes and shutdown without a dispatcher."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support import ProcessFactory, free_port, scaled, wait_until


def test_sigterm_without_dispatcher_exits_zero_quickly(processes: ProcessFactory) -> None:
    """A worker that never reached its dispatcher still stops cleanly (exit 0) on SIGTERM."""
    child = processes.python_module(
        "worker",
        "worker",
        "--engine",
        "simulated",
        "--dispatcher-url",
        f"ws://127.0.0.1:{free_port()}/worker-listen",
    )
    wait_until(lambda: "connect failed" in child.log(), 30, "a failed connection attempt")
    started = time.monotonic()
    child.signal(signal.SIGTERM)
    child.popen.wait(scaled(20))
    assert child.popen.returncode == 0, child.log()
    assert time.monotonic() - started < scaled(10)
    assert "stopped" in child.log()


def test_missing_tritonserver_exits_3(processes: ProcessFactory, tmp_path: Path) -> None:
    """No tritonserver binary at the given path → a clear error and exit code 3."""
    child = processes.python_module(
        "worker",
        "worker",
        "--engine",
        "triton",
        "--tritonserver",
        str(tmp_path / "nope"),
        "--model-repository",
        str(tmp_path),
    )
    assert child.popen.wait(scaled(30)) == 3
    assert "no tritonserver binary found" in child.log()


def test_bad_capacity_exits_2(processes: ProcessFactory) -> None:
    """An impossible setting is refused at start with exit code 2."""
    child = processes.python_module("worker", "worker", "--engine", "simulated", "--capacity", "0")
    assert child.popen.wait(scaled(30)) == 2
    assert "python -m worker: error: capacity must be >= 1" in child.log()
    assert "Traceback" not in child.log()
