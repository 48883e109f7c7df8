"""Asynchronous uploads (`uploader.jobs`) and model removal, as policy and over HTTP."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import run_server, scaled
from tests.uploader.fixtures import fake_builder
from uploader import convert, jobs
from uploader.errors import ModelExists, TooManyUploads
from uploader.jobs import UploadJobs, phase_of
from uploader.service import create_app


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_phases_go_forward_with_their_times() -> None:
    """A job enters each phase once, in order, stamped with the clock; the state is queued
    until the first phase after it, running after, success at the end with the result."""
    clock = Clock()
    book = UploadJobs(clock=clock)
    job = book.create("acme/tiny")
    assert (job.state, job.phase) == ("queued", "queued")
    clock.now += 1
    book.enter(job, "load")
    book.progress(job, "exporting acme/tiny to ONNX (opset 17)")
    book.enter(job, "load")  # a repeat, and a step back: ignored
    clock.now += 1
    book.progress(job, "exported 10 bytes")  # not a phase
    book.progress(job, "validating acme/tiny against PyTorch")
    book.enter(job, "publish")
    assert job.state == "running"
    book.succeed(job, {"status": "success"})
    status = job.status_json()
    assert [p["phase"] for p in status["phases"]] == list(jobs.PHASES)
    assert [p["started_unix"] for p in status["phases"]] == [1000.0, 1001.0, 1001.0, 1002.0, 1002.0]
    assert status["state"] == "success" and status["result"] == {"status": "success"}
    assert status["finished_unix"] == 1002.0 and job.done.is_set()


def test_a_failure_keeps_its_error_and_status() -> None:
    book = UploadJobs()
    job = book.create("acme/tiny")
    book.fail(job, ModelExists("acme--tiny exists"))
    status = job.status_json()
    assert status["state"] == "failed" and status["http_status"] == 409
    assert status["error"] == {"error": "model_exists", "detail": "acme--tiny exists"}


def test_pending_jobs_are_bounded() -> None:
    """Past `max_pending` unfinished jobs a new one is refused 429; a finished one frees room."""
    book = UploadJobs(max_pending=2)
    first = book.create("a/1")
    book.create("a/2")
    with pytest.raises(TooManyUploads) as refused:
        book.create("a/3")
    assert refused.value.status == 429
    book.succeed(first, {})
    book.create("a/3")
    assert book.counts() == (2, 1)


def test_finished_jobs_are_kept_bounded_and_for_a_ttl() -> None:
    """At most `max_kept` finished jobs (oldest forgotten first), each for `ttl_s`."""
    clock = Clock()
    book = UploadJobs(max_kept=3, ttl_s=60.0, clock=clock)
    done = []
    for n in range(5):
        job = book.create(f"a/{n}")
        book.succeed(job, {})
        done.append(job.upload_id)
        clock.now += 10
    assert [book.get(i) is not None for i in done] == [False, False, True, True, True]
    clock.now += 35  # done[2] ended at 1020: its TTL ends at 1080, now 1085
    assert [book.get(i) is not None for i in done] == [False, False, False, True, True]
    clock.now += 1000
    assert all(book.get(i) is None for i in done) and book.counts() == (0, 0)


def test_phase_markers_match_the_real_builder() -> None:
    """The real builder announces each phase with the message prefix `phase_of` reads."""
    source = inspect.getsource(convert.build_entry)
    for prefix, phase in jobs.PHASE_MARKERS:
        assert f'progress(f"{prefix}' in source, prefix
        assert phase_of(prefix + "x") == phase
    assert phase_of("published x") is None


def test_async_uploads_queue_behind_one_conversion_and_are_bounded(
    tmp_path: Path, models_dir: Path
) -> None:
    """One conversion at a time: a second async upload is reported queued while the first
    builds; past the pending bound a third is 429. The sync form answers as before."""
    entered, release = threading.Event(), threading.Event()
    builder = fake_builder(entered=entered, release=release)
    app = create_app(tmp_path / "repo", local_roots=[models_dir], builder=builder)
    app.state.service.jobs.max_pending = 2
    with run_server(app) as server:
        body = {"model_id": "acme/tiny", "overwrite": True, "async": True}
        first = httpx.post(f"{server.base_url}/upload-model", json=body, timeout=10)
        assert first.status_code == 202 and first.headers["location"].startswith("/uploads/")
        assert entered.wait(scaled(10))
        second = httpx.post(f"{server.base_url}/upload-model", json=body, timeout=10)
        third = httpx.post(f"{server.base_url}/upload-model", json=body, timeout=10)
        assert third.status_code == 429 and third.json()["error"] == "too_many_uploads"
        url = server.base_url + second.json()["status_url"]
        assert httpx.get(url, timeout=10).json()["state"] == "queued"
        release.set()
        done = httpx.get(url, params={"wait_s": 20}, timeout=30).json()
        assert done["state"] == "success" and done["result"]["version"] == 2
        # The fake builder says no phase message: load, then publish once it returned.
        assert [p["phase"] for p in done["phases"]] == ["queued", "load", "publish"]
        sync = httpx.post(f"{server.base_url}/upload-model", json={**body, "async": False})
        assert sync.status_code == 200 and sync.json()["version"] == 3
        assert set(sync.json()) == set(done["result"])
        bad = httpx.get(url, params={"wait_s": "61"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
        wrong = httpx.post(f"{server.base_url}/upload-model", json={**body, "async": "yes"})
        assert wrong.status_code == 400


def test_delete_removes_every_version(tmp_path: Path, models_dir: Path) -> None:
    """DELETE /models/{name}: the folder with all its versions is gone and GET /models no
    longer lists it; an unknown name is 404; a bad name 422; a second delete 404."""
    repo = tmp_path / "repo"
    app = create_app(repo, local_roots=[models_dir], builder=fake_builder())
    with run_server(app) as server:
        body = {"model_id": "acme/tiny", "overwrite": True}
        for _ in range(2):
            assert httpx.post(f"{server.base_url}/upload-model", json=body).status_code == 200
        gone = httpx.delete(f"{server.base_url}/models/acme--tiny")
        assert gone.status_code == 200, gone.text
        assert gone.json()["versions"] == [1, 2] and gone.json()["version"] == 2
        assert not (repo / "acme--tiny").exists()
        assert [p.name for p in repo.iterdir() if not p.name.startswith(".locks")] == []
        assert httpx.get(f"{server.base_url}/models").json()["models"] == []
        again = httpx.delete(f"{server.base_url}/models/acme--tiny")
        assert again.status_code == 404 and again.json()["error"] == "model_not_found"
        bad = httpx.delete(f"{server.base_url}/models/..")
        assert bad.status_code in (404, 422)


def test_delete_during_an_upload_of_the_model_is_409(tmp_path: Path, models_dir: Path) -> None:
    """The model's upload lock keeps a delete from removing a model being published."""
    entered, release = threading.Event(), threading.Event()
    repo = tmp_path / "repo"
    app = create_app(repo, local_roots=[models_dir], builder=fake_builder())
    with run_server(app) as server:
        first = httpx.post(f"{server.base_url}/upload-model", json={"model_id": "acme/tiny"})
        assert first.status_code == 200
        app.state.service.builder = fake_builder(entered=entered, release=release)
        body = {"model_id": "acme/tiny", "overwrite": True, "async": True}
        assert httpx.post(f"{server.base_url}/upload-model", json=body).status_code == 202
        assert entered.wait(scaled(10))
        busy = httpx.delete(f"{server.base_url}/models/acme--tiny")
        release.set()
        assert busy.status_code == 409 and busy.json()["error"] == "upload_in_progress"
        assert (repo / "acme--tiny" / "1").is_dir()


def test_admin_key_guards_status_and_delete(tmp_path: Path, models_dir: Path) -> None:
    app = create_app(tmp_path / "repo", local_roots=[models_dir], admin_key="k")
    with run_server(app) as server:
        assert httpx.get(f"{server.base_url}/uploads/x").status_code == 401
        assert httpx.delete(f"{server.base_url}/models/acme--tiny").status_code == 401
        keyed = {"Authorization": "Bearer k"}
        assert httpx.get(f"{server.base_url}/uploads/x", headers=keyed).status_code == 404
