"""Tests of the registry's indexes, the task queue, estimates, errors and config."""

from __future__ import annotations

import random

import pytest

from dispatcher.config import Config, config_from_args
from dispatcher.errors import DispatcherError, TaskFailed, all_error_classes
from dispatcher.estimates import LabelEstimates
from dispatcher.registry import IndexedSet, Registry, RegistryError, WorkerRecord, WorkerState
from dispatcher.tasks import ResultStore, TaskQueue, TaskRecord, TaskState


def record(wid: str, capacity: int = 2, slots: int = 1) -> WorkerRecord:
    return WorkerRecord(wid, capacity=capacity, slots=slots)


def test_indexes_follow_assign_finish_and_labels() -> None:
    """holders, idle_holders, idle and idle_with_room change with every event."""
    r = Registry()
    r.add(record("w1"), ["a"])
    r.add(record("w2"))
    assert r.holders("a") == {"w1"} and list(r.idle_holders("a")) == ["w1"]
    assert set(r.idle) == {"w1", "w2"} and set(r.idle_with_room) == {"w1", "w2"}
    r.assign("w1", "t1", "b")  # a miss: b counts as held (loading) at once
    assert r.holders("b") == {"w1"} and r.get("w1").loading == {"b"}
    assert "w1" not in r.idle and len(r.idle_holders("a")) == 0
    assert r.labels() == {"a": ["w1"], "b": ["w1"]}
    assert r.finish("w1", "t1") == "b"
    assert "w1" in r.idle and "w1" not in r.idle_with_room  # full: a and b
    r.set_labels("w1", ["b"])
    assert r.holders("a") == set() and "w1" in r.idle_with_room
    assert r.labels() == {"b": ["w1"]}


def test_assign_with_evict_hint_drops_the_label() -> None:
    """Evicting on assign removes the label from every index."""
    r = Registry()
    r.add(record("w1"), ["a", "b"])
    r.assign("w1", "t", "c", evict=["a"])
    assert r.holders("a") == set() and set(r.get("w1").labels) == {"b", "c"}


def test_set_labels_keeps_labels_of_running_tasks() -> None:
    """A report that predates a pending load does not drop the label being loaded."""
    r = Registry()
    r.add(record("w1", slots=2))
    r.assign("w1", "t1", "a")
    r.set_labels("w1", [])
    assert r.holders("a") == {"w1"}


def test_remove_and_state_transitions() -> None:
    """Removing a worker clears its labels; illegal state changes raise with a message."""
    r = Registry()
    r.add(record("w1"), ["a"])
    with pytest.raises(RegistryError, match="already registered"):
        r.add(record("w1"))
    r.set_state("w1", WorkerState.DRAINING)
    assert "w1" not in r.idle and r.holders("a") == set()  # nobody waits for a leaver
    with pytest.raises(RegistryError, match="cannot go from draining to ready"):
        r.set_state("w1", WorkerState.READY)
    gone = r.remove("w1")
    assert gone.state is WorkerState.GONE and r.holders("a") == set() and len(r) == 0
    with pytest.raises(RegistryError, match="unknown worker"):
        r.get("w1")


def test_indexed_set_random_choice_and_discard() -> None:
    """IndexedSet keeps O(1) membership after swaps on discard."""
    s = IndexedSet(["a", "b", "c"])
    s.discard("a")
    s.discard("zz")
    assert set(s) == {"b", "c"} and "a" not in s and len(s) == 2
    assert {s.choice(random.Random(i)) for i in range(20)} == {"b", "c"}
    assert IndexedSet().choice(random.Random(0)) is None and IndexedSet().first() is None


def _task(task_id: str, label: str, at: float) -> TaskRecord:
    return TaskRecord(task_id, "t", label, "{}", at, at + 10, 0, enqueued_at=at)


def test_task_queue_orders() -> None:
    """Global FIFO, per-label FIFO, front insertion and removal."""
    q = TaskQueue()
    q.push(_task("1", "a", 1.0))
    q.push(_task("2", "b", 2.0))
    q.push(_task("3", "a", 3.0))
    q.push(_task("0", "b", 0.5), front=True)
    assert q.oldest().task_id == "0" and q.oldest_of("a").task_id == "1"  # type: ignore[union-attr]
    assert q.labels() == ["b", "a"] and q.count("a") == 2
    assert q.remove("0") is not None and q.remove("0") is None
    assert [t.task_id for t in q.drain()] == ["1", "2", "3"] and len(q) == 0


def test_result_store_expires_finished_only() -> None:
    """Finished tasks leave after the TTL; live ones stay."""
    store = ResultStore(ttl_s=10)
    live, done = _task("live", "a", 0), _task("done", "a", 0)
    done.state = TaskState.COMPLETED
    store.add(live)
    store.add(done)
    store.finished(done, now=0.0)
    assert store.expire(now=5.0) == 0 and store.live("live") and not store.live("done")
    assert store.expire(now=11.0) == 1 and "done" not in store and "live" in store


def test_estimates_seed_and_observe() -> None:
    """Estimates start at defaults, take worker seeds, then follow measurements."""
    e = LabelEstimates(default_load_ms=1000, default_run_ms=50, alpha=0.5)
    assert e.load_ms("a") == 1000 and e.run_ms("a") == 50
    e.seed("a", 400, 20)
    assert e.load_ms("a") == 400 and e.run_ms("a") == 20
    e.observe("a", load_ms=800, run_ms=40)
    assert e.load_ms("a") == 600 and e.run_ms("a") == 30
    e.seed("a", 1, 1)  # measured already: a seed does not override
    assert e.load_ms("a") == 600


def test_every_error_class_has_a_status_and_code() -> None:
    """Each class of the exception tree maps to an HTTP status and a distinct code."""
    classes = all_error_classes()
    assert len(classes) >= 15
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert 400 <= cls.status < 600, cls
    assert TaskFailed("MODEL_NOT_FOUND", "x").http_status == 404
    assert TaskFailed("INFERENCE_FAILED", "x").http_status == 502
    assert DispatcherError("boom").to_json() == {"error": "internal", "detail": "boom"}


def test_config_env_and_flags() -> None:
    """Environment variables set defaults, RANDOM_DISPATCH selects random, flags win."""
    env = {"DISPATCHER_PORT": "9000", "RANDOM_DISPATCH": "true", "DISPATCHER_MAX_QUEUE": "5"}
    cfg = Config.from_env(env)
    assert (cfg.port, cfg.policy, cfg.max_queue) == (9000, "random", 5)
    cfg = config_from_args(["--policy", "routed", "--task-timeout-s", "2.5"], env)
    assert (cfg.policy, cfg.task_timeout_s, cfg.port) == ("routed", 2.5, 9000)
    assert config_from_args(["--reject-without-workers"], {}).reject_without_workers is True
    with pytest.raises(ValueError, match="max_attempts"):
        Config(max_attempts=0)
    with pytest.raises(ValueError, match="^DISPATCHER_MAX_QUEUE='many' is not an int$"):
        Config.from_env({"DISPATCHER_MAX_QUEUE": "many"})
