"""The HTTP service under a real uvicorn: answers, error codes, concurrency."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import run_server
from tests.uploader.fixtures import fake_builder
from uploader.convert import Builder
from uploader.service import create_app


def _post(base_url: str, body: object, timeout: float = 60.0) -> httpx.Response:
    return httpx.post(f"{base_url}/upload-model", json=body, timeout=timeout)


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_upload_publishes_and_lists(tmp_path: Path, models_dir: Path, builder: Builder) -> None:
    """POST /upload-model answers 200 with the contract fields; GET /models lists it."""
    repo = tmp_path / "repo"
    with run_server(create_app(repo, local_roots=[models_dir], builder=builder)) as server:
        response = _post(server.base_url, {"model_id": "acme/tiny", "max_batch_size": 4})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success" and body["model_name"] == "acme--tiny"
        assert {"message", "dimension", "max_abs_diff", "seconds", "onnx_bytes"} <= set(body)
        assert (repo / "acme--tiny" / "config.pbtxt").read_text().count("max_batch_size: 4") == 1
        listed = httpx.get(f"{server.base_url}/models").json()["models"]
        assert [m["model_name"] for m in listed] == ["acme--tiny"]
        assert httpx.get(f"{server.base_url}/health").json() == {"message": "OK"}


def test_existing_model_is_409_and_overwrite_replaces(
    tmp_path: Path, models_dir: Path, builder: Builder
) -> None:
    """A repeat upload is 409 model_exists; with overwrite: true it is 200 and replaced."""
    repo = tmp_path / "repo"
    with run_server(create_app(repo, local_roots=[models_dir], builder=builder)) as server:
        assert _post(server.base_url, {"model_id": "acme/tiny"}).status_code == 200
        created = json.loads((repo / "acme--tiny" / "smartrouting.json").read_text())
        again = _post(server.base_url, {"model_id": "acme/tiny"})
        assert again.status_code == 409
        assert again.json()["error"] == "model_exists" and "overwrite" in again.json()["detail"]
        replaced = _post(server.base_url, {"model_id": "acme/tiny", "overwrite": True})
        assert replaced.status_code == 200 and replaced.json()["replaced"] is True
        after = json.loads((repo / "acme--tiny" / "smartrouting.json").read_text())
        assert after["created_unix"] >= created["created_unix"]


def test_custom_model_name(tmp_path: Path, models_dir: Path, builder: Builder) -> None:
    """model_name overrides the derived name."""
    repo = tmp_path / "repo"
    with run_server(create_app(repo, local_roots=[models_dir], builder=builder)) as server:
        response = _post(server.base_url, {"model_id": "acme/tiny", "model_name": "tiny-v2"})
        assert response.status_code == 200 and response.json()["model_name"] == "tiny-v2"
        assert (repo / "tiny-v2" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("model_id", "status", "error"),
    [
        ("no-such-owner/no-such-model", 404, "model_not_found"),
        ("acme/missing", 404, "model_not_found"),
        ("acme/plain", 422, "not_a_sentence_transformer"),
        ("acme/clspool", 422, "unsupported_model"),
    ],
)
def test_unknown_or_unsuitable_models(
    tmp_path: Path, models_dir: Path, builder: Builder, model_id: str, status: int, error: str
) -> None:
    """Unknown models are 404; a directory that is not a usable SentenceTransformer is 422."""
    repo = tmp_path / "repo"
    with run_server(create_app(repo, local_roots=[models_dir], builder=builder)) as server:
        response = _post(server.base_url, {"model_id": model_id})
        assert response.status_code == status, response.text
        assert response.json()["error"] == error and response.json()["detail"]
    assert not repo.exists() or not any(p for p in repo.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(
    "body",
    [
        {"model_id": "../x"},
        {"model_id": "/abs"},
        {"model_id": "a/../../b"},
        {"model_id": "..\\..\\windows"},
        {"model_id": "acme/tiny/../../../etc"},
        {"model_id": "x" * 201},
        {"model_id": ""},
        {"model_id": "acme/tiny", "model_name": "../escape"},
        {"model_id": "acme/tiny", "model_name": "a/b"},
        {"model_id": "acme/tiny", "model_name": ".hidden"},
    ],
)
def test_traversal_attempts_are_422_and_write_nothing(
    tmp_path: Path, models_dir: Path, builder: Builder, body: dict[str, object]
) -> None:
    """Ids or names that could leave the repository are refused before any file is written."""
    repo = tmp_path / "repo"
    before = _tree(tmp_path.parent)
    with run_server(create_app(repo, local_roots=[models_dir], builder=builder)) as server:
        response = _post(server.base_url, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_model_id"
    assert _tree(tmp_path.parent) == before


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'"a string"',
        b'{"max_batch_size": 4}',
        b'{"model_id": 5}',
        b'{"model_id": "acme/tiny", "overwrite": "yes"}',
        b'{"model_id": "acme/tiny", "max_batch_size": "32"}',
        b'{"model_id": "acme/tiny", "max_batch_size": 0}',
        b'{"model_id": "acme/tiny", "max_batch_size": 1025}',
        b'{"model_id": "acme/tiny", "model_name": 3}',
        b'{"model_id": "acme/tiny", "overwite": true}',
        b"\xff\xfe",
    ],
)
def test_malformed_bodies_are_400(
    tmp_path: Path, models_dir: Path, builder: Builder, content: bytes
) -> None:
    """Malformed JSON, a non-object, missing or mistyped fields: 400 with a JSON error."""
    with run_server(create_app(tmp_path / "repo", local_roots=[models_dir], builder=builder)) as s:
        response = httpx.post(
            f"{s.base_url}/upload-model",
            content=content,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request" and response.json()["detail"]


def test_oversized_body_is_413(tmp_path: Path, builder: Builder) -> None:
    """A body over 64 KiB is refused with 413 before it is parsed."""
    with run_server(create_app(tmp_path / "repo", builder=builder)) as server:
        response = _post(server.base_url, {"model_id": "a" * 70_000})
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_unknown_route_and_method_are_json(tmp_path: Path, builder: Builder) -> None:
    """404 and 405 answers use the {"error", "detail"} shape too."""
    with run_server(create_app(tmp_path / "repo", builder=builder)) as server:
        missing = httpx.get(f"{server.base_url}/nope")
        wrong = httpx.get(f"{server.base_url}/upload-model")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("max_concurrent", [1, 2])
def test_concurrent_uploads_of_one_model(
    tmp_path: Path, models_dir: Path, max_concurrent: int
) -> None:
    """Two simultaneous uploads: exactly one 200, one 409, and the entry is intact.

    With one conversion at a time the second waits and finds the model published; with two
    it meets the per-model lock while the first is still building.
    """
    repo = tmp_path / "repo"
    entered, release = threading.Event(), threading.Event()
    slow = fake_builder(entered=entered, release=release)
    app = create_app(repo, local_roots=[models_dir], builder=slow, max_concurrent=max_concurrent)
    with run_server(app) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, server.base_url, {"model_id": "acme/tiny"})
        assert entered.wait(30), "the first upload never started building"
        # The loop stays responsive while a conversion runs in its thread.
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
        second = pool.submit(_post, server.base_url, {"model_id": "acme/tiny", "overwrite": True})
        if max_concurrent == 2:
            refused = second.result(30)
            assert refused.status_code == 409
            assert refused.json()["error"] == "upload_in_progress"
        release.set()
        statuses = sorted([first.result(30).status_code, second.result(30).status_code])
    if max_concurrent == 1:
        # The waiting one asked to overwrite, so it replaces the first: two successes in a
        # row, never an interleaving; check the entry is whole.
        assert statuses == [200, 200]
    else:
        assert statuses == [200, 409]
    entry = repo / "acme--tiny"
    assert json.loads((entry / "smartrouting.json").read_text())["model_name"] == "acme--tiny"
    assert (entry / "1" / "model.onnx").read_bytes() == b"fake onnx of acme/tiny"
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".locks")) == [
        "acme--tiny"
    ]


def test_concurrent_uploads_without_overwrite(tmp_path: Path, models_dir: Path) -> None:
    """Two simultaneous uploads without overwrite: exactly one success, one 409 model_exists."""
    repo = tmp_path / "repo"
    entered, release = threading.Event(), threading.Event()
    app = create_app(
        repo, local_roots=[models_dir], builder=fake_builder(entered=entered, release=release)
    )
    with run_server(app) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, server.base_url, {"model_id": "acme/tiny"})
        assert entered.wait(30)
        second = pool.submit(_post, server.base_url, {"model_id": "acme/tiny"})
        release.set()
        responses = [first.result(30), second.result(30)]
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert (repo / "acme--tiny" / "1" / "model.onnx").is_file()


@pytest.mark.slow
def test_real_conversion_over_http(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 converted through the service, validated below 1e-4."""
    repo = tmp_path / "repo"
    with run_server(create_app(repo)) as server:
        response = _post(
            server.base_url,
            {"model_id": "sentence-transformers/all-MiniLM-L6-v2", "max_batch_size": 8},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "sentence-transformers--all-MiniLM-L6-v2"
    assert body["dimension"] == 384 and 0 <= body["max_abs_diff"] < 1e-4
    entry = repo / body["model_name"]
    assert body["onnx_bytes"] == (entry / "1" / "model.onnx").stat().st_size
    assert "max_batch_size: 8" in (entry / "configs" / "onnxruntime.pbtxt").read_text()
    assert (entry / "tokenizer" / "tokenizer.json").is_file()
