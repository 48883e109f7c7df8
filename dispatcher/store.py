"""The task store: asynchronous tasks (and kept results) that outlive a dispatcher process.

`TaskStorage` is what persistence and recovery need from a store; two implement it: the
SQLite file below (`SqliteTaskStore`, `--state-db`: the embedded default for one dispatcher)
and PostgreSQL (`dispatcher.store_postgres`, `--store-url`: shared by several dispatchers).
`open_task_store` picks one from the configuration. Every method is blocking and is called
from one writer thread (`dispatcher.persistence`), never from the event loop.

Ownership is a lease (docs/architecture.md, "Shared task store"): each unfinished row names
the dispatcher holding it (`holder`) and when that lease ends; the holder renews all its
leases at once (`renew`), and any dispatcher takes over rows whose lease ended (`claim`,
atomic: two claimers never get the same row). With SQLite one dispatcher holds everything,
so the lease columns are written but nobody else ever claims them.

One row per task: written when the task is accepted (before the 202 goes out), given the id of
the worker it is sent to (`dispatched`), updated with its answer when it finishes, deleted
`result_ttl_s` after that. On start the dispatcher reads
the rows back (`load`): unfinished tasks are queued again, finished ones stay readable at
`/tasks/{id}` until their TTL. Synchronous `/run-task` tasks are not stored while they run:
their caller is connected and gets an answer (or a dropped connection) either way; with a
shared store one submitted with the caller's id is written once completed (`keep_result`), so
a retry on another dispatcher gets that answer.

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

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from dispatcher.errors import StoreFailed

log = logging.getLogger("dispatcher.store")

_COLUMNS = (
    "task_id, task_type, label, parameters_json, deadline_unix_ms, state, submitted_unix,"
    " finished_unix, answer_json, worker_id, owner, parameters_digest"
)
#: The columns read back into a `StoredTask` (`_COLUMNS` and the lease holder).
_READ_COLUMNS = f"{_COLUMNS}, holder"
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
    parameters_digest TEXT,
    holder TEXT,
    lease_expires_unix REAL
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
    "holder": "ALTER TABLE tasks ADD COLUMN holder TEXT",
    "lease_expires_unix": "ALTER TABLE tasks ADD COLUMN lease_expires_unix REAL",
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
    #: The row's id in its table (to quarantine the row if it turns out unusable).
    rowid: int = 0
    #: The dispatcher whose lease covers the row (None: nobody's; finished rows keep none).
    holder: str | None = None

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


class TaskStorage(Protocol):
    """What `Persistence`, recovery and the lease loop need from a task store. Every write
    is its own transaction; `StoreFailed` reports any failure."""

    #: Writes so far (persistence expires old rows every so many).
    writes: int
    #: Whether several dispatchers share it (then leases are renewed and claimed).
    shared: bool

    def add(
        self,
        task_id: str,
        task_type: str,
        label: str,
        parameters_json: str,
        deadline_unix_ms: int,
        owner: str | None = None,
        holder: str | None = None,
        lease_s: float = 0.0,
    ) -> None:
        """Record an accepted task held by `holder` for `lease_s` (replacing a finished row
        with the same id; `DuplicateTask` when an unfinished one has it)."""

    def dispatched(self, task_id: str, worker_id: str | None) -> None:
        """Record the worker an unfinished task was sent to (None: queued again)."""

    def finish(
        self,
        task_id: str,
        state: str,
        answer: dict[str, Any],
        parameters_digest: str | None = None,
    ) -> None:
        """Record a task's answer ("completed" or "failed"); its lease ends."""

    def keep_result(
        self,
        task_id: str,
        task_type: str,
        label: str,
        state: str,
        answer: dict[str, Any],
        parameters_digest: str,
        owner: str | None = None,
    ) -> None:
        """Record the answer of a task that was never stored unfinished (a synchronous task
        with the caller's id), so a retry on any dispatcher gets it."""

    def get(self, task_id: str) -> StoredTask | None:
        """The row of `task_id`, or None (unknown, expired, or unreadable)."""

    def expire(self, ttl_s: float, now_unix: float | None = None) -> int:
        """Delete finished rows older than `ttl_s`; returns how many went."""

    def load_checked(self) -> tuple[list[StoredTask], list[BadRow]]:
        """Every row (readable ones, and the others with why), oldest submission first."""

    def renew(self, holder: str, lease_s: float) -> set[str]:
        """Extend every lease of `holder` to `lease_s` from now (one statement); returns the
        ids of the unfinished rows it still holds."""

    def claim(
        self, holder: str, lease_s: float, limit: int = 1000, own: bool = False
    ) -> tuple[list[StoredTask], list[BadRow]]:
        """Take over at most `limit` unfinished rows whose lease ended (and, with `own`,
        those `holder` held already: a restart under the same id), atomically: a row goes to
        one claimer only. Returns them (oldest submission first) and those unreadable."""

    def release(self, holder: str) -> int:
        """End every lease of `holder` now (a graceful stop: another dispatcher claims its
        unfinished tasks at once); returns how many."""

    def quarantine(self, rowid: int, reason: str) -> None:
        """Move an unusable row to the quarantine table, with `reason`."""

    def quarantined(self) -> list[tuple[object, str]]:
        """(task id, reason) of every quarantined row, oldest first."""

    def close(self) -> None:
        """Close the store."""


