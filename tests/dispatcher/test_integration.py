"""Integration tests: a real uvicorn dispatcher, fake workers over real websockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.dispatcher.fake_worker import FakeWorker

pytestmark = pytest.mark.timeout(60)


def task(label: str, **extra: Any) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters_json": "{}", **extra}


async def test_affinity_tasks_go_to_the_label_holder(dispatcher, client, workers) -> None:
    """Tasks for a label go to the idle worker already holding it (no miss)."""
    await workers(dispatcher.ws_url, "w-a", labels=["a"])
    await workers(dispatcher.ws_url, "w-b", labels=["b"])
    for _ in range(3):
        for label, worker_id in (("a", "w-a"), ("b", "w-b")):
            answer = await client.post("/run-task", json=task(label))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["worker_id"] == worker_id
            assert body["label_miss"] is False
            assert body["result"] == {"label": label, "worker": worker_id}
    stats = (await client.get("/stats")).json()
    assert stats["label_hits"] == 6 and stats["label_misses"] == 0


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll an async condition on the server (another thread's state) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_miss_loads_on_idle_worker_with_evict_hint(dispatcher, client, workers) -> None:
    """A label nobody holds is loaded on an idle worker, evicting its least useful label."""
    wa = await workers(dispatcher.ws_url, "w-a", capacity=1, labels=["a"])
    wb = await workers(dispatcher.ws_url, "w-b", capacity=1, labels=["b"])
    answer = await client.post("/run-task", json=task("c"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["label_miss"] is True
    loaded_on = wa if body["worker_id"] == "w-a" else wb
    assert list(loaded_on.received[-1].evict_hint) == [loaded_on.labels[0]]
    labels = (await client.get("/labels")).json()
    assert labels["c"] == [body["worker_id"]]
    assert len(labels) == 2  # the evicted label is gone from the registry
    again = (await client.post("/run-task", json=task("c"))).json()
    assert again["worker_id"] == body["worker_id"] and again["label_miss"] is False


async def test_random_policy_ignores_labels(dispatcher_factory, workers) -> None:
    """In random mode tasks of one label land on both workers, whatever they hold."""
    d = dispatcher_factory(policy="random", seed=7)
    await workers(d.ws_url, "w-a", labels=["a"])
    await workers(d.ws_url, "w-b", labels=["b"])
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
        seen = set()
        for _ in range(20):
            answer = await c.post("/run-task", json=task("a"))
            assert answer.status_code == 200
            seen.add(answer.json()["worker_id"])
        stats = (await c.get("/stats")).json()
    assert seen == {"w-a", "w-b"}
    assert stats["policy"] == "random" and stats["label_misses"] >= 1


async def test_tasks_queue_while_all_workers_are_busy(dispatcher, client, workers) -> None:
    """With the only worker busy a second task waits in the queue, then runs on it."""
    w = await workers(dispatcher.ws_url, "w-a", labels=["a"])
    w.hold()
    first = asyncio.create_task(client.post("/run-task", json=task("a")))
    await w.wait_for_tasks(1)
    second = asyncio.create_task(client.post("/run-task", json=task("a")))

    async def queued() -> bool:
        return (await client.get("/stats")).json()["queue_depth"] == 1

    await eventually(queued, what="one queued task")
    assert len(w.received) == 1
    w.release()
    answers = await asyncio.gather(first, second)
    assert [a.status_code for a in answers] == [200, 200]
    assert len(w.received) == 2


async def test_killed_worker_task_completes_elsewhere(dispatcher, client, workers) -> None:
    """A worker dying mid-task: the task is re-dispatched and completes on another worker."""
    wa = await workers(dispatcher.ws_url, "w-a", labels=["a"])
    wa.hold()
    pending = asyncio.create_task(client.post("/run-task", json=task("a")))
    await wa.wait_for_tasks(1)
    wb = await workers(dispatcher.ws_url, "w-b", labels=["b"])
    await wa.crash()
    answer = await pending
    assert answer.status_code == 200, answer.text
    assert answer.json()["worker_id"] == "w-b"
    assert wb.received[0].attempt == 2
    stats = (await client.get("/stats")).json()
    assert stats["tasks_redispatched"] == 1 and stats["workers_connected"] == 1


async def test_attempts_exhausted_answers_503(dispatcher_factory, workers) -> None:
    """With max_attempts=1 a task whose worker dies fails with 503 attempts_exhausted."""
    d = dispatcher_factory(max_attempts=1)
    w = await workers(d.ws_url, "w-a", labels=["a"])
    w.hold()
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
        pending = asyncio.create_task(c.post("/run-task", json=task("a")))
        await w.wait_for_tasks(1)
        await w.crash()
        answer = await pending
    assert answer.status_code == 503
    assert answer.json()["error"] == "attempts_exhausted"


async def test_goodbye_returned_tasks_are_redispatched(dispatcher, client, workers) -> None:
    """Tasks a leaving worker hands back in Goodbye run on another worker at once."""
    from proto import smartrouting_pb2 as pb

    wa = await workers(dispatcher.ws_url, "w-a", labels=["a"])
    wa.hold()
    pending = asyncio.create_task(client.post("/run-task", json=task("a")))
    tasks = await wa.wait_for_tasks(1)
    wb = await workers(dispatcher.ws_url, "w-b")
    goodbye = pb.Goodbye(reason="sigterm", returned_task_ids=[tasks[0].task_id])
    await wa.send(pb.WorkerMessage(goodbye=goodbye))
    answer = await pending
    assert answer.status_code == 200 and answer.json()["worker_id"] == "w-b"
    assert wb.received[0].attempt == 1  # a returned task does not use up an attempt


async def test_garbage_frame_closes_only_that_connection(dispatcher, client, workers) -> None:
    """A frame that does not parse closes that worker with 1008; others keep working."""
    bad = await workers(dispatcher.ws_url, "w-bad", labels=["a"])
    await workers(dispatcher.ws_url, "w-good", labels=["a"])
    await bad.send_raw(b"\xff\xfe\xfd garbage")
    code, _ = await bad.wait_closed()
    assert code == 1008
    answer = await client.post("/run-task", json=task("a"))
    assert answer.status_code == 200 and answer.json()["worker_id"] == "w-good"
    assert (await client.get("/workers")).json() == {"workers": ["w-good"]}


async def _closed_with(url: str, headers: dict[str, str], first: bytes | None = None) -> Any:
    import websockets

    async with websockets.connect(url, additional_headers=headers) as ws:
        if first is not None:
            await ws.send(first)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


async def test_missing_worker_id_is_refused_with_reason(dispatcher) -> None:
    """A websocket without the Worker-Id header is closed with 1008 and a clear reason."""
    rcvd = await _closed_with(dispatcher.ws_url, {})
    assert rcvd.code == 1008 and "Worker-Id" in rcvd.reason


async def test_duplicate_worker_id_is_refused(dispatcher, workers) -> None:
    """A second connection with a live worker's id is closed with 1008 'duplicate'."""
    await workers(dispatcher.ws_url, "w-a")
    rcvd = await _closed_with(dispatcher.ws_url, {"Worker-Id": "w-a"})
    assert rcvd.code == 1008 and "duplicate" in rcvd.reason


