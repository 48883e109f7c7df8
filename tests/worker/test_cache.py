"""The model cache: LRU, the dispatcher's evict hint, states and capacity (no I/O)."""

from __future__ import annotations

import pytest

from worker.cache import CacheFullError, ModelCache, ModelState
from worker.errors import IllegalTransitionError


def _cache(capacity: int, *ready: str) -> ModelCache:
    cache = ModelCache(capacity)
    for label in ready:
        cache.begin_load(label)
        cache.finish_load(label, 100.0)
    return cache


@pytest.mark.parametrize(
    ("capacity", "ready", "used", "label", "hint", "victims"),
    [
        # room left: nothing to evict
        (2, ["a"], [], "b", [], []),
        # already held: nothing to evict
        (2, ["a", "b"], [], "a", [], []),
        # full: least recently loaded goes
        (2, ["a", "b"], [], "c", [], ["a"]),
        # full, "a" used since: "b" is now least recently used
        (2, ["a", "b"], ["a"], "c", [], ["b"]),
        # the dispatcher's hint beats LRU
        (2, ["a", "b"], [], "c", ["b"], ["b"]),
        # a hint naming a label we do not hold is ignored
        (2, ["a", "b"], [], "c", ["zzz"], ["a"]),
        # first usable hinted label wins, in the hint's order
        (3, ["a", "b", "c"], [], "d", ["c", "a"], ["c"]),
        # capacity 1: whatever is held goes
        (1, ["a"], [], "b", [], ["a"]),
    ],
)
def test_plan_load_table(
    capacity: int,
    ready: list[str],
    used: list[str],
    label: str,
    hint: list[str],
    victims: list[str],
) -> None:
    """plan_load picks hinted victims first, then the least recently used, only when full."""
    cache = _cache(capacity, *ready)
    for u in used:
        cache.touch(u)
    assert cache.plan_load(label, hint) == victims


def test_in_use_label_is_never_a_victim() -> None:
    """A label a running task holds is skipped, even when hinted."""
    cache = _cache(2, "a", "b")
    cache.acquire("a")
    assert cache.plan_load("c", ["a"]) == ["b"]


def test_no_evictable_label_raises() -> None:
    """When every held label is busy, plan_load refuses instead of overfilling."""
    cache = _cache(2, "a")
    cache.begin_load("b")  # loading: not evictable
    cache.acquire("a")
    with pytest.raises(CacheFullError, match="cannot make room for 'c'"):
        cache.plan_load("c")


def test_unloading_label_still_counts_against_capacity() -> None:
    """Memory is not free until the unload finishes, so the slot is still taken."""
    cache = _cache(2, "a", "b")
    cache.begin_unload("a")
    assert cache.plan_load("c") == ["b"]
    cache.finish_unload("a")
    assert cache.plan_load("c") == []


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["finish_load"], "absent -> ready not allowed"),
        (["begin_unload"], "absent -> unloading not allowed"),
        (["begin_load", "begin_load"], "loading -> loading not allowed"),
        (["begin_load", "begin_unload"], "loading -> unloading not allowed"),
        (["begin_load", "finish_load", "finish_load"], "ready -> ready not allowed"),
        (["begin_load", "finish_load", "finish_unload"], "ready -> absent not allowed"),
    ],
)
def test_illegal_transitions_raise(steps: list[str], message: str) -> None:
    """Every move outside the state machine raises IllegalTransitionError with its names."""
    cache = ModelCache(2)
    *ok, bad = steps
    calls = {
        "begin_load": lambda: cache.begin_load("m"),
        "finish_load": lambda: cache.finish_load("m", 1.0),
        "fail_load": lambda: cache.fail_load("m"),
        "begin_unload": lambda: cache.begin_unload("m"),
        "finish_unload": lambda: cache.finish_unload("m"),
    }
    for step in ok:
        calls[step]()
    with pytest.raises(IllegalTransitionError, match=message):
        calls[bad]()


def test_full_lifecycle_and_counters() -> None:
    """absent → loading → ready → unloading → absent, with misses and costs recorded."""
    cache = ModelCache(2)
    cache.begin_load("m")
    assert cache.state("m") is ModelState.LOADING
    cache.finish_load("m", 300.0)
    assert cache.state("m") is ModelState.READY
    assert cache.ready == ["m"]
    cache.record_run("m", 10.0)
    cache.record_run("m", 20.0)
    assert cache.misses == 1
    assert cache.costs["m"].load_ms == 300.0
    assert cache.costs["m"].run_ms == pytest.approx(13.0)
    cache.begin_unload("m")
    assert cache.labels(ModelState.UNLOADING) == ["m"]
    cache.finish_unload("m")
    assert cache.state("m") is None


def test_unload_while_in_use_and_bad_release_raise() -> None:
    """A label in use cannot start unloading; releasing more than acquired is a bug."""
    cache = _cache(1, "m")
    cache.acquire("m")
    with pytest.raises(IllegalTransitionError, match="while in use"):
        cache.begin_unload("m")
    cache.release("m")
    with pytest.raises(IllegalTransitionError, match="released more often"):
        cache.release("m")


def test_acquire_requires_ready() -> None:
    """A task cannot run on a label that is still loading."""
    cache = ModelCache(1)
    cache.begin_load("m")
    with pytest.raises(IllegalTransitionError, match="cannot run while loading"):
        cache.acquire("m")


def test_clear_and_adopt() -> None:
    """clear() forgets everything (engine restart); adopt() records labels already loaded."""
    cache = _cache(2, "a", "b")
    assert sorted(cache.clear()) == ["a", "b"]
    assert cache.ready == []
    cache.adopt(["x"])
    assert cache.state("x") is ModelState.READY


def test_capacity_must_be_positive() -> None:
    """A cache that can hold nothing is a configuration error."""
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        ModelCache(0)
