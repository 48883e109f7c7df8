"""SQLite store of asynchronous tasks, so an accepted `POST /tasks` survives a restart.

One row per task: written when the task is accepted (before the 202 goes out), given the id of
the worker it is sent to (`dispatched`), updated with its answer when it finishes, deleted
`result_ttl_s` after that. On start the dispatcher reads
the rows back (`load`): unfinished tasks are queued again, finished ones stay readable at
`/tasks/{id}` until their TTL. Synchronous `/run-task` tasks are not stored: their caller is
connected and gets an answer (or a dropped connection) either way.

The database runs in WAL mode with `synchronous=NORMAL`: a committed row survives the process
being killed (SIGKILL, OOM); a power loss may lose the last transactions. Each write is one
short transaction on the writer thread (well under a millisecond on a local disk). A finished
row keeps a digest of its parameters instead of the parameters themselves.

Damage never stops a start (docs/reliability.md): `open_store` moves a file that is not a
readable SQLite database aside (`<file>.corrupt-<time>`) with an ERROR and starts a fresh one;
`load_checked` returns the rows that cannot be read back (wrong types, an answer that is not
JSON) apart, and `quarantine` moves each to the `quarantine` table with its reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.errors import StoreFailed

log = logging.getLogger("dispatcher.store")

_COLUMNS = (
    "task_id, task_type, label, parameters_json, deadline_unix_ms, state, submitted_unix,"
    " finished_unix, answer_json, worker_id, owner, parameters_digest"
)
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
    worker_id TEXT,
    owner TEXT,
    parameters_digest TEXT
)
"""
#: Rows that could not be read back, kept (untyped, as they were) for a human to look at.
_QUARANTINE = f"""
CREATE TABLE IF NOT EXISTS quarantine (
    {_COLUMNS},
    reason TEXT,
    quarantined_unix REAL
)
"""
#: Columns added since the first files were written; added on open when missing.
_MIGRATIONS = {
    "worker_id": "ALTER TABLE tasks ADD COLUMN worker_id TEXT",
    "owner": "ALTER TABLE tasks ADD COLUMN owner TEXT",
    "parameters_digest": "ALTER TABLE tasks ADD COLUMN parameters_digest TEXT",
}
#: SQLite's words for a file that is not a database or is damaged: such a file is moved aside.
_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_STATES = ("queued", "completed", "failed")


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
    #: The API key (hashed) that submitted it; None: anyone may read it.
    owner: str | None = None
    #: A finished task's parameters digest (its parameters are not kept); None: not finished.
    parameters_digest: str | None = None
    #: SQLite's row id (to quarantine the row if it turns out unusable).
    rowid: int = 0

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed")


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be read back, and why."""

    rowid: int
    task_id: object
    reason: str


class Damaged(sqlite3.DatabaseError):
    """`PRAGMA quick_check` found the file damaged."""


class TaskStore:
    """The tasks table of one SQLite file (created with its directory when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.Error as exc:
            raise StoreFailed(f"cannot open state database {self.path}: {exc}") from exc
        self.writes = 0

    def _open(self) -> sqlite3.Connection:
        # Autocommit: every statement below is its own transaction.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
            for column, statement in _MIGRATIONS.items():
                if column not in columns:
                    db.execute(statement)
            db.execute(_QUARANTINE)
        except BaseException:
            db.close()
            raise
        return db

    def check(self) -> None:
        """Read the whole file once (`PRAGMA quick_check`); raises `Damaged` (or SQLite's
        own error) when it is damaged."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise Damaged("; ".join(map(str, problems[:5])))

    def add(
        self,
        task_id: str,
        task_type: str,
        label: str,
        parameters_json: str,
        deadline_unix_ms: int,
        owner: str | None = None,
    ) -> None:
        """Record an accepted task (replacing a finished one with the same id)."""
        self._write(
            "INSERT OR REPLACE INTO tasks (task_id, task_type, label, parameters_json,"
            " deadline_unix_ms, state, submitted_unix, owner)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (task_id, task_type, label, parameters_json, deadline_unix_ms, time.time(), owner),
        )

    def dispatched(self, task_id: str, worker_id: str | None) -> None:
        """Record the worker an unfinished task was sent to (None: it was queued again)."""
        self._write(
            "UPDATE tasks SET worker_id = ? WHERE task_id = ? AND finished_unix IS NULL",
            (worker_id, task_id),
        )

    def finish(
        self,
        task_id: str,
        state: str,
        answer: dict[str, Any],
        parameters_digest: str | None = None,
    ) -> None:
        """Record a task's answer: state "completed" or "failed" and its JSON. With a
        `parameters_digest` the parameters are replaced by it (a finished task never runs)."""
        if parameters_digest is None:
            self._write(
                "UPDATE tasks SET state = ?, finished_unix = ?, answer_json = ? WHERE task_id = ?",
                (state, time.time(), json.dumps(answer), task_id),
            )
            return
        self._write(
            "UPDATE tasks SET state = ?, finished_unix = ?, answer_json = ?,"
            " parameters_json = '', parameters_digest = ? WHERE task_id = ?",
            (state, time.time(), json.dumps(answer), parameters_digest, task_id),
        )

    def expire(self, ttl_s: float, now_unix: float | None = None) -> int:
        """Delete finished tasks older than `ttl_s`; returns how many went."""
        cutoff = (time.time() if now_unix is None else now_unix) - ttl_s
        cursor = self._write(
            "DELETE FROM tasks WHERE finished_unix IS NOT NULL AND finished_unix < ?", (cutoff,)
        )
        return cursor.rowcount

    def load(self) -> list[StoredTask]:
        """Every row that reads back, oldest submission first (see `load_checked`)."""
        return self.load_checked()[0]

    def load_checked(self) -> tuple[list[StoredTask], list[BadRow]]:
        """Every row, oldest submission first: those that read back, and those that do not
        (a value of the wrong type, an answer that is not a JSON object) with the reason."""
        rows = self._db.execute(
            f"SELECT rowid, {_COLUMNS} FROM tasks ORDER BY submitted_unix"
        ).fetchall()
        good: list[StoredTask] = []
        bad: list[BadRow] = []
        for row in rows:
            try:
                good.append(_stored_task(row))
            except ValueError as exc:
                bad.append(BadRow(row[0], row[1], str(exc)))
        return good, bad

    def quarantine(self, rowid: int, reason: str) -> None:
        """Move a row that cannot be used to the `quarantine` table, with `reason`."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                f"INSERT INTO quarantine ({_COLUMNS}, reason, quarantined_unix)"
                f" SELECT {_COLUMNS}, ?, ? FROM tasks WHERE rowid = ?",
                (reason, time.time(), rowid),
            )
            self._db.execute("DELETE FROM tasks WHERE rowid = ?", (rowid,))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreFailed(f"state database {self.path}: {exc}") from exc
        self.writes += 1

    def quarantined(self) -> list[tuple[object, str]]:
        """(task id, reason) of every quarantined row, oldest first."""
        return list(
            self._db.execute("SELECT task_id, reason FROM quarantine ORDER BY quarantined_unix")
        )

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


