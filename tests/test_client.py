"""The Python client: its retry decisions, both drivers, the model authors' calls, and
exactly-once across a SIGKILL.

The unit tests replace the network with `httpx.MockTransport`. The model authors' calls run
against a real dispatcher (with API and admin keys) in front of the real uploader service
building with a fast fake builder (the conversion itself is tested in tests/uploader). The
last test runs a real dispatcher process with `--state-db`, kills it (SIGKILL) while the client
waits for a task, and restarts it: the client returns the task's result, and the worker ran
the task once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.config import Config as DispatcherConfig
from smartrouting.client import (
    APIError,
    AsyncClient,
    Client,
    ConnectionFailed,
    RetryPolicy,
    TaskTimeout,
    UploadedModel,
    UploadFailed,
    UploadStatus,
)
from smartrouting.client.protocol import Attempts, Call, Reply
from tests.dispatcher.conftest import start_dispatcher
from tests.support import ProcessFactory, free_port, run_server, scaled, wait_until
from tests.uploader.fixtures import fake_builder, write_fake_sentence_transformer
from uploader.service import create_app
from worker.config import Config as WorkerConfig
from worker.engines.simulated import SimulatedEngine
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(120)

FAST = RetryPolicy(attempts=5, budget_s=5.0, backoff_s=0.001, max_backoff_s=0.002)
DONE = {
    "status": "completed",
    "result": {"ok": 1},
    "worker_id": "w1",
    "label": "a",
    "label_miss": False,
    "timings_ms": {"total": 1.0},
}

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*steps: Any) -> tuple[Handler, list[httpx.Request]]:
    """A transport handler answering each request with the next step (an exception to raise,
    or (status, body, headers)); the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        status, body, headers = step
        if callable(body):
            body = body(request)
        return httpx.Response(status, json=body, headers=headers)

    return handle, seen


def echo_id(request: httpx.Request) -> dict[str, Any]:
    """A completed answer carrying the id the request sent."""
    return {**DONE, "task_id": json.loads(request.content)["task_id"]}


# --- retry decisions --------------------------------------------------------------------------


def test_retry_after_is_honoured_and_other_errors_are_not_retried() -> None:
    """429/503 wait Retry-After; 4xx other than 429 and 5xx other than 503 raise at once."""
    now = [0.0]
    attempts = Attempts(RetryPolicy(), Call("POST", "/run-task"), lambda: now[0])
    assert attempts.on_response(503, {"error": "shutting_down"}, "3") == 3.0
    assert attempts.on_response(429, {"error": "queue_full"}, "7") == 7.0
    assert attempts.on_response(200, {"x": 1}, None) == Reply(200, {"x": 1})
    for status, code in ((409, "task_id_conflict"), (502, "task_failed"), (422, "bad")):
        with pytest.raises(APIError) as info:
            attempts.on_response(status, {"error": code, "detail": "d"}, None)
        assert (info.value.status, info.value.code) == (status, code)


def test_retries_stop_at_the_budget() -> None:
    """Past `attempts` or `budget_s`, the last error is raised."""
    now = [0.0]
    policy = RetryPolicy(attempts=3, budget_s=10.0)
    attempts = Attempts(policy, Call("GET", "/x"), lambda: now[0])
    assert attempts.on_response(503, {"error": "no_workers"}, "1") == 1.0
    now[0] = 9.5
    with pytest.raises(APIError):
        attempts.on_response(503, {"error": "no_workers"}, "1")  # 9.5 + 1 > 10
    attempts = Attempts(policy, Call("GET", "/x"), lambda: 0.0)
    for _ in range(2):
        attempts.on_transport_error(httpx.ConnectError("refused"), connect=True)
    with pytest.raises(ConnectionFailed):
        attempts.on_transport_error(httpx.ConnectError("refused"), connect=True)


def test_a_non_idempotent_call_is_retried_only_when_it_never_left() -> None:
    """An upload is retried after a refused connection, not after one cut mid-request."""
    attempts = Attempts(FAST, Call("POST", "/upload-model", idempotent=False), lambda: 0.0)
    assert attempts.on_transport_error(httpx.ConnectError("refused"), connect=True) > 0
    with pytest.raises(ConnectionFailed, match="may have been run"):
        attempts.on_transport_error(httpx.ReadError("reset"), connect=False)


# --- the drivers ------------------------------------------------------------------------------


