"""The catalogue sync: every dispatcher reconciles its catalogue with the uploader's `GET /models`
(`--catalogue-sync-s`), so publishes and deletes made through another dispatcher reach it.

The rule (`dispatcher.catalogue.reconcile`) is tested as a table; the loop with two real
dispatchers sharing the real uploader service (`uploader.service.create_app` with a fast fake
builder, as in test_model_lifecycle.py) and protocol-fake workers, and with a stub uploader
whose `GET /models` can be made to fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatcher.catalogue import (
    Catalogue,
    ForgetModel,
    ListedModel,
    PublishModel,
    SyncAction,
    listed_models,
    reconcile,
)
from tests.support import run_server, scaled
from tests.uploader.fixtures import fake_builder, write_fake_sentence_transformer
from uploader.service import create_app

LABEL = "acme--tiny"
#: The sync period of the test dispatchers (seconds).
PERIOD_S = 0.2

# ---- the rule -------------------------------------------------------------------------------

M = ListedModel
CASES: list[
    tuple[str, dict[str, str], dict[str, str], list[ListedModel], set[str], list[SyncAction]]
] = [
    # (what, published, hashes, uploader's list, left alone, actions)
    ("nothing anywhere", {}, {}, [], set(), []),
    ("in step", {"a": "1"}, {"a": "h1"}, [M("a", "1", "h1")], set(), []),
    ("new model", {}, {}, [M("a", "1", "h1")], set(), [PublishModel("a", "1", "h1")]),
    (
        "new version",
        {"a": "1"},
        {"a": "h1"},
        [M("a", "2", "h2")],
        set(),
        [PublishModel("a", "2", "h2")],
    ),
    (
        "rolled back",
        {"a": "2"},
        {"a": "h2"},
        [M("a", "1", "h1")],
        set(),
        [PublishModel("a", "1", "h1")],
    ),
    (
        "same version, new hash",
        {"a": "1"},
        {"a": "h1"},
        [M("a", "1", "h9")],
        set(),
        [PublishModel("a", "1", "h9")],
    ),
    ("no hash listed: version decides", {"a": "1"}, {"a": "h1"}, [M("a", "1", "")], set(), []),
    ("hash learned", {"a": "1"}, {}, [M("a", "1", "h1")], set(), [PublishModel("a", "1", "h1")]),
    ("deleted elsewhere", {"a": "1", "b": "3"}, {}, [M("b", "3", "")], set(), [ForgetModel("a")]),
    ("uploader emptied", {"a": "1", "b": "1"}, {}, [], set(), [ForgetModel("a"), ForgetModel("b")]),
    ("being deleted here: kept", {"a": "1"}, {}, [], {"a"}, []),
    ("changed here meanwhile: not re-published", {}, {}, [M("a", "1", "")], {"a"}, []),
    ("changed here meanwhile: no rollback", {"a": "2"}, {}, [M("a", "1", "")], {"a"}, []),
    (
        "sorted by label, mixed",
        {"c": "1", "a": "1"},
        {},
        [M("b", "1", ""), M("a", "2", "")],
        set(),
        [PublishModel("a", "2", ""), PublishModel("b", "1", ""), ForgetModel("c")],
    ),
]


@pytest.mark.parametrize(
    ("published", "hashes", "listed", "leave_alone", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_reconcile(
    published: dict[str, str],
    hashes: dict[str, str],
    listed: list[ListedModel],
    leave_alone: set[str],
    expected: list[SyncAction],
) -> None:
    assert reconcile(published, hashes, listed, leave_alone) == expected


def test_the_catalogue_leaves_models_it_is_deleting_alone() -> None:
    catalogue = Catalogue()
    catalogue.publish("a", "1")
    catalogue.publish("b", "1")
    catalogue.begin_delete("a")
    assert catalogue.sync_actions([]) == [ForgetModel("b")]
    assert catalogue.sync_actions([M("a", "2", ""), M("b", "1", "")]) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"models": [{"model_name": "a", "version": 2, "content_hash": "sha256:x"}]},
            [M("a", "2", "sha256:x")],
        ),
        ({"models": [{"model_name": "a"}, {"version": 1}, "junk"]}, [M("a", "", "")]),
        ({"models": []}, []),
        ({"detail": "Not Found"}, None),  # not a list of models: nothing may be forgotten
        ([], None),
    ],
)
def test_listed_models(body: Any, expected: list[ListedModel] | None) -> None:
    assert listed_models(json.dumps(body).encode()) == expected
    assert listed_models(b"not json") is None


def test_publish_reports_a_new_hash_as_a_change() -> None:
    catalogue = Catalogue()
    assert catalogue.publish("a", "1", "h1") is True
    assert catalogue.publish("a", "1", "h1") is False
    assert catalogue.publish("a", "1", "h2") is True  # deleted and published again as v1
    assert catalogue.publish("a", "1") is False  # no hash said: the version decides


# ---- two dispatchers and the real uploader -----------------------------------------------


@pytest.fixture
def uploader_url(tmp_path: Path) -> Iterator[str]:
    models = tmp_path / "models"
    write_fake_sentence_transformer(models / "acme" / "tiny")
    app = create_app(tmp_path / "repo", local_roots=[models], builder=fake_builder())
    with run_server(app) as server:
        yield server.base_url


async def _poll(read: Any, done: Any, what: str, timeout: float = 10.0) -> Any:
    """`await read()` until `done(value)`; the value."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last {value!r}")
        await asyncio.sleep(0.01)


