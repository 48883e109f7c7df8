"""A damaged state database never stops a start (hardening review, finding 6).

Before: one bad row in the state database (an `answer_json` that is not JSON, a text deadline,
a blob label) stopped start-up with a traceback, a crash loop with every good task stuck. The
rows and files are written by hand with sqlite3, and a real dispatcher is started on them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.store import TaskStore
from tests.dispatcher.conftest import RunningDispatcher

pytestmark = pytest.mark.timeout(120)

ROW = (
    "INSERT INTO tasks (task_id, task_type, label, parameters_json, deadline_unix_ms, state,"
    " submitted_unix, finished_unix, answer_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_rows(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Create the state database's table (as the dispatcher does) and insert `rows` raw."""
    TaskStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.executemany(ROW, rows)
    db.close()


def test_bad_rows_are_quarantined_and_good_ones_restored(
    dispatchers: Callable[..., RunningDispatcher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 6, same inputs: an answer_json that is not JSON, a text deadline and a blob
    label. The dispatcher starts; each bad row is moved to the quarantine table with an ERROR
    naming it and why; the good queued and finished tasks are served."""
    now = time.time()
    later = int((now + 600) * 1000)
    done = '{"completed": {"result": {"ok": 1}, "worker_id": "w1", "timings_ms": {}}}'
    path = tmp_path / "state.db"
    write_rows(
        path,
        [
            ("good-queued", "sample_task", "a", "{}", later, "queued", now, None, None),
            ("good-done", "sample_task", "a", "{}", later, "completed", now, now, done),
            ("bad-answer", "sample_task", "a", "{}", later, "completed", now, now, "{nope"),
            ("bad-deadline", "sample_task", "a", "{}", "tomorrow", "queued", now, None, None),
            ("bad-label", "sample_task", b"\x00\xff", "{}", later, "queued", now, None, None),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="dispatcher"):
        running = dispatchers(state_db=str(path), task_timeout_s=60.0)
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        assert client.get("/tasks/good-queued").json()["status"] == "queued"
        kept = client.get("/tasks/good-done").json()
        assert (kept["status"], kept["result"]) == ("completed", {"ok": 1})
        for bad in ("bad-answer", "bad-deadline", "bad-label"):
            assert client.get(f"/tasks/{bad}").status_code == 404
        assert client.post("/tasks", json={"task_type": "t", "label": "a"}).status_code == 202
    quarantined = dict(
        sqlite3.connect(path).execute("SELECT task_id, reason FROM quarantine").fetchall()
    )
    assert set(quarantined) == {"bad-answer", "bad-deadline", "bad-label"}
    assert "not JSON" in quarantined["bad-answer"]
    assert "deadline_unix_ms" in quarantined["bad-deadline"]
    assert "label" in quarantined["bad-label"]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    for bad in quarantined:
        assert f"task {bad!r} cannot be restored" in logged


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"this is not a database at all\n" * 64, id="not-sqlite"),
        pytest.param(lambda data: data[:100] + b"\x5a" * (len(data) - 100), id="pages-garbled"),
    ],
)
def test_an_unreadable_file_is_moved_aside_and_a_fresh_one_used(
    dispatchers: Callable[..., RunningDispatcher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[bytes], bytes],
) -> None:
    """Finding 6: a state file that is not SQLite, or whose pages are garbage, is moved aside
    to `<file>.corrupt-<time>` with an ERROR, and the dispatcher starts on a fresh file that
    keeps new tasks."""
    path = tmp_path / "state.db"
    store = TaskStore(path)
    for i in range(200):
        store.add(f"t{i}", "sample_task", "a", '{"pad": "' + "x" * 200 + '"}', 1)
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.ERROR, logger="dispatcher"):
        running = dispatchers(state_db=str(path))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert len(aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert any("moved aside" in r.getMessage() for r in caplog.records)
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        accepted = client.post("/tasks", json={"task_type": "t", "label": "a", "task_id": "new"})
        assert accepted.status_code == 202, accepted.text
    running.stop()
    assert [row.task_id for row in TaskStore(path).load()] == ["new"]