def test_run_task_retries_with_the_same_task_id() -> None:
    """503 (Retry-After 0) and a dropped connection are retried; every send has one id."""
    handle, seen = scripted(
        (503, {"error": "shutting_down", "detail": "x"}, {"Retry-After": "0"}),
        httpx.ReadError("connection reset"),
        (200, echo_id, {}),
    )
    with Client("http://d", retry=FAST, transport=httpx.MockTransport(handle)) as client:
        done = client.run_task("sample_task", "a", {"run_ms": 1})
    ids = {json.loads(r.content)["task_id"] for r in seen}
    assert len(seen) == 3 and ids == {done.task_id}
    assert done.result == {"ok": 1} and done.worker_id == "w1"


def test_several_dispatchers_fail_over_in_turn_with_the_same_task_id() -> None:
    """A dropped connection on A and a 503 on B move on to C, which then stays current; a 429
    (the caller's own limit) retries the same dispatcher."""
    handle, seen = scripted(
        httpx.ReadError("connection reset"),
        (503, {"error": "shutting_down", "detail": "x"}, {"Retry-After": "0"}),
        (429, {"error": "caller_busy", "detail": "x"}, {"Retry-After": "0"}),
        (200, echo_id, {}),
        (200, echo_id, {}),
    )
    urls = ["http://a", "http://b/", "http://c"]
    with Client(urls, retry=FAST, transport=httpx.MockTransport(handle)) as client:
        first = client.run_task("sample_task", "x")
        client.run_task("sample_task", "x")
    assert [r.url.host for r in seen] == ["a", "b", "c", "c", "c"]
    assert {json.loads(r.content)["task_id"] for r in seen[:4]} == {first.task_id}
    with pytest.raises(ValueError):
        Client([])


def test_embed_models_workers_and_errors() -> None:
    """Typed results of embed, models and workers; an error answer is an APIError."""
    embedded = {
        **DONE,
        "task_id": "e",
        "result": {
            "embeddings": [[0.1, 0.2]],
            "dimension": 2,
            "model": "m",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        },
    }
    worker = {
        "worker_id": "w1", "state": "ready", "capacity": 2, "slots": 1, "engine": "triton",
        "device": "cpu", "labels": ["m"], "labels_loading": [], "in_flight": 0,
        "completed": 3, "misses": 1,
    }  # fmt: skip
    handle, seen = scripted(
        (200, embedded, {}),
        (200, {"models": [{"name": "m", "version": "2", "loaded_on": ["w1"]}]}, {}),
        (200, {"workers": [worker]}, {}),
        (404, {"error": {"message": "gone", "type": "t", "param": None, "code": "nope"}}, {}),
    )
    with Client("http://d", api_key="k", transport=httpx.MockTransport(handle)) as client:
        vectors = client.embed(["hello"], model="m")
        assert [(m.name, m.version, m.loaded_on) for m in client.models()] == [("m", "2", ["w1"])]
        assert client.workers()[0].completed == 3
        with pytest.raises(APIError) as info:
            client.cancel("x")
    assert vectors.vectors == [[0.1, 0.2]] and vectors.prompt_tokens == 4
    assert json.loads(seen[0].content)["parameters"] == {"texts": ["hello"], "normalize": True}
    assert seen[0].headers["authorization"] == "Bearer k"
    assert (info.value.status, info.value.code) == (404, "nope")


