"""The task store contract (`dispatcher.store.TaskStorage`), run against SQLite and a real
PostgreSQL server: rows, kept results, leases renewed, released and claimed, and no task
claimed by two dispatchers at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from dispatcher.errors import DuplicateTask, StoreFailed
from dispatcher.store import SqliteTaskStore, TaskStorage, open_task_store
from dispatcher.store_postgres import PostgresTaskStore
from tests.postgres import PostgresServer

pytestmark = pytest.mark.timeout(60)

DEADLINE_MS = int((time.time() + 3600) * 1000)
StoreFactory = Callable[[], TaskStorage]


@pytest.fixture(params=["sqlite", "postgres"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens connections to one fresh store (each call another connection, as another
    dispatcher would have); all closed at teardown."""
    opened: list[TaskStorage] = []
    if request.param == "sqlite":
        path = tmp_path / "state.db"

        def open_store() -> TaskStorage:
            return SqliteTaskStore(path)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database(f"contract_{uuid.uuid4().hex[:8]}")

        def open_store() -> TaskStorage:
            return PostgresTaskStore(url)

    def factory() -> TaskStorage:
        store = open_store()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def add(store: TaskStorage, task_id: str, holder: str = "A", lease_s: float = 30.0) -> None:
    store.add(task_id, "sample_task", "a", '{"x": 1}', DEADLINE_MS, "key", holder, lease_s)


def test_rows_round_trip(connect: StoreFactory) -> None:
    """A row added, sent to a worker and finished reads back so, from another connection."""
    store, other = connect(), connect()
    add(store, "t1")
    store.dispatched("t1", "w1")
    row = other.get("t1")
    assert row is not None and not row.finished
    assert (row.worker_id, row.holder, row.owner) == ("w1", "A", "key")
    assert row.parameters_json == '{"x": 1}' and row.deadline_unix_ms == DEADLINE_MS
    store.finish("t1", "completed", {"completed": {"result": 7}}, "digest-1")
    row = other.get("t1")
    assert row is not None and row.state == "completed" and row.holder is None
    assert row.answer == {"completed": {"result": 7}}
    assert (row.parameters_json, row.parameters_digest) == ("", "digest-1")
    assert other.get("unknown") is None
    assert [r.task_id for r in other.load_checked()[0]] == ["t1"]


def test_a_finished_row_is_replaced_by_a_new_task(connect: StoreFactory) -> None:
    """An id whose task finished may be used again (a retry after a failure)."""
    store = connect()
    add(store, "t1")
    store.finish("t1", "failed", {"error": None})
    add(store, "t1", holder="B")
    row = store.get("t1")
    assert row is not None and row.state == "queued" and row.holder == "B"


def test_kept_results_and_expiry(connect: StoreFactory) -> None:
    """A synchronous task's kept answer reads back finished; expiry drops old finished rows
    and never an unfinished one."""
    store = connect()
    store.keep_result("s1", "sample_task", "a", "completed", {"completed": {"r": 1}}, "dg", "k")
    add(store, "t1")
    row = connect().get("s1")
    assert row is not None and row.finished and row.parameters_digest == "dg"
    assert row.answer == {"completed": {"r": 1}} and row.owner == "k"
    assert store.expire(60.0) == 0
    assert store.expire(0.0, now_unix=time.time() + 1) == 1
    assert store.get("s1") is None and store.get("t1") is not None


def test_leases_are_renewed_claimed_and_released(connect: StoreFactory) -> None:
    """A live lease is not claimed; an ended one goes to the claimer, whose renewal then
    covers it; the old holder's renewal no longer does; a released lease is claimed at once."""
    a, b = connect(), connect()
    add(a, "live", lease_s=30.0)
    add(a, "ended", lease_s=0.0)
    add(a, "done", lease_s=0.0)
    a.finish("done", "completed", {"completed": {}})
    time.sleep(0.01)
    rows, bad = b.claim("B", 30.0)
    assert [r.task_id for r in rows] == ["ended"] and not bad
    assert rows[0].holder == "B" and rows[0].parameters_json == '{"x": 1}'
    assert b.renew("B", 30.0) == {"ended"}
    assert a.renew("A", 30.0) == {"live"}
    assert b.claim("B", 30.0) == ([], [])
    assert a.release("A") == 1
    assert [r.task_id for r in b.claim("B", 30.0)[0]] == ["live"]