async def test_first_frame_must_be_hello(dispatcher) -> None:
    """A worker whose first message is not Hello is closed with 1008."""
    from proto import frames
    from proto import smartrouting_pb2 as pb

    frame = frames.encode(pb.WorkerMessage(goodbye=pb.Goodbye(reason="x")))
    rcvd = await _closed_with(dispatcher.ws_url, {"Worker-Id": "w-x"}, first=frame)
    assert rcvd.code == 1008 and "Hello" in rcvd.reason


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"label": "a"}', 422, "validation_failed"),
        (b'{"task_type": "t"}', 422, "validation_failed"),
        (b'{"task_type": "", "label": "a"}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": 5}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "a", "parameters_json": "{x"}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "a", "parameters_json": {}}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "a", "timeout_s": -1}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "a", "timeout_s": 1e308}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "a", "timeout_s": NaN}', 422, "validation_failed"),
        (b'{"task_type": "t", "label": "x\\ud828"}', 422, "validation_failed"),
        (
            b'{"task_type": "t", "label": "a", "parameters_json": "\\"\\ud828\\""}',
            422,
            "validation_failed",
        ),
    ],
)
async def test_bad_bodies_get_json_4xx(client, content, status, error) -> None:
    """Malformed or incomplete bodies are refused with a JSON error and a 4xx status."""
    for path in ("/run-task", "/tasks"):
        answer = await client.post(path, content=content)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"] == error and "detail" in answer.json()


