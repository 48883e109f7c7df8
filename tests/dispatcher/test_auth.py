"""Authentication: worker token on /worker-listen, API keys on client endpoints, admin upload.

Real dispatcher under uvicorn, real websockets clients, the real worker connection class and
the real uploader app.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from dispatcher.auth import AuthSettings, matches, presented_secret
from dispatcher.config import Config
from proto import frames
from proto import smartrouting_pb2 as pb
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker
from tests.faults.cluster import SimCluster
from tests.support import ProcessFactory, run_server, wait_until
from uploader.service import create_app as create_uploader
from worker.config import parse_config
from worker.connection import DispatcherConnection

pytestmark = pytest.mark.timeout(60)

TOKEN = "worker-secret-token"
KEY = "caller-key-1"
ADMIN = "admin-key-1"


def hello(worker_id: str) -> pb.WorkerMessage:
    return pb.WorkerMessage(
        hello=pb.Hello(
            protocol_version=frames.PROTOCOL_VERSION,
            worker_id=worker_id,
            capacity=1,
            slots=1,
            engine="fake",
        )
    )


async def refused_close(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Connect with `headers`, say Hello; the close code and reason the dispatcher sent."""
    async with websockets.connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.send(frames.encode(hello(headers["Worker-Id"])))
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


