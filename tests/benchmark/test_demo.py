"""The project's main command, `python -m benchmark demo`, on real Triton workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, scaled, wait_until

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.timeout(420)
@pytest.mark.parametrize("dispatchers", [1, 2])
def test_demo_uploads_embeds_and_stops_on_ctrl_c(tmp_path: Path, dispatchers: int) -> None:
    """The demo uploads MiniLM, gets 384-dim unit vectors back, and stops cleanly on Ctrl-C.
    With two dispatchers (and a throwaway PostgreSQL) the second call goes through the other
    one, which learnt the model from its catalogue sync and routes to the worker holding it."""
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out_file:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmark",
                "demo",
                "--run-dir",
                str(tmp_path),
                "--keep-running",
                "--dispatchers",
                str(dispatchers),
            ],
            cwd=ROOT,
            env=ENV,
            stdout=out_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "press Ctrl-C" in out_path.read_text() or demo.poll() is not None,
            300,
            "the demo to be up",
            interval=0.5,
        )
        demo.send_signal(signal.SIGINT)
        code = demo.wait(scaled(90))
    finally:
        if demo.poll() is None:
            demo.kill()
    out = out_path.read_text()
    assert code == 0, out[-4000:]
    assert "checked: 2 embeddings of 384 floats" in out
    assert '"label_miss": true' in out  # the first call really loaded the model
    assert "second call: worker" in out and "label miss False" in out
    if dispatchers > 1:
        assert "knows 'sentence-transformers--all-MiniLM-L6-v2' too (catalogue sync)" in out
    assert "curl -X POST" in out and "demo passed" in out
    # Ctrl-C stops the cluster and says so; a run directory it was given is kept.
    assert "SIGINT: stopping the cluster" in out and "cluster stopped" in out
    assert out.rstrip().endswith(f"run directory kept: {tmp_path}")
    # The workers went through their own shutdown (SIGTERM), not a kill.
    for worker in ("w-0", "w-1"):
        assert (
            f"worker {worker} stopped" in (tmp_path / "logs" / f"worker-{worker}.log").read_text()
        )
    assert (tmp_path / "models" / "sentence-transformers--all-MiniLM-L6-v2" / "1").is_dir()


def test_demo_fails_loudly_when_a_part_cannot_start(tmp_path: Path) -> None:
    """A worker that cannot start (capacity 0) fails the demo with exit 1 and its log tail."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmark", "demo", "--run-dir", str(tmp_path)]
        + ["--worker-arg=--capacity=0"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert done.returncode == 1
    assert "FAILED" in done.stderr
    # Both workers get capacity 0; whichever exits first is the one reported.
    assert re.search(r"worker-w-[01] exited with code 2", done.stderr), done.stderr
    assert "capacity must be >= 1" in done.stderr  # the worker's own log tail