def _task(label: str = LABEL) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters": {}}


async def test_publish_and_delete_through_one_dispatcher_reach_the_other(
    uploader_url: str, dispatcher_factory, workers
) -> None:
    """A publishes v1, then v2 (overwrite): B shows each version and hash in `/labels` within
    a sync period and sends Reload to its holder. A deletes the model: B fails its queued task
    410, answers 404 for the label from then on, and sends no Unload of its own."""
    a = dispatcher_factory(uploader_url=uploader_url, catalogue_sync_s=PERIOD_S)
    b = dispatcher_factory(uploader_url=uploader_url, catalogue_sync_s=PERIOD_S)
    # One worker linked to both dispatchers: a link per dispatcher, under the same id.
    on_a = await workers(a.ws_url, "w1", servable=[LABEL], labels=[LABEL])
    on_b = await workers(b.ws_url, "w1", servable=[LABEL], labels=[LABEL])
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=scaled(30)) as ca,
        httpx.AsyncClient(base_url=b.base_url, timeout=scaled(30)) as cb,
    ):

        async def b_label() -> dict[str, Any]:
            return dict((await cb.get("/labels", params={"detail": "true"})).json()[LABEL])

        first = await ca.post("/upload-model", json={"model_id": "acme/tiny"})
        assert first.status_code == 200, first.text
        await _poll(b_label, lambda e: e["version"] == "1", "B to learn v1")

        second = await ca.post("/upload-model", json={"model_id": "acme/tiny", "overwrite": True})
        assert second.status_code == 200 and second.json()["version"] == 2
        published_at = time.monotonic()
        on_a_now = (await ca.get("/labels", params={"detail": "true"})).json()[LABEL]
        assert on_a_now["version"] == "2"  # the publishing dispatcher applied it at once
        entry = await _poll(b_label, lambda e: e["version"] == "2", "B to learn v2")
        learned_s = time.monotonic() - published_at
        assert entry == {
            "workers": ["w1"],
            "version": "2",
            "content_hash": second.json()["content_hash"],
        }
        await _poll(
            lambda: asyncio.sleep(0, [r.version for r in on_b.reloads]),
            lambda versions: versions[-1:] == ["2"],
            "B's Reload of v2",
        )
        assert [r.label for r in on_b.reloads] == [LABEL] * len(on_b.reloads)
        await _poll(
            lambda: asyncio.sleep(0, [r.version for r in on_a.reloads]),
            lambda versions: "2" in versions,
            "A's Reload of v2",
        )
        # Within one period, give or take a round's own time on a loaded machine.
        assert learned_s < scaled(PERIOD_S + 2.0), learned_s

        # A task running on B's link and one queued behind it (one slot).
        on_b.hold()
        running = await cb.post("/tasks", json=_task())
        await on_b.wait_for_tasks(1)
        queued = await cb.post("/tasks", json=_task())
        assert queued.status_code == 202

        deleted = await ca.delete(f"/models/{LABEL}")
        assert deleted.status_code == 200, deleted.text
        assert [u.label for u in on_a.unloads] == [LABEL]
        gone = await _poll(
            lambda: cb.get(f"/models/{LABEL}"), lambda r: r.status_code == 404, "B to forget"
        )
        assert "deleted" in gone.json()["detail"]
        failed = (await cb.get(queued.json()["status_url"])).json()
        assert failed["status"] == "failed" and failed["error"]["error"] == "model_deleted", failed
        received = len(on_b.received)
        refused = await cb.post("/run-task", json=_task())
        assert refused.status_code == 404 and refused.json()["error"] == "model_not_found"
        assert len(on_b.received) == received  # answered by B itself
        assert on_b.unloads == []  # A unloaded it; B does not send Unload again
        on_b.release()
        done = (await cb.get(running.json()["status_url"], params={"wait_s": 10})).json()
        assert done["status"] == "completed"  # the task running on it finished there

        # Published again through B: A learns it, and serves it again.
        again = await cb.post("/upload-model", json={"model_id": "acme/tiny"})
        assert again.status_code == 200, again.text
        await _poll(
            lambda: ca.get(f"/models/{LABEL}"), lambda r: r.status_code == 200, "A to learn it"
        )