def open_store(path: str | Path) -> TaskStore:
    """The state database at `path`, checked; a file that is not a readable SQLite database is
    moved aside to `<path>.corrupt-<unix time>` (with its -wal and -shm files) with an ERROR
    in the log, and a fresh one is created: a damaged file must not stop every start. Other
    failures (no permission, locked by another process) raise `StoreFailed`."""
    try:
        store = TaskStore(path)
        try:
            store.check()
        except BaseException:
            store.close()
            raise
        return store
    except (StoreFailed, sqlite3.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, StoreFailed) else exc
        damaged = isinstance(cause, Damaged)
        if not damaged and getattr(cause, "sqlite_errorname", None) not in _DAMAGED:
            raise
        aside = f"{path}.corrupt-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.error(
            "state database %s is unreadable (%s): moved aside to %s; starting with an empty"
            " one, so the tasks it held are not restored",
            path,
            cause,
            aside,
        )
        return TaskStore(path)


def _stored_task(row: tuple[Any, ...]) -> StoredTask:
    """A row (rowid first) as a `StoredTask`; `ValueError` naming what is wrong."""
    (
        rowid,
        task_id,
        task_type,
        label,
        parameters_json,
        deadline,
        state,
        submitted,
        finished,
        answer_json,
        worker_id,
        owner,
        digest,
    ) = row
    for name, value in (("task_id", task_id), ("task_type", task_type), ("label", label)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} is {_kind(value)}, not text")
    if not isinstance(parameters_json, str):
        raise ValueError(f"parameters_json is {_kind(parameters_json)}, not text")
    if isinstance(deadline, bool) or not isinstance(deadline, int):
        raise ValueError(f"deadline_unix_ms is {_kind(deadline)}, not an integer")
    if state not in _STATES:
        raise ValueError(f"state is {state!r}, not one of {', '.join(_STATES)}")
    if not _is_time(submitted):
        raise ValueError(f"submitted_unix is {_kind(submitted)}, not a time")
    if finished is not None and not _is_time(finished):
        raise ValueError(f"finished_unix is {_kind(finished)}, not a time")
    for name, value in (("worker_id", worker_id), ("owner", owner), ("digest", digest)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} is {_kind(value)}, not text")
    answer: Any = None
    if answer_json is not None:
        if not isinstance(answer_json, str):
            raise ValueError(f"answer_json is {_kind(answer_json)}, not text")
        try:
            answer = json.loads(answer_json)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"answer_json is not JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise ValueError("answer_json is not a JSON object")
    if state == "completed" and not isinstance((answer or {}).get("completed"), dict):
        raise ValueError("a completed task without its result in answer_json")
    return StoredTask(
        task_id=task_id,
        task_type=task_type,
        label=label,
        parameters_json=parameters_json,
        deadline_unix_ms=deadline,
        state=state,
        submitted_unix=float(submitted),
        finished_unix=None if finished is None else float(finished),
        answer=answer,
        worker_id=worker_id,
        owner=owner,
        parameters_digest=digest,
        rowid=rowid,
    )


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: object) -> str:
    """How a stored value reads in a reason: its SQLite type and a short repr."""
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"
