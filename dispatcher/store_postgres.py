"""The PostgreSQL task store, shared by several dispatchers (`--store-url postgresql://...`).

The same rows as the SQLite store (`dispatcher.store`), plus the lease that says which
dispatcher runs an unfinished task (docs/architecture.md, "Shared task store"). Lease times
are the database server's clock (`clock_timestamp()`), so dispatchers whose clocks disagree
still agree on when a lease ended.

The claim is one statement: `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`.
Rows another claimer has locked are skipped, and a row changed by a claim committed since the
statement's snapshot is checked again against the WHERE clause (PostgreSQL re-reads the new
version under READ COMMITTED), so two dispatchers never both claim a task.

Blocking psycopg 3 on the dispatcher's writer thread (`dispatcher.persistence`), not its
async API: the SQLite store is blocking too, so one writer thread serves both, every write of
a dispatcher keeps its order (add, dispatched, finish), and the event loop never waits on a
socket to the database. One connection in autocommit mode (each statement its own
transaction); a connection that broke is opened again on the next call, once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from dispatcher.errors import DuplicateTask, StoreFailed
from dispatcher.store import _COLUMNS, _READ_COLUMNS, BadRow, StoredTask, _read_rows

log = logging.getLogger("dispatcher.store")

T = TypeVar("T")

#: Idempotent DDL, run on every start (several dispatchers may run it at once: the advisory
#: lock serialises them, since concurrent CREATE ... IF NOT EXISTS can still collide).
_SCHEMA = """
SELECT pg_advisory_xact_lock(7243017);
CREATE TABLE IF NOT EXISTS tasks (
    id BIGSERIAL UNIQUE,
    task_id TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    label TEXT NOT NULL,
    parameters_json TEXT NOT NULL,
    deadline_unix_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    submitted_unix DOUBLE PRECISION NOT NULL,
    finished_unix DOUBLE PRECISION,
    answer_json TEXT,
    worker_id TEXT,
    owner TEXT,
    parameters_digest TEXT,
    holder TEXT,
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS tasks_unfinished_lease ON tasks (lease_expires_at)
    WHERE finished_unix IS NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_unix)
    WHERE finished_unix IS NOT NULL;