# ---- an uploader that stops answering ------------------------------------------------------


class _Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_an_unreadable_uploader_changes_nothing_and_warns_once(
    dispatcher_factory, workers
) -> None:
    """The uploader's `GET /models` fails for many rounds: the model is still served, one
    warning is logged for the outage and one line when it is back; a model then missing
    from the list is forgotten."""
    state: dict[str, Any] = {
        "fail": False,
        "reads": 0,
        "models": [{"model_name": LABEL, "version": 1}],
    }

    async def models(request: Request) -> JSONResponse:
        state["reads"] += 1
        if state["fail"]:
            return JSONResponse({"detail": "down"}, status_code=503)
        return JSONResponse({"models": state["models"]})

    logger = logging.getLogger("dispatcher.models")
    handler, level = _Counting(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stub = Starlette(routes=[Route("/models", models, methods=["GET"])])
    try:
        with run_server(stub) as server:
            d = dispatcher_factory(uploader_url=server.base_url, catalogue_sync_s=0.05)
            await workers(d.ws_url, "w1", servable=[LABEL, "other"], labels=[LABEL])
            async with httpx.AsyncClient(base_url=d.base_url, timeout=scaled(30)) as c:

                async def version() -> Any:
                    return (await c.get(f"/models/{LABEL}")).json().get("version")

                await _poll(version, lambda v: v == "1", "the model learned")
                state["fail"] = True
                reads = state["reads"]
                await _poll(
                    lambda: asyncio.sleep(0, state["reads"]), lambda n: n >= reads + 5, "rounds"
                )
                assert await version() == "1"
                assert (await c.post("/run-task", json=_task())).status_code == 200
                warnings = [r for r in handler.records if r.levelno == logging.WARNING]
                assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage()

                state["models"], state["fail"] = [], False
                await _poll(
                    lambda: c.get(f"/models/{LABEL}"),
                    lambda r: r.status_code == 404,
                    "the model forgotten",
                )
                assert any("readable again" in r.getMessage() for r in handler.records)
                assert len([r for r in handler.records if r.levelno == logging.WARNING]) == 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