def test_an_unconfigured_uploader_is_not_retried() -> None:
    """503 `uploader_not_configured` carries Retry-After, but only a new configuration ends
    it: the client raises at once instead of spending its retry budget."""
    handle, seen = scripted(
        (503, {"error": "uploader_not_configured", "detail": "x"}, {"Retry-After": "0"}),
    )
    with Client("http://d", retry=FAST, transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(APIError) as info:
            client.upload_model("acme/tiny")
    assert (info.value.status, info.value.code, len(seen)) == (503, "uploader_not_configured", 1)
    assert json.loads(seen[0].content) == {"model_id": "acme/tiny", "overwrite": False}


async def test_async_client_submits_and_waits_through_a_shutdown() -> None:
    """The async driver: submit, a long poll, a task failed by a dispatcher shutting down is
    waited out (its successor runs it), then the result; a timeout is TaskTimeout."""
    failed = {"task_id": "t", "status": "failed", "error": {"error": "shutting_down"}}
    handle, seen = scripted(
        (202, {"task_id": "t", "status": "queued", "status_url": "/tasks/t"}, {}),
        (200, {"task_id": "t", "status": "running"}, {}),
        (200, failed, {}),
        httpx.ConnectError("refused"),
        (200, {**DONE, "task_id": "t"}, {}),
    )
    retry = RetryPolicy(attempts=5, budget_s=5.0, backoff_s=0.001, max_backoff_s=0.002)
    transport = httpx.MockTransport(handle)
    async with AsyncClient("http://d", retry=retry, transport=transport) as client:
        client_wait = asyncio.create_task(
            client.run_task("sample_task", "a", task_id="t", durable=True)
        )
        done = await asyncio.wait_for(client_wait, scaled(10))
    assert done.task_id == "t" and done.result == {"ok": 1}
    assert [r.method for r in seen] == ["POST", "GET", "GET", "GET", "GET"]
    assert float(seen[1].url.params["wait_s"]) > 0

    queued = httpx.Response(200, json={"task_id": "t", "status": "queued"})
    async with AsyncClient("http://d", transport=httpx.MockTransport(lambda r: queued)) as client:
        with pytest.raises(TaskTimeout):
            await client.result("t", timeout_s=0.001)


# --- the model authors' calls against a real dispatcher and uploader --------------------------

API_KEY, ADMIN_KEY = "caller-key", "admin-key"


@dataclass(frozen=True)
class Deployment:
    """A dispatcher (API and admin keys set) in front of an uploader with a fake builder."""

    base_url: str
    repository: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("authors")
    for name in ("tiny", "small", "other"):
        write_fake_sentence_transformer(root / "models" / "acme" / name)
    app = create_app(root / "repo", local_roots=[root / "models"], builder=fake_builder())
    with run_server(app) as uploader:
        config = DispatcherConfig(
            uploader_url=uploader.base_url,
            api_keys=(API_KEY,),
            admin_key=ADMIN_KEY,
            worker_token="worker-token",
        )
        running = start_dispatcher(config)
        try:
            yield Deployment(running.base_url, root / "repo")
        finally:
            running.stop()


def test_sync_client_uploads_waits_rolls_back_and_deletes(deployment: Deployment) -> None:
    """Upload (sync) → version 1; upload with `wait=False` → an id, its phases, then
    `wait_for_upload` → version 2; a failed upload raises the uploader's 409; the catalogue
    shows the version; rollback → 1; delete → `model()` is a 404."""
    label = "acme--tiny"
    with Client(deployment.base_url, api_key=API_KEY, admin_key=ADMIN_KEY) as client:
        first = client.upload_model("acme/tiny", max_batch_size=8)
        assert isinstance(first, UploadedModel)
        assert (first.model_name, first.version, first.max_batch_size) == (label, 1, 8)
        assert first.content_hash.startswith("sha256:")

        queued = client.upload_model("acme/tiny", overwrite=True, wait=False)
        assert isinstance(queued, UploadStatus) and queued.upload_id
        assert queued.state in ("queued", "running", "success")
        second = client.wait_for_upload(queued.upload_id, timeout_s=scaled(30))
        assert second.version == 2 and second.replaced
        ended = client.upload_status(queued.upload_id, wait_s=1)
        assert ended.finished and ended.state == "success"
        assert [p.phase for p in ended.phases][0] == "queued"
        assert ended.phases[-1].phase == "publish"
        assert ended.result == second

        refused = client.upload_model("acme/tiny", wait=False)
        assert isinstance(refused, UploadStatus)
        with pytest.raises(UploadFailed) as failed:
            client.wait_for_upload(refused.upload_id, timeout_s=scaled(30))
        assert (failed.value.status, failed.value.code) == (409, "model_exists")
        assert failed.value.upload.state == "failed"

        # The dispatcher publishes what the uploader published by itself (its watch).
        wait_until(lambda: client.model(label).version == "2", scaled(10), "version 2")
        assert label in [m.name for m in client.models()]
        assert client.model(label).published

        rolled = client.rollback_model(label)
        assert (rolled.model_name, rolled.version, rolled.rolled_back_from) == (label, 1, 2)
        assert rolled.content_hash == first.content_hash
        with pytest.raises(APIError) as none_left:
            client.rollback_model(label)
        assert (none_left.value.status, none_left.value.code) == (409, "no_previous_version")

        deleted = client.delete_model(label)
        assert deleted.model_name == label and deleted.files_removed
        assert sorted(deleted.versions_removed) == [1, 2]
        assert not (deployment.repository / label).exists()
        with pytest.raises(APIError) as gone:
            client.model(label)
        assert (gone.value.status, gone.value.code) == (404, "model_not_found")
        with pytest.raises(APIError) as unknown:
            client.upload_status("no-such-upload")
        assert (unknown.value.status, unknown.value.code) == (404, "upload_not_found")


async def test_async_client_uploads_in_the_background_and_deletes(
    deployment: Deployment,
) -> None:
    """The asyncio front end: `wait=False`, `wait_for_upload`, `model`, `delete_model`."""
    label = "acme--small"
    async with AsyncClient(deployment.base_url, api_key=API_KEY, admin_key=ADMIN_KEY) as client:
        queued = await client.upload_model("acme/small", wait=False)
        assert isinstance(queued, UploadStatus)
        published = await client.wait_for_upload(queued.upload_id, timeout_s=scaled(30))
        assert (published.model_name, published.version) == (label, 1)

        async def catalogued() -> str | None:  # the dispatcher's watch publishes it
            while True:
                with contextlib.suppress(APIError):
                    if (version := (await client.model(label)).version) is not None:
                        return version
                await asyncio.sleep(0.02)

        assert await asyncio.wait_for(catalogued(), scaled(10)) == "1"
        assert (await client.delete_model(label)).model_name == label
        with pytest.raises(APIError) as gone:
            await client.model(label)
        assert gone.value.status == 404


def test_admin_calls_without_the_admin_key_are_refused(deployment: Deployment) -> None:
    """With an admin key set: no key is a typed 401, a caller's API key a typed 403 on
    uploads, their status, rollback and delete, while the catalogue stays readable."""
    with Client(deployment.base_url) as anonymous:
        with pytest.raises(APIError) as no_key:
            anonymous.upload_model("acme/other")
        assert (no_key.value.status, no_key.value.code) == (401, "unauthorized")
    with Client(deployment.base_url, api_key=API_KEY) as caller:
        refused = [
            lambda: caller.upload_model("acme/other"),
            lambda: caller.upload_model("acme/other", wait=False),
            lambda: caller.upload_status("x"),
            lambda: caller.rollback_model("acme--other"),
            lambda: caller.delete_model("acme--other"),
        ]
        for call in refused:
            with pytest.raises(APIError) as forbidden:
                call()
            assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
        assert isinstance(caller.models(), list)
    assert not (deployment.repository / "acme--other").exists()


# --- exactly once across a dispatcher SIGKILL -------------------------------------------------


def recorded(db: Path) -> list[str | None]:
    """The worker ids the state database keeps for its tasks (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("SELECT worker_id FROM tasks")]


class CountingEngine(SimulatedEngine):
    """The simulated engine, counting each execution of `sample_task`."""

    def __init__(self) -> None:
        super().__init__(load_ms=0.0, load_stddev_ms=0.0, run_ms=0.0, run_stddev_ms=0.0)
        self.executions = 0
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    async def sample(self, label: str, run_ms: float | None) -> dict[str, Any]:
        self.executions += 1
        self.started.set()
        try:
            return await super().sample(label, run_ms)
        finally:
            self.finished.set()


async def test_client_retries_across_a_dispatcher_sigkill_and_the_task_runs_once(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    """kill -9 of the dispatcher (state DB on) while the client waits for a durable task; the
    worker finishes it meanwhile; after the restart the client gets the result, and the
    worker ran it exactly once (its buffered result answered the restored task)."""
    port = free_port()
    db = tmp_path / "state.db"
    args = ["--state-db", str(db), "--log-level", "warning"]
    args += ["--ws-ping-interval-s", "1", "--ws-ping-timeout-s", "2"]
    first = await asyncio.to_thread(processes.dispatcher, port, *args, name="dispatcher-1")
    engine = CountingEngine()
    config = WorkerConfig(
        dispatcher_url=(f"ws://127.0.0.1:{port}/worker-listen",),
        worker_id="w-once",
        engine="simulated",
        reconnect_max_backoff_s=0.3,
        state_dir=tmp_path / "worker",
    )
    worker = Worker(config, engine=engine)
    running = asyncio.create_task(worker.run())
    retry = RetryPolicy(attempts=200, budget_s=scaled(60), max_backoff_s=0.5)
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", retry=retry) as client:
            waiting = asyncio.create_task(
                client.run_task("sample_task", "a", {"run_ms": 1500}, durable=True, timeout_s=60)
            )
            await asyncio.wait_for(engine.started.wait(), scaled(30))
            # The dispatch is recorded off the event loop; kill once it is on disk (the kill
            # is meant to catch the task running, not that write in flight).
            await asyncio.to_thread(wait_until, lambda: recorded(db) == ["w-once"], 10, "row")
            first.signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, scaled(10))
            # The worker finishes while no dispatcher runs: its result waits in its outbox.
            await asyncio.wait_for(engine.finished.wait(), scaled(30))
            assert not waiting.done()
            await asyncio.to_thread(processes.dispatcher, port, *args, name="dispatcher-2")
            done = await asyncio.wait_for(waiting, scaled(60))
            stats = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/stats")).json()
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, scaled(30))
    assert done.result["label"] == "a" and done.worker_id == "w-once"
    assert engine.executions == 1 and worker.tasks_run == 1
    assert stats["tasks_completed"] == 1 and stats["tasks_submitted"] == 1
