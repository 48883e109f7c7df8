"""A publish through one dispatcher reaches a real worker linked to two, and the worker loads the
new version once although both dispatchers send it Reload (the publishing one at once, the
other from its catalogue sync).

Real parts: the uploader service (with a builder that copies the converted all-MiniLM-L6-v2
instead of converting again), two dispatchers, and a worker running the onnxruntime engine on
the uploader's repository, linked to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import run_server, scaled, until
from tests.uploader.fixtures import MINILM_NAME, minilm_repository, write_fake_sentence_transformer
from uploader import repository as entries
from uploader.convert import BuildReport, Progress
from uploader.service import create_app
from uploader.sources import ResolvedSource
from worker.config import Config
from worker.runtime import Worker

pytestmark = pytest.mark.timeout(120)

LABEL = "acme--tiny"


def _copying_builder() -> Any:
    """Publishes the converted MiniLM's files as the built model (no conversion)."""
    source_entry = minilm_repository() / MINILM_NAME
    meta = entries.read_metadata(source_entry) or {}
    onnx = entries.model_onnx_path(source_entry).read_bytes()

    def build(
        source: ResolvedSource, entry: Path, max_batch_size: int, progress: Progress
    ) -> BuildReport:
        entries.model_onnx_path(entry).parent.mkdir(parents=True, exist_ok=True)
        entries.model_onnx_path(entry).write_bytes(onnx)
        shutil.copytree(source_entry / "tokenizer", entry / "tokenizer")
        return BuildReport(int(meta["dimension"]), int(meta["max_seq_length"]), len(onnx), 0.0)

    return build


@pytest.fixture
def uploader(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The uploader's base URL and its repository (the worker's too)."""
    models = tmp_path / "models"
    write_fake_sentence_transformer(models / "acme" / "tiny")
    repository = tmp_path / "repo"
    app = create_app(repository, local_roots=[models], builder=_copying_builder())
    with run_server(app) as server:
        yield server.base_url, repository


@contextlib.asynccontextmanager
async def onnx_worker(urls: list[str], repository: Path) -> AsyncIterator[Worker]:
    config = Config(
        dispatcher_url=tuple(urls),
        worker_id="w1",
        engine="onnxruntime",
        model_repository=repository,
        reconnect_max_backoff_s=0.3,
        shutdown_timeout_s=5,
    )
    worker = Worker(config)
    job = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        assert await asyncio.wait_for(job, scaled(30)) == 0


def _embed() -> dict[str, Any]:
    return {"task_type": "embed_texts", "label": LABEL, "parameters": {"texts": ["hello"]}}


async def test_a_real_worker_loads_a_version_published_elsewhere_once(
    uploader: tuple[str, Path], dispatcher_factory
) -> None:
    base_url, repository = uploader
    a = dispatcher_factory(uploader_url=base_url, catalogue_sync_s=0.2)
    b = dispatcher_factory(uploader_url=base_url, catalogue_sync_s=0.2)
    async with httpx.AsyncClient(timeout=scaled(60)) as http:
        first = await http.post(f"{a.base_url}/upload-model", json={"model_id": "acme/tiny"})
        assert first.status_code == 200, first.text
        async with onnx_worker([a.ws_url, b.ws_url], repository) as worker:
            await until(
                lambda: all(d.core.registry.workers.get("w1") for d in (a, b)), "both links"
            )
            v1 = await http.post(f"{b.base_url}/run-task", json=_embed())
            assert v1.status_code == 200, v1.text
            assert v1.json()["model_version"] == "1"
            assert worker.engine is not None
            reloads: list[str] = []
            real_reload = worker.engine.reload

            async def counting_reload(label: str) -> None:
                reloads.append(label)
                await real_reload(label)

            worker.engine.reload = counting_reload  # type: ignore[method-assign]
            await until(lambda: "w1" in b.core.registry.holders(LABEL), "B to see the label loaded")

            body = {"model_id": "acme/tiny", "overwrite": True}
            second = await http.post(f"{a.base_url}/upload-model", json=body)
            assert second.status_code == 200 and second.json()["version"] == 2
            assert worker.engine is not None
            engine = worker.engine
            await until(lambda: engine.model_version(LABEL) == "2", "the worker on v2")

            async def b_version() -> Any:
                detail = (await http.get(f"{b.base_url}/labels", params={"detail": "true"})).json()
                return detail.get(LABEL, {}).get("version")

            deadline = time.monotonic() + scaled(20)
            while await b_version() != "2":  # B's sync has run and sent its Reload
                assert time.monotonic() < deadline, "B never learned v2"
                await asyncio.sleep(0.01)
            v2 = await http.post(f"{b.base_url}/run-task", json=_embed())
            assert v2.status_code == 200 and v2.json()["model_version"] == "2"
            # Both sent Reload (B's went before the task on the same link): one loaded v2,
            # the other found the worker on it already.
            assert reloads == [LABEL]
