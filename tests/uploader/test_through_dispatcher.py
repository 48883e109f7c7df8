"""End to end: upload through the dispatcher, then embed with a real worker and Triton.

Real processes: `python -m dispatcher --uploader-url ...`, `python -m worker --engine triton`
(which runs tritonserver on the same repository) and the uploader service (real uvicorn in
this process, doing the real torch conversion).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ProcessFactory, free_port, run_server, wait_until
from tests.uploader.fixtures import MINILM_NAME
from tests.uploader.triton import pytriton_dir
from uploader.service import create_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.triton,
    pytest.mark.skipif(pytriton_dir() is None, reason="nvidia-pytriton is not installed"),
]

TEXTS = ["Uploaded through the dispatcher.", "Served by a worker's Triton.", "x " * 300]


def _workers(base: str) -> list[str]:
    try:
        return list(httpx.get(f"{base}/workers", timeout=2).json()["workers"])
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def test_upload_then_embed_through_the_dispatcher(
    tmp_path: Path, processes: ProcessFactory, minilm_model: Any
) -> None:
    """POST /upload-model via the dispatcher publishes; /run-task embed_texts then matches."""
    repo = tmp_path / "repo"
    repo.mkdir()
    with run_server(create_app(repo)) as uploader:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        dispatcher = processes.dispatcher(port, "--uploader-url", uploader.base_url)
        worker = processes.worker(
            f"ws://127.0.0.1:{port}/worker-listen",
            "upload-e2e",
            "--engine",
            "triton",
            "--model-repository",
            str(repo),
            "--capacity",
            "1",
        )

        body = {"model_id": "sentence-transformers/all-MiniLM-L6-v2", "max_batch_size": 8}
        answer = httpx.post(f"{base}/upload-model", json=body, timeout=300)
        assert answer.status_code == 200, answer.text + dispatcher.log()
        assert answer.json()["status"] == "success"
        assert answer.json()["model_name"] == MINILM_NAME
        assert (repo / MINILM_NAME / "1" / "model.onnx").is_file()

        # The dispatcher passes the uploader's errors through unchanged.
        again = httpx.post(f"{base}/upload-model", json=body, timeout=60)
        assert again.status_code == 409 and again.json()["error"] == "model_exists"
        bad = httpx.post(f"{base}/upload-model", json={"model_id": "../x"}, timeout=60)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_model_id"

        wait_until(lambda: "upload-e2e" in _workers(base), 120, "the worker to connect")
        task = {
            "task_type": "embed_texts",
            "label": MINILM_NAME,
            "parameters_json": json.dumps({"texts": TEXTS}),
        }
        ran = httpx.post(f"{base}/run-task", json=task, timeout=300)
        assert ran.status_code == 200, ran.text + worker.log()
        result = ran.json()["result"]
        embeddings = np.array(result["embeddings"], dtype=np.float32)
        reference = minilm_model.encode(TEXTS, convert_to_numpy=True, show_progress_bar=False)
        assert embeddings.shape == (len(TEXTS), 384) and result["dimension"] == 384
        assert float(np.abs(embeddings - reference).max()) < 1e-4
        assert ran.json()["label_miss"] is True
