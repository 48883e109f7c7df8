"""Logs and metrics an operator can trust: one JSON line per event, exact metric values."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smartrouting.logs import JsonFormatter, NoFrameDumps, TextFormatter, configure_logging
from tests.dispatcher.conftest import RunningDispatcher
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


# --- the formats -----------------------------------------------------------------------------


def _record(name: str = "dispatcher.events", **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, "task %s done", ("t1",), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_extra_fields() -> None:
    """A JSON line is one object: time, level, logger, message and every `extra=` field."""
    line = json.loads(JsonFormatter().format(_record(task_id="t1", miss=True, load_ms=12.5)))
    assert line["level"] == "info" and line["logger"] == "dispatcher.events"
    assert line["message"] == "task t1 done" and line["time"].endswith("+00:00")
    assert (line["task_id"], line["miss"], line["load_ms"]) == ("t1", True, 12.5)


def test_text_lines_append_fields_as_key_value() -> None:
    """Text: the message, then `key=value` (quoted when it has spaces)."""
    text = TextFormatter().format(_record(task_id="t1", reason="room for b", n=3))
    assert text.endswith(' INFO dispatcher.events: task t1 done task_id=t1 reason="room for b" n=3')


def test_uvicorn_access_lines_become_fields() -> None:
    """uvicorn's access record (client, method, path, version, status) is split into fields."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/health", "1.1", 200),
        None,
    )
    record.color_message = "\x1b[1m...\x1b[0m"  # uvicorn adds it; it must not show
    line = json.loads(JsonFormatter().format(record))
    assert "color_message" not in line
    assert line["message"] == '1.2.3.4:5 - "GET /health HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"]) == ("GET", "/health", 200)


def test_frame_dumps_are_dropped_at_debug() -> None:
    """The websockets library's per-frame DEBUG records never pass; its warnings do."""
    frames = logging.LogRecord(
        "uvicorn.error", logging.DEBUG, "/x/websockets/protocol.py", 1, "< BINARY 0a", (), None
    )
    warning = logging.LogRecord(
        "uvicorn.error", logging.WARNING, "/x/websockets/protocol.py", 1, "closed", (), None
    )
    ours = logging.LogRecord("dispatcher", logging.DEBUG, __file__, 1, "fine", (), None)
    dumps = NoFrameDumps()
    assert not dumps.filter(frames) and dumps.filter(warning) and dumps.filter(ours)