async def test_worker_without_token_is_refused_with_1008(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """With a worker token set, a worker without it, or with a wrong one, gets 1008 + reason."""
    d = dispatcher_factory(worker_token=TOKEN)
    code, reason = await refused_close(d.ws_url, {"Worker-Id": "w-none"})
    assert (code, reason.split(" (")[0]) == (1008, "worker token required")
    code, reason = await refused_close(
        d.ws_url, {"Worker-Id": "w-bad", "Authorization": "Bearer wrong"}
    )
    assert (code, reason) == (1008, "invalid worker token")
    async with httpx.AsyncClient(base_url=d.base_url) as client:
        assert (await client.get("/workers")).json() == {"workers": []}


async def test_worker_with_token_registers(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """The worker's own connection class sends the token and is welcomed and listed."""
    d = dispatcher_factory(worker_token=TOKEN)
    welcomed = asyncio.Event()

    def on_message(message: pb.DispatcherMessage) -> None:
        if message.WhichOneof("body") == "welcome":
            welcomed.set()

    connection = DispatcherConnection(
        d.ws_url, "w-good", lambda: hello("w-good").hello, on_message, token=TOKEN
    )
    runner = asyncio.create_task(connection.run())
    try:
        await asyncio.wait_for(welcomed.wait(), 10)
        async with httpx.AsyncClient(base_url=d.base_url) as client:
            assert (await client.get("/workers")).json() == {"workers": ["w-good"]}
    finally:
        await connection.close()
        await asyncio.wait_for(runner, 10)  # run() returns once closed


async def test_api_keys_guard_client_endpoints(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """Without a key or with a wrong one: 401 JSON; Bearer and X-API-Key work; probes open."""
    d = dispatcher_factory(api_keys=(KEY, "other-key"), task_timeout_s=10.0)
    worker = await FakeWorker(d.ws_url, "w1", labels=["a"]).start()
    body = {"task_type": "sample_task", "label": "a"}
    try:
        async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
            for method, path in (("POST", "/run-task"), ("POST", "/tasks"), ("GET", "/stats")):
                answer = await client.request(method, path, json=body)
                assert answer.status_code == 401, (path, answer.text)
                assert answer.json()["error"] == "unauthorized"
                assert answer.headers["www-authenticate"].startswith("Bearer")
            wrong = await client.post("/run-task", json=body, headers={"X-API-Key": "nope"})
            assert (wrong.status_code, wrong.json()["error"]) == (401, "unauthorized")
            bearer = await client.post(
                "/run-task", json=body, headers={"Authorization": f"Bearer {KEY}"}
            )
            assert bearer.status_code == 200 and bearer.json()["status"] == "completed"
            header = await client.get("/workers", headers={"X-API-Key": "other-key"})
            assert header.status_code == 200
            for path in ("/health", "/openapi.json"):
                assert (await client.get(path)).status_code == 200, path
            # /metrics names every caller's labels (hardening review, finding 9): a key.
            assert (await client.get("/metrics")).status_code == 401
            keyed = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
            assert keyed.status_code == 200 and "smartrouting_tasks" in keyed.text
    finally:
        await worker.close()


async def test_upload_needs_admin_key_at_dispatcher_and_uploader(
    dispatcher_factory: Callable[..., RunningDispatcher], tmp_path: Path
) -> None:
    """/upload-model: 401 without a key, 403 with an API key; the admin key reaches the uploader."""
    uploader_app = create_uploader(tmp_path / "repo", admin_key=ADMIN)
    with run_server(uploader_app) as uploader:
        d = dispatcher_factory(api_keys=(KEY,), admin_key=ADMIN, uploader_url=uploader.base_url)
        body = {"model_id": "../escape"}
        async with httpx.AsyncClient(base_url=d.base_url, timeout=15) as client:
            none = await client.post("/upload-model", json=body)
            assert (none.status_code, none.json()["error"]) == (401, "unauthorized")
            api = await client.post("/upload-model", json=body, headers={"X-API-Key": KEY})
            assert (api.status_code, api.json()["error"]) == (403, "forbidden")
            admin = await client.post(
                "/upload-model", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            # Past both admin checks, the uploader itself refuses the id.
            assert (admin.status_code, admin.json()["error"]) == (422, "invalid_model_id")
            # The admin key also opens the caller endpoints.
            assert (await client.get("/stats", headers={"X-API-Key": ADMIN})).status_code == 200
        async with httpx.AsyncClient(base_url=uploader.base_url, timeout=15) as client:
            direct = await client.post("/upload-model", json=body)
            assert (direct.status_code, direct.json()["error"]) == (401, "unauthorized")
            assert (await client.get("/health")).status_code == 200


def test_settings_come_from_the_chart_secret_names() -> None:
    """SMARTROUTING_WORKER_TOKEN / _API_KEYS / _ADMIN_KEY configure dispatcher and worker."""
    env = {
        "SMARTROUTING_WORKER_TOKEN": TOKEN,
        "SMARTROUTING_API_KEYS": f" {KEY}, ,k2 ",
        "SMARTROUTING_ADMIN_KEY": ADMIN,
    }
    config = Config.from_env(env)
    assert (config.worker_token, config.api_keys, config.admin_key) == (TOKEN, (KEY, "k2"), ADMIN)
    assert TOKEN not in repr(config) and ADMIN not in repr(config)
    assert Config.from_env({}).api_keys == () and Config.from_env({}).worker_token is None
    assert parse_config([], env).worker_token == TOKEN
    assert parse_config(["--worker-token", "t2"], env).worker_token == "t2"
    assert parse_config([], {}).worker_token is None


def test_auth_settings_decisions() -> None:
    """The pure checks: header forms, constant-time match, which path needs which key."""
    assert presented_secret({"authorization": "Bearer  abc "}) == "abc"
    assert presented_secret({"authorization": "Basic abc", "x-api-key": "k"}) == "k"
    assert presented_secret({}) is None
    assert matches("a", ("b", "a")) and not matches("a", ()) and not matches(None, ("a",))
    off = AuthSettings()
    assert not off.enabled and off.worker_refusal({}) is None
    off.check_http("/run-task", {})  # nothing raised
    admin_only = AuthSettings(admin_key=ADMIN)
    admin_only.check_http("/run-task", {})  # callers stay open without API keys
    with pytest.raises(Exception, match="admin key required"):
        admin_only.check_http("/upload-model", {})


@pytest.mark.slow
def test_worker_processes_with_and_without_the_token(
    processes: ProcessFactory, tmp_path: Path
) -> None:
    """End to end with the CLIs: SMARTROUTING_WORKER_TOKEN on both sides lets a worker in;
    a worker without it stays out and logs the dispatcher's reason."""
    cluster = SimCluster(processes, tmp_path)
    secret = {"SMARTROUTING_WORKER_TOKEN": TOKEN}
    cluster.start_dispatcher(env=secret)
    cluster.start_worker("with-token", env=secret)
    outsider = cluster.start_worker("without-token", env={"SMARTROUTING_WORKER_TOKEN": ""})
    cluster.wait_workers(["with-token"])
    wait_until(lambda: "invalid worker token" in outsider.log() or "token required" in
               outsider.log(), 30, "the refused worker to log why")  # fmt: skip
    assert cluster.connected() == ["with-token"]
    body = {"task_type": "sample_task", "label": "a", "parameters": {"run_ms": 1}}
    answer = httpx.post(f"{cluster.url}/run-task", json=body, timeout=30)
    assert answer.status_code == 200 and answer.json()["worker_id"] == "with-token"


def test_keys_without_a_worker_token_refuse_to_start(tmp_path: Path) -> None:
    """Finding 9: with API keys on and no worker token any process could join as a worker and
    receive callers' payloads, with no warning. `python -m dispatcher` now refuses to start
    (one line, exit 2) unless --allow-open-workers says so."""
    import subprocess
    import sys

    env = {**os.environ, "SMARTROUTING_API_KEYS": "k1", "DISPATCHER_PORT": "0"}
    env.pop("SMARTROUTING_WORKER_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "worker token" in done.stderr
    assert "Traceback" not in done.stderr
