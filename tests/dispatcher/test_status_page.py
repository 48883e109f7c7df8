"""The live status page in a real headless browser (Debian's chromium) against a dispatcher.

The test opens /dashboard once and reads the DOM through the Chrome DevTools protocol: the
page lists the connected workers, and when a task completes the same page (not reloaded)
shows it in its recent tasks. It saves a screenshot; with `UPDATE_SCREENSHOTS=1` it also
writes docs/status-page.png, the one the README shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.dispatcher.conftest import RunningDispatcher
from tests.support import ROOT, scaled

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = ROOT / "docs" / "status-page.png"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1000",
    "--remote-debugging-port=0",
)


class Page:
    """One browser tab driven over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:  # events arrive in between; only our answer ends the wait
            answer = json.loads(await self.ws.recv())
            if answer.get("id") == message_id:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Evaluate until the expression is truthy (the page polls once a second)."""
        deadline = asyncio.get_running_loop().time() + scaled(timeout)
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never true in the page: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self) -> bytes:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(result["data"])


@contextlib.asynccontextmanager
async def browser(url: str, profile: Path) -> AsyncIterator[Page]:
    """Headless chromium showing `url`; its first tab as a `Page`."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        port = None
        async with asyncio.timeout(scaled(30)):
            while port is None:
                line = (await process.stderr.readline()).decode()
                assert line, "chromium exited before its DevTools endpoint was up"
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                port = int(found.group(1)) if found else None
        # Keep reading stderr so chromium never blocks on a full pipe.
        drain = asyncio.ensure_future(process.stderr.read())
        async with httpx.AsyncClient(timeout=10.0) as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        target = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
        drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


ROWS = "[...document.querySelectorAll('#{table} tbody tr')].map(r => r.innerText)"


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (./dev installs Debian's)")
async def test_status_page_shows_workers_and_updates_when_a_task_completes(
    dispatcher: RunningDispatcher, workers: Callable[..., Any], tmp_path: Path
) -> None:
    """The page lists the workers; a task completed while it is open appears without a reload."""
    url = dispatcher.base_url
    delays = {"load_s": 0.2, "run_s": 0.01}
    await workers(
        dispatcher.ws_url, "gpu-worker-1", capacity=2, slots=2, labels=["minilm"], **delays
    )
    await workers(dispatcher.ws_url, "gpu-worker-2", capacity=2, labels=["bge-small"], **delays)
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:

        async def run(label: str) -> str:
            body = {"task_type": "sample_task", "label": label, "parameters_json": "{}"}
            answer = await client.post("/run-task", json=body)
            assert answer.status_code == 200, answer.text
            task_id: str = answer.json()["task_id"]
            return task_id

        for label in ("minilm", "minilm", "bge-small", "e5-base", "minilm"):
            await run(label)
        async with browser(url + "/", tmp_path / "profile") as page:  # `/` redirects
            await page.wait_for("Number(document.body.dataset.updates || 0) >= 1")
            assert await page.evaluate("location.pathname") == "/dashboard"
            rows = await page.evaluate(ROWS.format(table="workers"))
            assert [r.split("\t")[0] for r in rows] == ["gpu-worker-1", "gpu-worker-2"]
            assert "ready" in rows[0] and "minilm" in rows[0]
            assert await page.evaluate("document.getElementById('c-workers').textContent") == "2"
            labels = await page.evaluate(ROWS.format(table="labels"))
            assert {r.split("\t")[0] for r in labels} >= {"minilm", "bge-small", "e5-base"}

            task_id = await run("bge-small")  # finishes while the page is open
            recent = await page.wait_for(
                f"{ROWS.format(table='recent')}.find(r => r.includes('{task_id}'))"
            )
            assert "bge-small" in recent and "completed" in recent and "hit" in recent
            completed = await page.evaluate("document.getElementById('c-completed').textContent")
            assert completed == "6"
            png = await page.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "status-page.png").write_bytes(png)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(png)
