"""The uploader's log: one format for its lines and uvicorn's (`--log-format`,
UPLOADER_LOG_FORMAT), and no tqdm progress bars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, ProcessFactory, free_port, scaled, wait_for_http, wait_until


def parsed(text: str) -> list[dict[str, Any]]:
    """Every log line as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line and not line.startswith("===")]


def test_serve_logs_json_lines_uvicorn_included(
    tmp_path: Path, processes: ProcessFactory, models_dir: Path
) -> None:
    """UPLOADER_LOG_FORMAT=json: uvicorn's start-up and access lines are JSON objects like the
    uploader's own, the access line split into fields."""
    port = free_port()
    env = {"UPLOADER_LOG_FORMAT": "json", "UPLOADER_HOST": "127.0.0.1"}
    child = processes.python_module(
        "uploader-json",
        "uploader",
        "serve",
        f"--port={port}",
        f"--repository={tmp_path / 'repo'}",
        f"--models-dir={models_dir}",
        env=env,
    )
    wait_for_http(f"http://127.0.0.1:{port}/health")
    answer = httpx.post(
        f"http://127.0.0.1:{port}/upload-model", json={"model_id": "acme/plain"}, timeout=30
    )
    assert answer.status_code == 422
    wait_until(lambda: "/upload-model" in child.read_log(), 10, "the access line")
    lines = parsed(child.read_log())
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    (access,) = [line for line in lines if line.get("path") == "/upload-model"]
    assert (access["method"], access["status"], access["logger"]) == ("POST", 422, "uvicorn.access")
    assert "\r" not in child.read_log()


def test_no_progress_bars() -> None:
    """After the uploader's set-up, tqdm draws nothing and huggingface_hub's bars are off."""
    script = (
        "from uploader.__main__ import quiet_progress_bars; quiet_progress_bars();"
        "import tqdm, huggingface_hub.utils as u; list(tqdm.tqdm(range(100)));"
        "print(u.are_progress_bars_disabled())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    assert done.stdout.strip() == "True"
    assert done.stderr == ""
    # The check can fail: without the set-up the same loop draws its bar.
    bare = subprocess.run(
        [sys.executable, "-c", "import tqdm; list(tqdm.tqdm(range(100)))"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    assert "100/100" in bare.stderr