class SqliteTaskStore:
    """The tasks table of one SQLite file (created with its directory when missing)."""

    shared = False

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
        holder: str | None = None,
        lease_s: float = 0.0,
    ) -> None:
        """Record an accepted task (replacing a finished one with the same id)."""
        now = time.time()
        self._write(
            "INSERT OR REPLACE INTO tasks (task_id, task_type, label, parameters_json,"
            " deadline_unix_ms, state, submitted_unix, owner, holder, lease_expires_unix)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            (
                task_id,
                task_type,
                label,
                parameters_json,
                deadline_unix_ms,
                now,
                owner,
                holder,
                now + lease_s,
            ),
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
                "UPDATE tasks SET state = ?, finished_unix = ?, answer_json = ?, holder = NULL"
                " WHERE task_id = ?",
                (state, time.time(), json.dumps(answer), task_id),
            )
            return
        self._write(
            "UPDATE tasks SET state = ?, finished_unix = ?, answer_json = ?, holder = NULL,"
            " parameters_json = '', parameters_digest = ? WHERE task_id = ?",
            (state, time.time(), json.dumps(answer), parameters_digest, task_id),
        )

    def keep_result(
        self,
        task_id: str,
        task_type: str,
        label: str,
        state: str,
        answer: dict[str, Any],
        parameters_digest: str,
        owner: str | None = None,
    ) -> None:
        """Record a finished task that was never stored unfinished (a retry may ask)."""
        now = time.time()
        self._write(
            "INSERT OR REPLACE INTO tasks (task_id, task_type, label, parameters_json,"
            " deadline_unix_ms, state, submitted_unix, finished_unix, answer_json, owner,"
            " parameters_digest) VALUES (?, ?, ?, '', 0, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                task_type,
                label,
                state,
                now,
                now,
                json.dumps(answer),
                owner,
                parameters_digest,
            ),
        )

    def get(self, task_id: str) -> StoredTask | None:
        """The row of `task_id`, or None (unknown, expired, or unreadable)."""
        row = self._db.execute(
            f"SELECT rowid, {_READ_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)
        ).fetchone()
        try:
            return None if row is None else _stored_task(row)
        except ValueError:
            return None

    def renew(self, holder: str, lease_s: float) -> set[str]:
        """Extend every lease of `holder`; the ids of the unfinished rows it holds."""
        with self._transaction():
            self._db.execute(
                "UPDATE tasks SET lease_expires_unix = ? WHERE holder = ?"
                " AND finished_unix IS NULL",
                (time.time() + lease_s, holder),
            )
            rows = self._db.execute(
                "SELECT task_id FROM tasks WHERE holder = ? AND finished_unix IS NULL", (holder,)
            ).fetchall()
        return {row[0] for row in rows}

    def claim(
        self, holder: str, lease_s: float, limit: int = 1000, own: bool = False
    ) -> tuple[list[StoredTask], list[BadRow]]:
        """Take over unfinished rows whose lease ended (`BEGIN IMMEDIATE` locks the file
        against every other connection, so the select-then-update is atomic)."""
        now = time.time()
        with self._transaction():
            rows = self._db.execute(
                f"SELECT rowid, {_READ_COLUMNS} FROM tasks WHERE finished_unix IS NULL"
                " AND (holder IS NULL OR lease_expires_unix IS NULL OR lease_expires_unix < ?"
                " OR (? AND holder = ?)) ORDER BY submitted_unix LIMIT ?",
                (now, own, holder, limit),
            ).fetchall()
            self._db.executemany(
                "UPDATE tasks SET holder = ?, lease_expires_unix = ? WHERE rowid = ?",
                [(holder, now + lease_s, row[0]) for row in rows],
            )
        return _read_rows(rows, holder)

    def release(self, holder: str) -> int:
        """End every lease of `holder` now; returns how many."""
        return self._write(
            "UPDATE tasks SET lease_expires_unix = NULL WHERE holder = ? AND finished_unix IS NULL",
            (holder,),
        ).rowcount

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
            f"SELECT rowid, {_READ_COLUMNS} FROM tasks ORDER BY submitted_unix"
        ).fetchall()
        return _read_rows(rows)

    def quarantine(self, rowid: int, reason: str) -> None:
        """Move a row that cannot be used to the `quarantine` table, with `reason`."""
        with self._transaction():
            self._db.execute(
                f"INSERT INTO quarantine ({_COLUMNS}, reason, quarantined_unix)"
                f" SELECT {_COLUMNS}, ?, ? FROM tasks WHERE rowid = ?",
                (reason, time.time(), rowid),
            )
            self._db.execute("DELETE FROM tasks WHERE rowid = ?", (rowid,))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (`BEGIN IMMEDIATE`: the write lock from its start)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreFailed(f"state database {self.path}: {exc}") from exc
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
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


