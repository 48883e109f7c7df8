"""The model catalogue: unknown labels answered at once, bounded metrics, failed loads."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
import msgspec
import pytest

from dispatcher.catalogue import (
    MAX_DELETED,
    OTHER_LABEL,
    Catalogue,
    ModelCatalogue,
    models_published,
)
from dispatcher.errors import ModelDeleted, ModelLoadFailed, ModelNotFound
from dispatcher.registry import Registry, WorkerRecord
from tests.support import scaled

pytestmark = pytest.mark.timeout(120)

MINILM = "sentence-transformers--all-MiniLM-L6-v2"


def declaring(worker_id: str, *labels: str) -> WorkerRecord:
    return WorkerRecord(worker_id, servable=frozenset(labels))


# ---- the pure catalogue ---------------------------------------------------------------------


def test_open_until_something_is_known() -> None:
    """With no worker and nothing published every label goes (tasks queue for workers)."""
    catalogue = Catalogue()
    assert catalogue.open and catalogue.refusal("anything", 0.0) is None
    catalogue.worker_joined(declaring("w1", "a"))
    assert not catalogue.open
    assert catalogue.refusal("a", 0.0) is None
    assert isinstance(catalogue.refusal("b", 0.0), ModelNotFound)
    catalogue.worker_left(declaring("w1", "a"))
    assert catalogue.open and catalogue.labels() == []


def test_a_worker_serving_any_label_opens_the_catalogue() -> None:
    """The simulated engine serves arbitrary labels: benchmarks keep working."""
    catalogue = Catalogue()
    catalogue.worker_joined(declaring("w1", "a"))
    catalogue.worker_joined(WorkerRecord("sim", servable=None))
    assert catalogue.refusal("bench-label-17", 0.0) is None
    assert catalogue.metric_label("bench-label-17") == "bench-label-17"
    catalogue.worker_left(WorkerRecord("sim", servable=None))
    assert isinstance(catalogue.refusal("bench-label-17", 0.0), ModelNotFound)


def test_a_label_stays_while_one_declaring_worker_remains() -> None:
    catalogue = Catalogue()
    catalogue.worker_joined(declaring("w1", "a"))
    catalogue.worker_joined(declaring("w2", "a"))
    catalogue.worker_left(declaring("w1", "a"))
    assert catalogue.known("a") and not catalogue.known("b")


@pytest.mark.parametrize(
    ("asked", "hint"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", MINILM),
        ("sentence-transformers--all-MiniLM-L6-v1", MINILM),
        ("SENTENCE-TRANSFORMERS--ALL-MINILM-L6-V2", MINILM),
    ],
)
def test_did_you_mean(asked: str, hint: str) -> None:
    """A Hugging Face id maps `/` to `--`; near misses get their close match."""
    catalogue = Catalogue()
    catalogue.worker_joined(declaring("w1", MINILM, "other-model"))
    assert catalogue.did_you_mean(asked)[0] == hint
    refusal = catalogue.refusal(asked, 0.0)
    assert isinstance(refusal, ModelNotFound) and repr(hint) in str(refusal.detail)


def test_no_hint_for_garbage_but_the_id_spelling() -> None:
    catalogue = Catalogue()
    catalogue.publish("m1")
    assert catalogue.did_you_mean("zzzzzz") == []
    refusal = catalogue.refusal("org/zzzz", 0.0)
    assert refusal is not None and "'org--zzzz'" in str(refusal.detail)


def test_metric_labels_are_catalogue_labels_only() -> None:
    catalogue = Catalogue()
    assert catalogue.metric_label("junk") == OTHER_LABEL  # nothing known yet: no series either
    catalogue.publish("m1", "3")
    assert catalogue.metric_label("m1") == "m1"
    assert catalogue.metric_label("junk") == OTHER_LABEL


def test_failed_load_remembered_for_a_window_and_cleared_by_a_new_version() -> None:
    """One load attempt per window; the detail names the model, not a path or a traceback."""
    catalogue = Catalogue(failed_load_ttl_s=60.0)
    catalogue.publish("m1", "1")
    catalogue.load_failed("m1", now=100.0)
    refusal = catalogue.refusal("m1", 130.0)
    assert isinstance(refusal, ModelLoadFailed) and refusal.http_status == 502
    assert "version 1" in str(refusal.detail) and "/" not in str(refusal.detail).split("(")[0]
    assert refusal.retry_after_s == pytest.approx(30.0)
    assert catalogue.refusal("m1", 160.0) is None  # the window passed: one more try
    catalogue.load_failed("m1", now=200.0)
    catalogue.publish("m1", "2")  # a new version clears it
    assert catalogue.refusal("m1", 201.0) is None


def test_failures_are_bounded() -> None:
    catalogue = Catalogue()
    for i in range(5000):
        catalogue.load_failed(f"m{i}", now=float(i))
    assert len(catalogue.failures(0.0)) <= 1024


def test_models_published_reads_the_uploader_answer() -> None:
    ok = b'{"status": "success", "model_name": "m1", "version": 2}'
    assert models_published(ok) == ("m1", "2")
    assert models_published(b'{"status": "success", "model_name": "m1"}') == ("m1", "")
    assert models_published(b"not json") is None
    assert models_published(b'{"status": "error"}') is None


def test_delete_refuses_410_then_404_until_published_again() -> None:
    """begin_delete: 410 at once; abort_delete: served again; finish_delete: 404 (even while
    a worker still declares it, and with an any-label worker), until a new publish."""
    catalogue = Catalogue()
    catalogue.worker_joined(declaring("w1", "m1", "m2"))
    catalogue.publish("m1", "1", "sha256:aa")
    catalogue.begin_delete("m1")
    refusal = catalogue.refusal("m1", 0.0)
    assert isinstance(refusal, ModelDeleted) and refusal.http_status == 410
    catalogue.abort_delete("m1")
    assert catalogue.refusal("m1", 0.0) is None and catalogue.named("m1")
    catalogue.begin_delete("m1")
    catalogue.finish_delete("m1")
    catalogue.worker_joined(WorkerRecord("sim", servable=None))  # serves any label
    gone = catalogue.refusal("m1", 0.0)
    assert isinstance(gone, ModelNotFound) and "deleted" in str(gone.detail)
    assert catalogue.labels() == ["m2"] and not catalogue.named("m1")
    assert catalogue.metric_label("m1") == OTHER_LABEL
    assert catalogue.content_hash("m1") == ""
    assert catalogue.publish("m1", "2") is True  # published again: served
    assert catalogue.refusal("m1", 0.0) is None and "m1" in catalogue.labels()


def test_publish_says_whether_the_version_changed() -> None:
    """A repeated report of one version (the async watch and a status read) reloads once."""
    catalogue = Catalogue()
    assert catalogue.publish("m1", "2", "sha256:bb") is True
    assert catalogue.publish("m1", "2", "sha256:bb") is False
    assert catalogue.publish("m1", "1", "sha256:aa") is True  # a rollback
    assert (catalogue.version("m1"), catalogue.content_hash("m1")) == ("1", "sha256:aa")


def test_deleted_names_are_bounded() -> None:
    catalogue = Catalogue()
    for i in range(MAX_DELETED + 50):
        catalogue.publish(f"m{i}")
        catalogue.finish_delete(f"m{i}")
    assert len(catalogue.deleted) == MAX_DELETED and "m0" not in catalogue.deleted


def test_label_details_carry_version_and_hash() -> None:
    registry = Registry()
    registry.add(WorkerRecord("w1", capacity=2), ["m1", "m2"])
    catalogue = Catalogue()
    catalogue.publish("m1", "3", "sha256:cc")
    assert catalogue.label_details(registry) == {
        "m1": {"workers": ["w1"], "version": "3", "content_hash": "sha256:cc"},
        "m2": {"workers": ["w1"], "version": None, "content_hash": None},
    }


# ---- through a real dispatcher ----------------------------------------------------------------


async def series(client: httpx.AsyncClient) -> set[str]:
    """The Prometheus series of /metrics (name and labels; values may change)."""
    text = (await client.get("/metrics")).text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def task(label: str) -> dict[str, Any]:
    return {"task_type": "sample_task", "label": label, "parameters_json": "{}"}


async def test_unknown_label_answered_at_once_without_a_frame(dispatcher, client, workers) -> None:
    """404 with a hint, in under 5 ms, and the worker never sees a frame for it."""
    worker = await workers(dispatcher.ws_url, "w1", servable=[MINILM])
    assert (await client.post("/run-task", json=task(MINILM))).status_code == 200
    times = []
    for _ in range(20):
        started = time.perf_counter()
        answer = await client.post("/run-task", json=task("sentence-transformers/all-MiniLM-L6-v2"))
        times.append(time.perf_counter() - started)
        assert answer.status_code == 404, answer.text
    body = answer.json()
    assert body["error"] == "model_not_found" and repr(MINILM) in body["detail"]
    assert statistics.median(times) < scaled(0.005)
    assert [t.label for t in worker.received] == [MINILM]  # only the known label travelled


async def test_junk_labels_leave_metrics_and_stats_unchanged(dispatcher, client, workers) -> None:
    """5,000 distinct junk labels: /metrics has the same series and /stats the same labels."""
    await workers(dispatcher.ws_url, "w1", servable=["m1"])
    assert (await client.post("/run-task", json=task("m1"))).status_code == 200
    # One refusal first: the HTTP metrics gain their (method, route, status) series once.
    assert (await client.post("/tasks", json=task("junk"))).status_code == 404
    await client.get("/stats")
    await client.get("/metrics")
    metrics_before = await series(client)
    stats_before = (await client.get("/stats")).json()
    for i in range(5000):
        answer = await client.post("/tasks", json=task(f"junk-{i}"))
        assert answer.status_code == 404
    stats_after = (await client.get("/stats")).json()
    assert await series(client) == metrics_before
    assert not any("junk" in s for s in metrics_before)
    assert stats_after["per_label"] == stats_before["per_label"]
    assert stats_after["tasks_submitted"] == stats_before["tasks_submitted"]


async def test_failed_load_is_tried_once_per_window(dispatcher, client, workers) -> None:
    """After MODEL_LOAD_FAILED the dispatcher answers 502 itself; no second load attempt."""
    worker = await workers(dispatcher.ws_url, "w1", servable=["broken", "m1"], broken={"broken"})
    first = await client.post("/run-task", json=task("broken"))
    assert first.status_code == 502 and first.json()["error"] == "task_failed"
    for _ in range(3):
        again = await client.post("/run-task", json=task("broken"))
        assert again.status_code == 502, again.text
        assert again.json()["error"] == "model_load_failed" and "Retry-After" in again.headers
        assert "Traceback" not in again.text
    assert [t.label for t in worker.received] == ["broken"]
    assert (await client.post("/run-task", json=task("m1"))).status_code == 200


async def test_models_lists_the_catalogue(dispatcher, client, workers) -> None:
    await workers(dispatcher.ws_url, "w1", servable=["m1", "m2"], labels=["m1"])
    answer = await client.get("/models")
    catalogue = msgspec.json.decode(answer.content, type=ModelCatalogue)
    assert [m.name for m in catalogue.models] == ["m1", "m2"]
    assert catalogue.models[0].loaded_on == ["w1"] and catalogue.models[0].servable_by == 1
    assert (await client.get("/models/m2")).json()["name"] == "m2"
    missing = await client.get("/models/m3")
    assert missing.status_code == 404 and missing.json()["error"] == "model_not_found"


async def test_any_label_worker_keeps_arbitrary_labels(dispatcher, client, workers) -> None:
    """A worker that declares nothing (simulated, fakes) serves any label, as before."""
    await workers(dispatcher.ws_url, "w1")
    assert (await client.post("/run-task", json=task("whatever-17"))).status_code == 200