async def test_oversized_body_gets_413(dispatcher_factory) -> None:
    """A body over the configured limit is refused with 413 JSON."""
    d = dispatcher_factory(max_body_bytes=1024)
    body = {"task_type": "t", "label": "a", "parameters": {"x": "y" * 2000}}
    async with httpx.AsyncClient(base_url=d.base_url) as c:
        answer = await c.post("/run-task", json=body)
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"


async def test_unknown_task_id_gets_404(client) -> None:
    """Polling an id nobody submitted answers 404 JSON."""
    answer = await client.get("/tasks/nope")
    assert answer.status_code == 404 and answer.json()["error"] == "task_not_found"
    assert (await client.get("/no-such-path")).status_code == 404


async def test_async_submit_then_poll(dispatcher, client, workers) -> None:
    """POST /tasks answers 202; the task waits for a worker; GET /tasks/{id} gives its result."""
    body = {"task_id": "t-1", "task_type": "sample_task", "label": "a", "parameters": {"n": 1}}
    answer = await client.post("/tasks", json=body)
    assert answer.status_code == 202
    assert answer.json() == {"task_id": "t-1", "status": "queued", "status_url": "/tasks/t-1"}
    assert (await client.get("/tasks/t-1")).json() == {"task_id": "t-1", "status": "queued"}
    w = await workers(dispatcher.ws_url, "w-late")

    async def completed() -> Any:
        body = (await client.get("/tasks/t-1")).json()
        return body if body["status"] == "completed" else None

    body = await eventually(completed, what="t-1 to complete")
    assert body["result"] == {"label": "a", "worker": "w-late"}
    assert w.received[0].parameters_json == '{"n": 1}'


async def test_deadline_answers_504_and_cancels(dispatcher, client, workers) -> None:
    """A task past its timeout_s answers 504 and its worker is sent Cancel."""
    w = await workers(dispatcher.ws_url, "w-a", labels=["a"])
    w.hold()
    answer = await client.post("/run-task", json=task("a", timeout_s=0.3))
    assert answer.status_code == 504 and answer.json()["error"] == "deadline_exceeded"

    async def cancelled() -> bool:
        return len(w.cancels) == 1

    await eventually(cancelled, what="a Cancel frame")
    assert w.cancels[0].task_id == w.received[0].task_id


async def test_queue_full_answers_429_with_retry_after(dispatcher_factory) -> None:
    """Past max_queue waiting tasks a submission gets 429 with Retry-After."""
    d = dispatcher_factory(max_queue=1)
    async with httpx.AsyncClient(base_url=d.base_url) as c:
        assert (await c.post("/tasks", json=task("a"))).status_code == 202
        answer = await c.post("/tasks", json=task("a"))
    assert answer.status_code == 429 and answer.json()["error"] == "queue_full"
    assert int(answer.headers["retry-after"]) >= 1


async def test_duplicate_task_id_answers_409(client) -> None:
    """A task id that is queued already is refused with 409 when the body differs (the same
    body is a retry of that task: tests/dispatcher/test_idempotency.py)."""
    assert (await client.post("/tasks", json=task("a", task_id="dup"))).status_code == 202
    answer = await client.post("/run-task", json=task("b", task_id="dup"))
    assert answer.status_code == 409 and answer.json()["error"] == "task_id_conflict"


async def test_reject_without_workers_answers_503(dispatcher_factory) -> None:
    """Configured so, a dispatcher with no worker answers 503 at once with Retry-After."""
    d = dispatcher_factory(reject_without_workers=True)
    async with httpx.AsyncClient(base_url=d.base_url) as c:
        answer = await c.post("/run-task", json=task("a"))
    assert answer.status_code == 503 and answer.json()["error"] == "no_workers"
    assert "retry-after" in answer.headers


async def test_health_workers_labels_shapes(dispatcher, client, workers) -> None:
    """/health, /workers and /labels answer exactly the shapes of docs/architecture.md §4.1."""
    assert (await client.get("/health")).json() == {"message": "OK"}
    assert (await client.get("/workers")).json() == {"workers": []}
    assert (await client.get("/labels")).json() == {}
    await workers(dispatcher.ws_url, "worker-id-1", labels=["label-1", "label-2"])
    await workers(dispatcher.ws_url, "worker-id-2", labels=["label-1"])
    assert (await client.get("/workers")).json() == {"workers": ["worker-id-1", "worker-id-2"]}
    assert (await client.get("/labels")).json() == {
        "label-1": ["worker-id-1", "worker-id-2"],
        "label-2": ["worker-id-1"],
    }
    detail = (await client.get("/workers?detail=true")).json()["workers"]
    assert detail[0]["worker_id"] == "worker-id-1"
    assert detail[0]["labels"] == ["label-1", "label-2"] and detail[0]["state"] == "ready"