def test_configure_logging_routes_uvicorn_through_one_handler() -> None:
    """One handler on the root; uvicorn's loggers propagate to it; a second call replaces it."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        first = configure_logging("debug", "json", io.StringIO())
        stream = io.StringIO()
        second = configure_logging("info", "json", stream)
        assert first not in root.handlers and second in root.handlers
        assert logging.getLogger("websockets").level == logging.INFO
        uvicorn_error = logging.getLogger("uvicorn.error")
        assert not uvicorn_error.handlers and uvicorn_error.propagate
        uvicorn_error.warning("from uvicorn")
        assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"
    finally:
        root.handlers[:], root.level = saved


# --- a session: tasks that hit, miss, fail and are unknown, then the log and the metrics -------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """JSON lines of every logger at INFO (and uvicorn's), as the CLI's set-up writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(NoFrameDumps())
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


def lines(stream: io.StringIO, **match: Any) -> list[dict[str, Any]]:
    """The parsed JSON lines whose fields include `match`."""
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [p for p in parsed if all(p.get(k) == v for k, v in match.items())]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus scrape: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict[Any, float], name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


async def test_a_session_logs_each_outcome_and_counts_exactly(
    dispatcher: RunningDispatcher, workers: Callable[..., Any], json_log: io.StringIO
) -> None:
    """Hit, miss (with an eviction), a failed load and an unknown label: one parsed JSON line
    each, and metrics that count completed hits and misses only."""
    worker = await workers(
        dispatcher.ws_url,
        "w1",
        capacity=1,
        load_s=0.02,
        servable=["a", "b", "broken"],
        broken={"broken"},
    )
    answers: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as client:
        for name, label in (
            ("miss", "a"),
            ("hit", "a"),
            ("evicting", "b"),
            ("failed", "broken"),
            ("unknown", "nope"),
        ):
            body = {"task_type": "sample_task", "label": label, "parameters_json": "{}"}
            answers[name] = await client.post("/run-task", json=body)
        scrape = samples((await client.get("/metrics")).text)
    assert [a.status_code for a in answers.values()] == [200, 200, 200, 502, 404]

    finished = {line["task_id"]: line for line in lines(json_log, event="task_finished")}
    assert len(finished) == 4  # the unknown label was refused before it became a task
    miss = finished[answers["miss"].json()["task_id"]]
    assert (miss["label"], miss["worker"], miss["miss"]) == ("a", "w1", True)
    assert miss["status"] == "completed"
    assert miss["level"] == "info" and miss["load_ms"] == 20.0 and miss["http_status"] == 200
    assert {"queue_ms", "run_ms", "total_ms", "attempt"} <= set(miss)
    hit = finished[answers["hit"].json()["task_id"]]
    assert (hit["miss"], hit["load_ms"], hit["status"]) == (False, 0.0, "completed")
    failed = next(line for line in finished.values() if line["label"] == "broken")
    assert (failed["status"], failed["error_code"], failed["http_status"]) == (
        "task_failed",
        "MODEL_LOAD_FAILED",
        502,
    )
    assert failed["level"] == "warning"

    assert [(e["label"], e["load_ms"]) for e in lines(json_log, event="model_loaded")] == [
        ("a", 20.0),
        ("b", 20.0),
    ]
    (evicted,) = lines(json_log, event="model_evicted")
    assert (evicted["worker"], evicted["label"], evicted["reason"]) == ("w1", "a", "room for b")
    (joined,) = lines(json_log, event="worker_joined")
    assert (joined["worker"], joined["capacity"], joined["engine"]) == ("w1", 1, "fake")
    requests = lines(json_log, event="http_request", route="/run-task")
    assert [r["status"] for r in requests] == [200, 200, 200, 502, 404]
    assert all(r["method"] == "POST" and r["duration_ms"] > 0 for r in requests)

    # Hits and misses count completed tasks only; the failure is counted under its code.
    assert value(scrape, "smartrouting_label_hits_total", label="a") == 1
    assert value(scrape, "smartrouting_label_misses_total", label="a") == 1
    assert value(scrape, "smartrouting_label_misses_total", label="b") == 1
    assert value(scrape, "smartrouting_label_hits_total", label="broken") is None
    assert value(scrape, "smartrouting_label_misses_total", label="broken") is None
    assert value(scrape, "smartrouting_tasks_total", label="broken", outcome="task_failed") == 1
    assert value(scrape, "smartrouting_model_load_seconds_count", label="a") == 1
    assert value(scrape, "smartrouting_model_load_seconds_sum", label="a") == pytest.approx(0.02)
    assert value(scrape, "smartrouting_model_evictions_total", label="a") == 1
    for status, count in (("200", 3), ("502", 1), ("404", 1)):
        route = {"method": "POST", "route": "/run-task", "status": status}
        assert value(scrape, "smartrouting_http_requests_total", **route) == count, status
    assert value(scrape, "smartrouting_worker_state", worker="w1", state="ready") == 1
    assert value(scrape, "smartrouting_worker_state", worker="w1", state="suspended") == 0
    assert value(scrape, "smartrouting_worker_slots_busy", worker="w1") == 0
    assert value(scrape, "smartrouting_worker_labels", worker="w1") == 1
    assert value(scrape, "smartrouting_worker_joins_total") == 1
    assert value(scrape, "process_resident_memory_bytes") is not None

    await worker.close()
    wait_until(lambda: bool(lines(json_log, event="worker_left")), 10, "the leave to be logged")
    (left,) = lines(json_log, event="worker_left")
    assert left["worker"] == "w1" and left["tasks_running"] == 0


async def test_debug_logs_no_frames(
    dispatcher: RunningDispatcher, workers: Callable[..., Any]
) -> None:
    """At DEBUG uvicorn's websocket protocol logs every frame; the set-up's filter drops them
    (the same records reach an unfiltered handler, so the check can fail)."""
    unfiltered, filtered = io.StringIO(), io.StringIO()
    raw = logging.StreamHandler(unfiltered)
    clean = logging.StreamHandler(filtered)
    clean.addFilter(NoFrameDumps())
    uvicorn_error = logging.getLogger("uvicorn.error")
    saved = uvicorn_error.level
    uvicorn_error.addHandler(raw)
    uvicorn_error.addHandler(clean)
    uvicorn_error.setLevel(logging.DEBUG)
    try:
        # The websocket protocol takes its logger's level when a connection opens.
        worker = await workers(dispatcher.ws_url, "w1")
        async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as client:
            body = {"task_type": "sample_task", "label": "a", "parameters_json": "{}"}
            assert (await client.post("/run-task", json=body)).status_code == 200
        await worker.close()
    finally:
        uvicorn_error.removeHandler(raw)
        uvicorn_error.removeHandler(clean)
        uvicorn_error.setLevel(saved)
    assert "BINARY" in unfiltered.getvalue()
    assert "BINARY" not in filtered.getvalue()
