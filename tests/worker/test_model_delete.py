"""`DELETE /models/{name}` end to end: a real dispatcher process, a real Triton worker, the
real uploader service and the real MiniLM (hard-linked copies of the cached conversion).

The model is loaded on Triton by a task, deleted: the worker unloads it (Triton's repository
index no longer has it READY), the uploader removes its folder, and the next task is answered
404 by the dispatcher; the other model of the repository keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from benchmark.models import register_label
from tests.support import ProcessFactory, free_port, run_server, wait_until
from tests.uploader.fixtures import MINILM_NAME, minilm_repository
from tests.worker.conftest import TEXTS
from uploader.service import create_app

pytestmark = [pytest.mark.slow, pytest.mark.triton]

DOOMED, KEPT = "minilm-doomed", "minilm-kept"


def _task(url: str, label: str) -> httpx.Response:
    body = {"task_type": "embed_texts", "label": label, "parameters": {"texts": TEXTS[:2]}}
    return httpx.post(f"{url}/run-task", json=body, timeout=120)


def _triton_index(state: Path) -> dict[str, str]:
    info = json.loads((state / "tritonserver.json").read_text())
    url = f"http://127.0.0.1:{info['http_port']}/v2/repository/index"
    return {m["name"]: m.get("state", "") for m in httpx.post(url, timeout=5).json()}


def _triton_ready(state: Path, label: str) -> bool:
    info = json.loads((state / "tritonserver.json").read_text())
    url = f"http://127.0.0.1:{info['http_port']}/v2/models/{label}/ready"
    return httpx.get(url, timeout=5).status_code == 200


def test_delete_unloads_from_triton_then_removes(processes: ProcessFactory, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for label in (DOOMED, KEPT):
        register_label(minilm_repository() / MINILM_NAME, repo, label)
    with run_server(create_app(repo)) as uploader:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes.dispatcher(port, "--uploader-url", uploader.base_url)
        state = tmp_path / "state" / "w1"
        processes.worker(
            f"ws://127.0.0.1:{port}/worker-listen",
            "w1",
            "--engine",
            "triton",
            "--capacity",
            "2",
            "--model-repository",
            str(repo),
            "--state-dir",
            str(state),
            env={"HF_HUB_OFFLINE": "1"},
        )
        wait_until(
            lambda: httpx.get(f"{url}/workers", timeout=2).json()["workers"] == ["w1"],
            60,
            "the worker to connect",
        )
        first = _task(url, DOOMED)
        assert first.status_code == 200, first.text
        assert _triton_index(state)[DOOMED] == "READY" and _triton_ready(state, DOOMED)

        answer = httpx.delete(f"{url}/models/{DOOMED}", timeout=120)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["unloaded_from"] == ["w1"] and body["still_loaded_on"] == []
        assert body["files_removed"] is True
        # Unloaded (the worker reported it before the files went), then gone from the index.
        assert _triton_index(state).get(DOOMED) is None and not _triton_ready(state, DOOMED)
        assert not (repo / DOOMED).exists() and (repo / KEPT).is_dir()

        after = _task(url, DOOMED)
        assert after.status_code == 404 and after.json()["error"] == "model_not_found"
        assert DOOMED not in httpx.get(f"{url}/labels", timeout=5).json()
        kept = _task(url, KEPT)
        assert kept.status_code == 200, kept.text
