"""A published version takes effect: the dispatcher tells the workers holding it (`Reload`)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import run_server


async def _reloads(worker: Any, count: int) -> list[Any]:
    """Wait until `worker` got `count` Reload frames."""

    async def wait() -> None:
        while len(worker.reloads) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), 10)
    return list(worker.reloads)


async def test_upload_and_rollback_reload_the_holders(dispatcher_factory, workers) -> None:
    """An upload answering version 2 sends Reload(label, "2") to the holder only; a rollback
    (admin only) forwards to the uploader and sends Reload(label, "1")."""
    versions = iter([2])

    async def upload(request: Request) -> JSONResponse:
        body = await request.json()
        name = body["model_id"].replace("/", "--")
        return JSONResponse({"status": "success", "model_name": name, "version": next(versions)})

    async def rollback(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name != "org--m":
            return JSONResponse({"error": "model_not_found", "detail": "no"}, status_code=404)
        return JSONResponse(
            {"status": "success", "message": "rolled back", "model_name": name, "version": 1,
             "content_hash": "sha256:0", "rolled_back_from": 2}
        )  # fmt: skip

    stub = Starlette(
        routes=[
            Route("/upload-model", upload, methods=["POST"]),
            Route("/models/{name}/rollback", rollback, methods=["POST"]),
        ]
    )
    with run_server(stub) as uploader:
        d = dispatcher_factory(uploader_url=uploader.base_url, admin_key="admin-secret")
        holder = await workers(d.ws_url, "w-holder", labels=["org--m"])
        other = await workers(d.ws_url, "w-other", labels=["x"])
        admin = {"Authorization": "Bearer admin-secret"}
        async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
            ok = await c.post(
                "/upload-model", json={"model_id": "org/m", "overwrite": True}, headers=admin
            )
            assert ok.status_code == 200, ok.text
            first = await _reloads(holder, 1)
            assert (first[0].label, first[0].version) == ("org--m", "2")
            models = (await c.get("/models/org--m", headers=admin)).json()
            assert models["version"] == "2"

            refused = await c.post("/models/org--m/rollback")
            assert refused.status_code == 401
            back = await c.post("/models/org--m/rollback", headers=admin)
            assert back.status_code == 200 and back.json()["version"] == 1
            second = await _reloads(holder, 2)
            assert (second[1].label, second[1].version) == ("org--m", "1")
            missing = await c.post("/models/nothing/rollback", headers=admin)
            assert missing.status_code == 404
    assert other.reloads == []
