"""SQLite store of asynchronous tasks, so an accepted `POST /tasks` survives a restart.

One row per task: written when the task is accepted (before the 202 goes out), given the id of
the worker it is sent to (`dispatched`), updated with its answer when it finishes, deleted
`result_ttl_s` after that. On start the dispatcher reads
the rows back (`load`): unfinished tasks are queued again, finished ones stay readable at
`/tasks/{id}` until their TTL. Synchronous `/run-task` tasks are not stored: their caller is
connected and gets an answer (or a dropped connection) either way.

The database runs in WAL mode with `synchronous=NORMAL`: a committed row survives the process
being killed (SIGKILL, OOM); a power loss may lose the last transactions. Each write is one
short transaction on the event loop's thread (well under a millisecond on a local disk).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.errors import StoreFailed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    label TEXT NOT NULL,
    parameters_json TEXT NOT NULL,
    deadline_unix_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_unix REAL NOT NULL,
    finished_unix REAL,
    answer_json TEXT,
    worker_id TEXT
)
"""
#: Files written before the worker id was kept lack its column; it is added on open.
_MIGRATIONS = ("ALTER TABLE tasks ADD COLUMN worker_id TEXT",)


@dataclass(frozen=True)
class StoredTask:
    """One row: an accepted asynchronous task and, once finished, its answer."""

    task_id: str
    task_type: str
    label: str
    parameters_json: str
    deadline_unix_ms: int
    state: str  # "queued" (not finished) | "completed" | "failed"
    submitted_unix: float
    finished_unix: float | None = None
    answer: dict[str, Any] | None = None
    #: The worker an unfinished task was last sent to (None: never sent, or sent back).
    worker_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed")


class TaskStore:
    """The tasks table of one SQLite file (created with its directory when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit: every statement below is its own transaction.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
            if "worker_id" not in columns:
                for statement in _MIGRATIONS:
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            raise StoreFailed(f"cannot open state database {self.path}: {exc}") from exc
        self.writes = 0

    def add(
        self,
        task_id: str,
        task_type: str,
        label: str,
        parameters_json: str,
        deadline_unix_ms: int,
    ) -> None:
        """Record an accepted task (replacing a finished one with the same id)."""
        self._write(
            "INSERT OR REPLACE INTO tasks (task_id, task_type, label, parameters_json,"
            " deadline_unix_ms, state, submitted_unix) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
            (task_id, task_type, label, parameters_json, deadline_unix_ms, time.time()),
        )

    def dispatched(self, task_id: str, worker_id: str | None) -> None:
        """Record the worker an unfinished task was sent to (None: it was queued again)."""
        self._write(
            "UPDATE tasks SET worker_id = ? WHERE task_id = ? AND finished_unix IS NULL",
            (worker_id, task_id),
        )

    def finish(self, task_id: str, state: str, answer: dict[str, Any]) -> None:
        """Record a task's answer: state "completed" or "failed" and its JSON."""
        self._write(
            "UPDATE tasks SET state = ?, finished_unix = ?, answer_json = ? WHERE task_id = ?",
            (state, time.time(), json.dumps(answer), task_id),
        )

    def expire(self, ttl_s: float, now_unix: float | None = None) -> int:
        """Delete finished tasks older than `ttl_s`; returns how many went."""
        cutoff = (time.time() if now_unix is None else now_unix) - ttl_s
        cursor = self._write(
            "DELETE FROM tasks WHERE finished_unix IS NOT NULL AND finished_unix < ?", (cutoff,)
        )
        return cursor.rowcount

    def load(self) -> list[StoredTask]:
        """Every row, oldest submission first."""
        rows = self._db.execute(
            "SELECT task_id, task_type, label, parameters_json, deadline_unix_ms, state,"
            " submitted_unix, finished_unix, answer_json, worker_id FROM tasks"
            " ORDER BY submitted_unix"
        ).fetchall()
        return [
            StoredTask(
                task_id=row[0],
                task_type=row[1],
                label=row[2],
                parameters_json=row[3],
                deadline_unix_ms=row[4],
                state=row[5],
                submitted_unix=row[6],
                finished_unix=row[7],
                answer=json.loads(row[8]) if row[8] else None,
                worker_id=row[9],
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close the database (pending writes are committed: autocommit)."""
        self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            cursor = self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreFailed(f"state database {self.path}: {exc}") from exc
        self.writes += 1
        return cursor