async def test_stats_shape(dispatcher, client, workers) -> None:
    """/stats has every key of docs/interfaces.md section 3, with per-label and per-worker."""
    await workers(dispatcher.ws_url, "w-a", labels=["a"])
    assert (await client.post("/run-task", json=task("a"))).status_code == 200
    stats = (await client.get("/stats")).json()
    assert set(stats) == {
        "policy", "uptime_s", "workers_connected", "tasks_submitted", "tasks_completed",
        "tasks_failed", "tasks_redispatched", "label_hits", "label_misses",
        "load_time_s_total", "run_time_s_total", "avg_task_runtime_s", "queue_depth",
        "in_flight", "per_label", "per_worker",
    }  # fmt: skip
    assert stats["tasks_completed"] == 1 and stats["workers_connected"] == 1
    assert set(stats["per_label"]["a"]) == {
        "completed", "misses", "avg_load_ms", "avg_run_ms", "queued"
    }  # fmt: skip
    assert stats["per_worker"]["w-a"] == {
        "completed": 1, "misses": 0, "labels": ["a"], "busy": False
    }  # fmt: skip


async def test_metrics_text_names(dispatcher, client, workers) -> None:
    """/metrics is Prometheus text with the dispatcher's metric names."""
    await workers(dispatcher.ws_url, "w-a", labels=["a"])
    assert (await client.post("/run-task", json=task("a"))).status_code == 200
    answer = await client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'smartrouting_tasks_total{label="a",outcome="completed"} 1.0' in text
    for name in (
        "smartrouting_label_hits_total",
        "smartrouting_label_misses_total",
        "smartrouting_queue_depth",
        "smartrouting_dispatch_latency_seconds_bucket",
        "smartrouting_workers_connected 1.0",
        "smartrouting_model_loads_total",
        "smartrouting_demand_shifts_detected 0.0",
    ):
        assert name in text, name


async def test_openapi_lists_every_endpoint(client) -> None:
    """/openapi.json is an OpenAPI 3 document naming every HTTP endpoint."""
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/health", "/workers", "/labels", "/run-task", "/tasks", "/tasks/{task_id}",
        "/upload-model", "/metrics", "/stats", "/openapi.json", "/v1/embeddings", "/v1/models",
        "/models", "/models/{name}", "/models/{name}/rollback", "/uploads/{upload_id}",
        "/livez", "/readyz", "/dashboard", "/status.json",
    }  # fmt: skip


async def test_upload_model_without_uploader_is_503(client) -> None:
    """/upload-model answers 503 JSON when no uploader URL is configured."""
    answer = await client.post("/upload-model", json={"model_id": "x/y"})
    assert answer.status_code == 503 and answer.json()["error"] == "uploader_not_configured"


