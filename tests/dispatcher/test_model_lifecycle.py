"""The model lifecycle through the dispatcher and the real uploader service: an asynchronous
upload, versions in `/labels`, `DELETE /models/{name}` (drain, unload, remove, forget).

The uploader is `uploader.service.create_app` under a real uvicorn, building with a fast fake
builder (the conversion itself is tested in tests/uploader); workers are protocol fakes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import free_port, run_server, scaled, until
from tests.uploader.fixtures import fake_builder, write_fake_sentence_transformer
from uploader.convert import BuildReport, Progress
from uploader.service import create_app
from uploader.sources import ResolvedSource

LABEL = "acme--tiny"


@dataclass
class Uploader:
    """The uploader service and the gate of its builder."""

    base_url: str
    repository: Path
    entered: threading.Event
    release: threading.Event


def _phased_builder(entered: threading.Event, release: threading.Event) -> Any:
    """The fake builder, saying what the real one says when it starts each phase; it blocks
    in `load` until `release` is set."""
    inner = fake_builder()

    def build(
        source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
    ) -> BuildReport:
        progress(f"loading {source.model_id}")
        entered.set()
        if not release.wait(scaled(30)):
            raise TimeoutError("never released")
        progress(f"exporting {source.model_id} to ONNX")
        progress(f"validating {source.model_id} against PyTorch")
        return inner(source, entry, max_batch_size, progress)

    return build


@pytest.fixture
def uploader(tmp_path: Path) -> Iterator[Uploader]:
    models = tmp_path / "models"
    write_fake_sentence_transformer(models / "acme" / "tiny")
    repository = tmp_path / "repo"
    entered, release = threading.Event(), threading.Event()
    release.set()
    app = create_app(repository, local_roots=[models], builder=_phased_builder(entered, release))
    with run_server(app) as server:
        yield Uploader(server.base_url, repository, entered, release)


def _task(label: str = LABEL) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters": {}}


async def test_async_upload_phases_and_versions_in_labels(
    dispatcher_factory, workers, uploader: Uploader
) -> None:
    """`"async": true` → 202 + Location; a second one is queued behind the first; the first
    goes queued → load → export → validate → publish and ends success with the synchronous
    answer's body; the dispatcher publishes it by itself (Reload to the holder, `/labels`
    and `/models` show the version and content hash)."""
    d = dispatcher_factory(uploader_url=uploader.base_url)
    holder = await workers(d.ws_url, "w1", servable=[LABEL], labels=[LABEL])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
        sync = await c.post("/upload-model", json={"model_id": "acme/tiny"})
        assert sync.status_code == 200, sync.text
        assert sync.json()["version"] == 1

        uploader.release.clear()
        uploader.entered.clear()
        body = {"model_id": "acme/tiny", "overwrite": True, "async": True}
        first = await c.post("/upload-model", json=body)
        assert first.status_code == 202, first.text
        assert first.headers["location"] == first.json()["status_url"]
        assert first.json()["state"] == "queued"
        await asyncio.to_thread(uploader.entered.wait, scaled(10))
        second = await c.post("/upload-model", json=body)
        assert second.status_code == 202
        running = (await c.get(first.json()["status_url"])).json()
        queued = (await c.get(second.json()["status_url"])).json()
        assert (running["state"], running["phase"]) == ("running", "load")
        assert (queued["state"], queued["phase"]) == ("queued", "queued")

        uploader.release.set()
        done = (await c.get(first.json()["status_url"], params={"wait_s": 20})).json()
        assert done["state"] == "success", done
        assert [p["phase"] for p in done["phases"]] == [
            "queued",
            "load",
            "export",
            "validate",
            "publish",
        ]
        starts = [p["started_unix"] for p in done["phases"]]
        assert starts == sorted(starts) and done["finished_unix"] >= starts[-1]
        result = done["result"]
        assert set(result) == set(sync.json()) and result["version"] == 2
        assert result["status"] == "success" and result["model_name"] == LABEL
        last = (await c.get(second.json()["status_url"], params={"wait_s": 20})).json()
        assert last["state"] == "success" and last["result"]["version"] == 3

        # The dispatcher's own watch published both: the holder was told each version.
        await until(lambda: [r.version for r in holder.reloads][-1:] == ["3"], "reload v3")
        detail = (await c.get("/labels", params={"detail": "true"})).json()
        assert detail[LABEL]["workers"] == ["w1"]
        assert detail[LABEL]["version"] == "3"
        assert detail[LABEL]["content_hash"] == last["result"]["content_hash"]
        assert detail[LABEL]["content_hash"].startswith("sha256:")
        assert (await c.get("/labels")).json() == {LABEL: ["w1"]}  # the original shape
        model = (await c.get(f"/models/{LABEL}")).json()
        assert (model["version"], model["content_hash"]) == ("3", detail[LABEL]["content_hash"])

        failed = await c.post("/upload-model", json={"model_id": "acme/tiny", "async": True})
        status = (await c.get(failed.json()["status_url"], params={"wait_s": 20})).json()
        assert status["state"] == "failed"
        assert status["error"]["error"] == "model_exists" and status["http_status"] == 409
        unknown = await c.get("/uploads/nope")
        assert unknown.status_code == 404 and unknown.json()["error"] == "upload_not_found"


async def test_a_starting_dispatcher_learns_the_published_versions(
    dispatcher_factory, uploader: Uploader
) -> None:
    """The uploader's published models, versions and hashes are in a new dispatcher's
    catalogue before any publish through it."""
    published = httpx.post(f"{uploader.base_url}/upload-model", json={"model_id": "acme/tiny"})
    assert published.status_code == 200
    d = dispatcher_factory(uploader_url=uploader.base_url)
    async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
        entry: dict[str, Any] = {}

        async def learned() -> None:
            while entry.get("version") != "1":
                answer = await c.get(f"/models/{LABEL}")
                entry.update(answer.json() if answer.status_code == 200 else {})
                await asyncio.sleep(0.02)

        await asyncio.wait_for(learned(), scaled(10))
        assert entry["content_hash"] == published.json()["content_hash"]
        assert entry["published"] is True


async def test_delete_drains_unloads_removes_and_forgets(
    dispatcher_factory, workers, uploader: Uploader
) -> None:
    """DELETE while a task runs on the model: new tasks 410 at once, the holder is sent
    Unload and finishes the running task first, the folder is removed, and from then on a
    task for it is 404 (with no frame to a worker) and the catalogue has no entry."""
    d = dispatcher_factory(uploader_url=uploader.base_url, task_timeout_s=30.0)
    holder = await workers(d.ws_url, "w1", servable=[LABEL, "other"], labels=[LABEL])
    bystander = await workers(d.ws_url, "w2", servable=["other"], labels=["other"])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
        assert (await c.post("/upload-model", json={"model_id": "acme/tiny"})).status_code == 200
        assert (uploader.repository / LABEL).is_dir()

        missing = await c.delete("/models/acme-tiny")
        assert missing.status_code == 404
        assert "did you mean 'acme--tiny'" in missing.json()["detail"]

        holder.hold()
        running = await c.post("/tasks", json=_task())
        await holder.wait_for_tasks(1)
        deleting = asyncio.create_task(c.delete(f"/models/{LABEL}"))
        await until(lambda: len(holder.unloads) == 1, "Unload frame")
        refused = await c.post("/run-task", json=_task())
        assert refused.status_code == 410 and refused.json()["error"] == "model_deleted"
        assert not deleting.done()  # waits for the running task to finish and the unload
        holder.release()
        answer = await asyncio.wait_for(deleting, scaled(20))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["unloaded_from"] == ["w1"] and body["still_loaded_on"] == []
        assert body["files_removed"] is True and body["versions_removed"] == [1]
        assert holder.unloads[0].label == LABEL and bystander.unloads == []
        task = (await c.get(running.json()["status_url"])).json()
        assert task["status"] == "completed"  # the running task finished on the model
        assert not (uploader.repository / LABEL).exists()

        received = len(holder.received)
        after = await c.post("/run-task", json=_task())
        assert after.status_code == 404 and after.json()["error"] == "model_not_found"
        assert "deleted" in after.json()["detail"]
        assert len(holder.received) == received
        assert (await c.get(f"/models/{LABEL}")).status_code == 404
        assert LABEL not in (await c.get("/labels")).json()
        assert (await c.post("/run-task", json=_task("other"))).status_code == 200


async def test_delete_with_the_uploader_down_changes_nothing(dispatcher_factory, workers) -> None:
    """The uploader does not answer: 503 whose detail says nothing changed, no Unload sent,
    and the model is still served."""
    d = dispatcher_factory(uploader_url=f"http://127.0.0.1:{free_port()}")
    holder = await workers(d.ws_url, "w1", servable=[LABEL], labels=[LABEL])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
        answer = await c.delete(f"/models/{LABEL}")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "uploader_unavailable"
        assert "nothing was changed" in answer.json()["detail"]
        assert holder.unloads == []
        assert (await c.post("/run-task", json=_task())).status_code == 200


async def test_uploader_failing_at_the_removal_serves_the_model_again(
    dispatcher_factory, workers
) -> None:
    """The uploader answers its health check but not the removal: 503 saying the model was
    unloaded and its files are still there; the model is served again (loaded on demand)."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"message": "OK"})

    released = threading.Event()

    async def remove(request: Request) -> JSONResponse:
        await asyncio.to_thread(released.wait, scaled(10))  # past the dispatcher's wait
        return JSONResponse({"status": "success"})

    stub = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/models/{name}", remove, methods=["DELETE"]),
        ]
    )
    with run_server(stub) as server:
        d = dispatcher_factory(uploader_url=server.base_url)
        d.server.app.state.model_admin.remove_timeout_s = 0.3
        holder = await workers(d.ws_url, "w1", servable=[LABEL], labels=[LABEL])
        async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
            answer = await c.delete(f"/models/{LABEL}")
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "uploader_unavailable"
            detail = answer.json()["detail"]
            assert "unloaded from ['w1']" in detail and "files are still" in detail
            assert [u.label for u in holder.unloads] == [LABEL]
            again = await c.post("/run-task", json=_task())
            assert again.status_code == 200 and again.json()["label_miss"] is True
        released.set()


async def test_model_admin_needs_the_admin_key(dispatcher_factory, workers) -> None:
    """With keys on, DELETE /models/{name} and /uploads/{id} take the admin key only; reading
    the catalogue stays open to API keys."""
    d = dispatcher_factory(
        uploader_url=f"http://127.0.0.1:{free_port()}",
        api_keys=("caller-key",),
        admin_key="admin-key",
        worker_token="worker-token",
    )
    caller = {"Authorization": "Bearer caller-key"}
    async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:
        assert (await c.delete(f"/models/{LABEL}", headers=caller)).status_code == 403
        assert (await c.get("/uploads/x", headers=caller)).status_code == 403
        assert (await c.delete(f"/models/{LABEL}")).status_code == 401
        assert (await c.get("/models", headers=caller)).status_code == 200
        admin = {"Authorization": "Bearer admin-key"}
        assert (await c.delete(f"/models/{LABEL}", headers=admin)).status_code == 404