def test_own_claim_takes_back_a_holders_live_leases(connect: StoreFactory) -> None:
    """A dispatcher restarted under the same id takes its own tasks back at once."""
    store = connect()
    add(store, "mine", holder="A", lease_s=30.0)
    add(store, "theirs", holder="C", lease_s=30.0)
    assert connect().claim("A", 30.0) == ([], [])
    assert [r.task_id for r in connect().claim("A", 30.0, own=True)[0]] == ["mine"]


def test_two_claimers_never_claim_the_same_task(connect: StoreFactory) -> None:
    """Four dispatchers claiming 200 expired tasks at once, ten at a time: every task is
    claimed exactly once."""
    setup = connect()
    for n in range(200):
        add(setup, f"t{n:03}", holder="dead", lease_s=0.0)
    claimers = [connect() for _ in range(4)]
    claimed: dict[str, list[str]] = {f"c{i}": [] for i in range(4)}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claim(name: str, store: TaskStorage) -> None:
        try:
            start.wait()
            while True:
                try:
                    rows, _ = store.claim(name, 30.0, limit=10)
                except StoreFailed as exc:  # SQLite: "database is locked" past its timeout
                    if "locked" not in str(exc):
                        raise
                    continue
                if not rows:
                    return
                claimed[name].extend(r.task_id for r in rows)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=claim, args=(name, store))
        for name, store in zip(claimed, claimers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    every = [task_id for ids in claimed.values() for task_id in ids]
    assert len(every) == 200 and set(every) == {f"t{n:03}" for n in range(200)}
    holders = {row.task_id: row.holder for row in setup.load_checked()[0]}
    assert all(holders[task_id] == name for name, ids in claimed.items() for task_id in ids)


def test_postgres_refuses_a_second_unfinished_task_with_one_id(
    postgres: PostgresServer,
) -> None:
    """Another dispatcher runs it: the shared store refuses the id (409) instead of
    replacing the row."""
    store = PostgresTaskStore(postgres.create_database("duplicate"))
    try:
        add(store, "t1", holder="A")
        with pytest.raises(DuplicateTask):
            add(store, "t1", holder="B")
        row = store.get("t1")
        assert row is not None and row.holder == "A"
    finally:
        store.close()


def test_open_task_store_picks_the_backend(tmp_path: Path, postgres: PostgresServer) -> None:
    """postgresql:// is PostgreSQL, no URL is the SQLite file, anything else is refused; an
    unreachable server is a `StoreFailed` that does not show the password."""
    sqlite = open_task_store(None, str(tmp_path / "s.db"))
    assert isinstance(sqlite, SqliteTaskStore) and not sqlite.shared
    sqlite.close()
    assert open_task_store(None, None) is None
    shared = open_task_store(postgres.create_database("pick"), None)
    assert isinstance(shared, PostgresTaskStore) and shared.shared
    shared.close()
    with pytest.raises(StoreFailed, match="postgresql://"):
        open_task_store("mysql://x", None)
    with pytest.raises(StoreFailed) as failed:
        PostgresTaskStore("postgresql://u:s3cret@127.0.0.1:1/db", connect_timeout_s=2)
    assert "s3cret" not in str(failed.value)


def test_postgres_reconnects_after_losing_its_connection(postgres: PostgresServer) -> None:
    """A connection the server dropped (a failover, an idle timeout) is opened again on the
    next call, which succeeds."""
    url = postgres.create_database("reconnect")
    store = PostgresTaskStore(url)
    try:
        add(store, "t1")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = 'reconnect' AND pid <> pg_backend_pid()"
            )
        row = store.get("t1")
        assert row is not None and row.task_id == "t1"
        add(store, "t2")
        assert {r.task_id for r in store.load_checked()[0]} == {"t1", "t2"}
    finally:
        store.close()