#: The embedded default's first name, kept for the code and tests that use it.
TaskStore = SqliteTaskStore


def open_store(path: str | Path) -> SqliteTaskStore:
    """The state database at `path`, checked; a file that is not a readable SQLite database is
    moved aside to `<path>.corrupt-<unix time>` (with its -wal and -shm files) with an ERROR
    in the log, and a fresh one is created: a damaged file must not stop every start. Other
    failures (no permission, locked by another process) raise `StoreFailed`."""
    try:
        store = SqliteTaskStore(path)
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
        return SqliteTaskStore(path)


def open_task_store(store_url: str | None, state_db: str | None) -> TaskStorage | None:
    """The store the configuration names: PostgreSQL for a `postgresql://` (or
    `postgres://`) `store_url`, else the SQLite file `state_db`, else none."""
    if store_url and store_url.split(":", 1)[0] in ("postgresql", "postgres"):
        # Imported here: psycopg is an optional dependency (the `postgres` extra).
        try:
            from dispatcher.store_postgres import PostgresTaskStore
        except ImportError as exc:
            raise StoreFailed(
                f"--store-url needs psycopg (pip install 'smart-routing[postgres]'): {exc}"
            ) from exc

        return PostgresTaskStore(store_url)
    if store_url:
        raise StoreFailed("--store-url must be a postgresql:// URL (SQLite is --state-db)")
    return open_store(state_db) if state_db else None


def _read_rows(
    rows: list[tuple[Any, ...]], holder: str | None = None
) -> tuple[list[StoredTask], list[BadRow]]:
    """Rows (row id first, then `_READ_COLUMNS`) as tasks, and those that do not read back;
    `holder` replaces the stored one (rows just claimed)."""
    good: list[StoredTask] = []
    bad: list[BadRow] = []
    for row in rows:
        try:
            task = _stored_task(row)
        except ValueError as exc:
            bad.append(BadRow(row[0], row[1], str(exc)))
            continue
        good.append(task if holder is None else replace(task, holder=holder))
    good.sort(key=lambda task: task.submitted_unix)
    return good, bad


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
        holder,
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
    texts = (("worker_id", worker_id), ("owner", owner), ("digest", digest), ("holder", holder))
    for name, value in texts:
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
        holder=holder,
    )


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind(value: object) -> str:
    """How a stored value reads in a reason: its SQLite type and a short repr."""
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"
