"""`python -m uploader`: convert errors as JSON, serve as a real process (flags and env)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, ProcessFactory, free_port, scaled, wait_for_http


def _convert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uploader", "convert", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )


@pytest.mark.parametrize(
    ("model_id", "error"),
    [("no-such-owner/no-such-model", "model_not_found"), ("a/../../b", "invalid_model_id")],
)
def test_convert_errors_exit_1_with_json(tmp_path: Path, model_id: str, error: str) -> None:
    """A failed convert exits 1 and prints {"error", "detail"} on stderr."""
    done = _convert(model_id, "--repository", str(tmp_path / "repo"))
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1])["error"] == error
    assert not (tmp_path / "repo" / "b").exists()


def test_convert_requires_a_repository() -> None:
    """Without --repository or MODEL_REPOSITORY, one line says so (exit 2)."""
    done = _convert("all-MiniLM-L6-v2")
    assert done.returncode == 2 and "--repository" in done.stderr
    assert done.stderr.splitlines() == [
        "python -m uploader convert: error: --repository is required (or set MODEL_REPOSITORY)"
    ]


def test_serve_with_flags(tmp_path: Path, processes: ProcessFactory, models_dir: Path) -> None:
    """`serve --port --repository --models-dir` answers health and maps errors over HTTP."""
    port = free_port()
    processes.python_module(
        "uploader",
        "uploader",
        "serve",
        "--port",
        str(port),
        "--repository",
        str(tmp_path / "repo"),
        "--models-dir",
        str(models_dir),
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health")
    answer = httpx.post(f"{base}/upload-model", json={"model_id": "acme/plain"}, timeout=30)
    assert answer.status_code == 422 and answer.json()["error"] == "not_a_sentence_transformer"
    assert httpx.get(f"{base}/models").json() == {"models": []}


def test_serve_with_environment(tmp_path: Path, processes: ProcessFactory) -> None:
    """UPLOADER_HOST, UPLOADER_PORT and MODEL_REPOSITORY stand in for the flags; TERM is clean."""
    port = free_port()
    env = {
        "UPLOADER_HOST": "127.0.0.1",
        "UPLOADER_PORT": str(port),
        "MODEL_REPOSITORY": str(tmp_path / "repo"),
    }
    child = processes.python_module("uploader-env", "uploader", "serve", env=env)
    wait_for_http(f"http://127.0.0.1:{port}/health")
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15).
    assert child.stop() in (0, -15)
    assert "Application shutdown complete" in child.log()