async def test_upload_model_forwards_and_passes_status_through(dispatcher_factory) -> None:
    """/upload-model forwards the body to a real stub uploader and passes its status back."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.support import run_server

    seen: list[dict[str, Any]] = []

    async def upload(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        if body.get("overwrite") is False and body["model_id"] == "exists/model":
            return JSONResponse({"error": "exists", "detail": "model exists"}, status_code=409)
        name = body["model_id"].replace("/", "--")
        return JSONResponse({"status": "success", "model_name": name, "message": "converted"})

    stub = Starlette(routes=[Route("/upload-model", upload, methods=["POST"])])
    with run_server(stub) as uploader:
        d = dispatcher_factory(uploader_url=uploader.base_url)
        async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
            ok = await c.post("/upload-model", json={"model_id": "org/m", "max_batch_size": 8})
            conflict = await c.post(
                "/upload-model", json={"model_id": "exists/model", "overwrite": False}
            )
    assert ok.status_code == 200
    assert ok.json() == {"status": "success", "model_name": "org--m", "message": "converted"}
    assert conflict.status_code == 409 and conflict.json()["error"] == "exists"
    assert seen[0] == {"model_id": "org/m", "max_batch_size": 8}


async def test_upload_model_unreachable_uploader_is_502(dispatcher_factory) -> None:
    """An uploader URL where nothing listens gives 502 JSON."""
    from tests.support import free_port

    d = dispatcher_factory(uploader_url=f"http://127.0.0.1:{free_port()}")
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
        answer = await c.post("/upload-model", json={"model_id": "org/m"})
    assert answer.status_code == 502 and answer.json()["error"] == "uploader_unreachable"


async def test_dead_connection_is_noticed_by_ping(dispatcher_factory, workers) -> None:
    """A worker that stops answering pings is dropped within the keepalive timeout."""
    d = dispatcher_factory(ws_ping_interval_s=0.2, ws_ping_timeout_s=0.4)
    w = await workers(d.ws_url, "w-silent", labels=["a"])
    async with httpx.AsyncClient(base_url=d.base_url) as c:
        assert (await c.get("/workers")).json() == {"workers": ["w-silent"]}
        assert w.ws is not None
        w.ws.transport.pause_reading()  # the process hangs: no pong ever comes back

        async def gone() -> bool:
            return (await c.get("/workers")).json() == {"workers": []}

        await eventually(gone, timeout=5.0, what="the silent worker to be dropped")
        assert (await c.get("/labels")).json() == {}
    w.ws.transport.resume_reading()


async def test_graceful_shutdown_answers_callers_and_closes_workers(
    dispatcher_factory, workers
) -> None:
    """Shutdown: queued callers get 503, running ones are bounded, workers see Drain and 1001."""
    d = dispatcher_factory(shutdown_timeout_s=0.5)
    w = await workers(d.ws_url, "w-a", labels=["a"])
    w.hold()
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
        running = asyncio.create_task(c.post("/run-task", json=task("a")))
        await w.wait_for_tasks(1)
        queued = asyncio.create_task(c.post("/run-task", json=task("a")))

        async def one_queued() -> bool:
            return (await c.get("/stats")).json()["queue_depth"] == 1

        await eventually(one_queued, what="a queued task")
        stopping = asyncio.get_running_loop().run_in_executor(None, d.stop)
        answers = await asyncio.gather(queued, running)
        await stopping
    assert [a.status_code for a in answers] == [503, 503]
    assert {a.json()["error"] for a in answers} == {"shutting_down"}
    code, reason = await w.wait_closed()
    assert code == 1001 and w.drained


async def test_sigterm_on_the_cli_process_shuts_down_gracefully(processes, port) -> None:
    """`python -m dispatcher` on SIGTERM: callers get 503, workers 1001, exit code 0."""
    import signal

    from tests.support import wait_for_http

    child = processes.python_module(
        "dispatcher", "dispatcher", "--host", "127.0.0.1", "--port", str(port),
        "--shutdown-timeout-s", "0.5", "--log-level", "warning",
    )  # fmt: skip
    await asyncio.get_running_loop().run_in_executor(
        None, wait_for_http, f"http://127.0.0.1:{port}/health"
    )
    w = await FakeWorker(f"ws://127.0.0.1:{port}/worker-listen", "w-a", labels=["a"]).start()
    w.hold()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        running = asyncio.create_task(c.post("/run-task", json=task("a")))
        await w.wait_for_tasks(1)
        queued = asyncio.create_task(c.post("/run-task", json=task("a")))

        async def one_queued() -> bool:
            return (await c.get("/stats")).json()["queue_depth"] == 1

        await eventually(one_queued, what="a queued task")
        child.signal(signal.SIGTERM)
        answers = await asyncio.gather(queued, running)
    code, _ = await w.wait_closed()
    await w.close()
    exit_code = await asyncio.get_running_loop().run_in_executor(None, child.popen.wait, 20)
    assert [a.status_code for a in answers] == [503, 503]
    assert code == 1001 and w.drained and exit_code == 0, child.log()


async def test_slot_of_an_unanswered_cancel_is_freed(dispatcher_factory, workers) -> None:
    """A worker that never answers a cancelled task gets its slot back after the grace."""
    d = dispatcher_factory(cancel_grace_s=0.3)
    w = await workers(d.ws_url, "w-a", labels=["a"])
    w.hold()
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
        late = await c.post("/run-task", json=task("a", timeout_s=0.2))
        assert late.status_code == 504
        follow = asyncio.create_task(c.post("/run-task", json=task("a", timeout_s=10)))
        await w.wait_for_tasks(2)  # dispatched only once the stuck slot was freed
        w.release()
        answer = await follow
    assert answer.status_code == 200 and answer.json()["worker_id"] == "w-a"