CREATE TABLE IF NOT EXISTS quarantine (
    task_id TEXT, task_type TEXT, label TEXT, parameters_json TEXT, deadline_unix_ms BIGINT,
    state TEXT, submitted_unix DOUBLE PRECISION, finished_unix DOUBLE PRECISION,
    answer_json TEXT, worker_id TEXT, owner TEXT, parameters_digest TEXT,
    reason TEXT, quarantined_unix DOUBLE PRECISION
);
"""
_LEASE = "clock_timestamp() + make_interval(secs => %s)"


class PostgresTaskStore:
    """The tasks table of one PostgreSQL database (created on open when missing)."""

    shared = True

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.writes = 0
        self._db: psycopg.Connection[Any] | None = None
        try:
            with self._connection().transaction():
                self._connection().execute(_SCHEMA)
        except psycopg.Error as exc:
            self.close()
            raise StoreFailed(f"task store {self._where}: {exc}") from exc

    @property
    def _where(self) -> str:
        """The database, for messages (never the password)."""
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error:
            return "(unparsable URL)"
        return f"{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.closed or self._db.broken:
            self._db = psycopg.connect(
                self.url, autocommit=True, connect_timeout=int(self.connect_timeout_s)
            )
        return self._db

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], write: bool = True) -> T:
        """`work(connection)`; a broken connection is opened again and `work` retried once
        (every statement here is safe to repeat). Failures raise `StoreFailed`."""
        for attempt in (1, 2):
            try:
                result = work(self._connection())
                break
            except psycopg.OperationalError as exc:
                if attempt == 2 or (self._db is not None and not self._db.broken):
                    raise StoreFailed(f"task store {self._where}: {exc}") from exc
                log.warning("task store %s: connection lost (%s); reconnecting", self._where, exc)
            except psycopg.Error as exc:
                raise StoreFailed(f"task store {self._where}: {exc}") from exc
        if write:
            self.writes += 1
        return result

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
        """Record an accepted task held by `holder`; a finished row with its id is replaced,
        an unfinished one (another dispatcher runs it) raises `DuplicateTask`."""
        values = (task_id, task_type, label, parameters_json, deadline_unix_ms, time.time())
        added = self._run(
            lambda db: (
                db.execute(
                    "INSERT INTO tasks (task_id, task_type, label, parameters_json,"
                    " deadline_unix_ms, state, submitted_unix, owner, holder, lease_expires_at)"
                    f" VALUES (%s, %s, %s, %s, %s, 'queued', %s, %s, %s, {_LEASE})"
                    " ON CONFLICT (task_id) DO UPDATE SET task_type = excluded.task_type,"
                    " label = excluded.label, parameters_json = excluded.parameters_json,"
                    " deadline_unix_ms = excluded.deadline_unix_ms, state = 'queued',"
                    " submitted_unix = excluded.submitted_unix, finished_unix = NULL,"
                    " answer_json = NULL, worker_id = NULL, owner = excluded.owner,"
                    " parameters_digest = NULL, holder = excluded.holder,"
                    " lease_expires_at = excluded.lease_expires_at"
                    " WHERE tasks.finished_unix IS NOT NULL",
                    (*values, owner, holder, lease_s),
                ).rowcount
            )
        )
        if added == 0:
            raise DuplicateTask(f"task {task_id!r} is already queued or running")

    def dispatched(self, task_id: str, worker_id: str | None) -> None:
        """Record the worker an unfinished task was sent to (None: queued again)."""
        self._run(
            lambda db: db.execute(
                "UPDATE tasks SET worker_id = %s WHERE task_id = %s AND finished_unix IS NULL",
                (worker_id, task_id),
            )
        )

    def finish(
        self,
        task_id: str,
        state: str,
        answer: dict[str, Any],
        parameters_digest: str | None = None,
    ) -> None:
        """Record a task's answer; the first answer stays (a task claimed by another
        dispatcher after a stall may be answered twice: both answers are the task's)."""
        digest_sql = ", parameters_json = '', parameters_digest = %s" if parameters_digest else ""
        params: tuple[Any, ...] = (state, time.time(), json.dumps(answer))
        if parameters_digest:
            params += (parameters_digest,)
        self._run(
            lambda db: db.execute(
                "UPDATE tasks SET state = %s, finished_unix = %s, answer_json = %s,"
                f" holder = NULL, lease_expires_at = NULL{digest_sql}"
                " WHERE task_id = %s AND finished_unix IS NULL",
                (*params, task_id),
            )
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
        self._run(
            lambda db: db.execute(
                "INSERT INTO tasks (task_id, task_type, label, parameters_json,"
                " deadline_unix_ms, state, submitted_unix, finished_unix, answer_json, owner,"
                " parameters_digest) VALUES (%s, %s, %s, '', 0, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (task_id) DO UPDATE SET state = excluded.state,"
                " finished_unix = excluded.finished_unix, answer_json = excluded.answer_json,"
                " parameters_json = '', parameters_digest = excluded.parameters_digest,"
                " holder = NULL, lease_expires_at = NULL",
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
        )

    def get(self, task_id: str) -> StoredTask | None:
        """The row of `task_id`, or None (unknown, expired, or unreadable)."""
        rows = self._run(
            lambda db: db.execute(
                f"SELECT id, {_READ_COLUMNS} FROM tasks WHERE task_id = %s", (task_id,)
            ).fetchall(),
            write=False,
        )
        good, _ = _read_rows(rows)
        return good[0] if good else None

    def expire(self, ttl_s: float, now_unix: float | None = None) -> int:
        """Delete finished rows older than `ttl_s` (any dispatcher may: the rows are final)."""
        cutoff = (time.time() if now_unix is None else now_unix) - ttl_s
        return self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM tasks WHERE finished_unix IS NOT NULL AND finished_unix < %s",
                    (cutoff,),
                ).rowcount
            )
        )

    def load_checked(self) -> tuple[list[StoredTask], list[BadRow]]:
        """Every row, oldest submission first (for tools and tests: a dispatcher on a
        shared store reads only what it claims, `claim`)."""
        rows = self._run(
            lambda db: db.execute(
                f"SELECT id, {_READ_COLUMNS} FROM tasks ORDER BY submitted_unix"
            ).fetchall(),
            write=False,
        )
        return _read_rows(rows)

    def renew(self, holder: str, lease_s: float) -> set[str]:
        """Extend every lease of `holder` (one UPDATE); the ids it still holds."""
        rows = self._run(
            lambda db: db.execute(
                f"UPDATE tasks SET lease_expires_at = {_LEASE}"
                " WHERE holder = %s AND finished_unix IS NULL RETURNING task_id",
                (lease_s, holder),
            ).fetchall()
        )
        return {row[0] for row in rows}

    def claim(
        self, holder: str, lease_s: float, limit: int = 1000, own: bool = False
    ) -> tuple[list[StoredTask], list[BadRow]]:
        """Take over at most `limit` unfinished rows whose lease ended (with `own`, also
        those `holder` held already), atomically (see the module docstring)."""
        rows = self._run(
            lambda db: db.execute(
                f"UPDATE tasks SET holder = %s, lease_expires_at = {_LEASE}"
                " WHERE id IN (SELECT id FROM tasks WHERE finished_unix IS NULL"
                " AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp()"
                " OR (%s AND holder = %s))"
                " ORDER BY submitted_unix LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" RETURNING id, {_READ_COLUMNS}",
                (holder, lease_s, own, holder, limit),
            ).fetchall()
        )
        return _read_rows(rows, holder)

    def release(self, holder: str) -> int:
        """End every lease of `holder` now; returns how many."""
        return self._run(
            lambda db: (
                db.execute(
                    "UPDATE tasks SET lease_expires_at = NULL"
                    " WHERE holder = %s AND finished_unix IS NULL",
                    (holder,),
                ).rowcount
            )
        )

    def quarantine(self, rowid: int, reason: str) -> None:
        """Move an unusable row to the quarantine table, with `reason`."""

        def move(db: psycopg.Connection[Any]) -> None:
            with db.transaction():
                db.execute(
                    f"INSERT INTO quarantine ({_COLUMNS}, reason, quarantined_unix)"
                    f" SELECT {_COLUMNS}, %s, %s FROM tasks WHERE id = %s",
                    (reason, time.time(), rowid),
                )
                db.execute("DELETE FROM tasks WHERE id = %s", (rowid,))

        self._run(move)

    def quarantined(self) -> list[tuple[object, str]]:
        """(task id, reason) of every quarantined row, oldest first."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT task_id, reason FROM quarantine ORDER BY quarantined_unix"
            ).fetchall(),
            write=False,
        )
        return [(row[0], row[1]) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        if self._db is not None:
            self._db.close()
