"""The SIMULATED engine (benchmarks only): seeded, clipped, scaled costs."""

from __future__ import annotations

import time

import pytest

from worker.engines.simulated import DEFAULT_LOAD_MS, SIMULATED_DIMENSION, SimulatedEngine
from worker.errors import ModelNotFoundError


def test_same_seed_same_costs() -> None:
    """Two engines with one seed draw the same sequence; another seed differs."""
    a, b, c = SimulatedEngine(seed=1), SimulatedEngine(seed=1), SimulatedEngine(seed=2)
    draws_a = [a.draw(100, 30) for _ in range(20)]
    assert draws_a == [b.draw(100, 30) for _ in range(20)]
    assert draws_a != [c.draw(100, 30) for _ in range(20)]


def test_draws_are_clipped_at_zero_and_scaled() -> None:
    """Negative draws become 0; time_scale multiplies; mean is about right."""
    engine = SimulatedEngine(seed=3, time_scale=0.5)
    draws = [engine.draw(10, 100) for _ in range(2000)]
    assert min(draws) == 0.0
    assert all(d >= 0 for d in draws)
    fixed = SimulatedEngine(seed=3, time_scale=0.5)
    assert fixed.draw(200, 0) == pytest.approx(0.1)
    normal = SimulatedEngine(seed=4)
    mean = sum(normal.draw(100, 10) for _ in range(2000)) / 2000
    assert mean == pytest.approx(0.1, rel=0.02)


def test_defaults_are_the_measured_costs() -> None:
    """Without overrides the load cost is the measured Triton load."""
    assert SimulatedEngine().load_ms == DEFAULT_LOAD_MS


async def test_load_sleeps_and_sample_reports() -> None:
    """load() takes about load_ms × time_scale; sample_task returns its result shape."""
    engine = SimulatedEngine(load_ms=200, load_stddev_ms=0, run_ms=5, time_scale=0.25, seed=0)
    await engine.start()
    started = time.perf_counter()
    await engine.load("m1")
    elapsed = time.perf_counter() - started
    assert 0.045 <= elapsed < 1.0
    assert engine.loaded == {"m1"}
    result = await engine.sample("m1", 8)
    assert result == {"label": "m1", "simulated": True, "run_ms": pytest.approx(2.0)}
    await engine.unload("m1")
    assert engine.loaded == set()


async def test_embed_is_deterministic_unit_vectors() -> None:
    """Fake embeddings: right dimension, unit norm, same text → same vector."""
    engine = SimulatedEngine(run_ms=0, run_stddev_ms=0)
    vectors, dim = await engine.embed("m", ["a", "b", "a"], True)
    assert dim == SIMULATED_DIMENSION == len(vectors[0])
    assert vectors[0] == vectors[2] != vectors[1]
    assert sum(v * v for v in vectors[1]) == pytest.approx(1.0)


def test_missing_label_is_model_not_found() -> None:
    """Labels starting with `missing` (and invalid names) do not exist."""
    engine = SimulatedEngine()
    with pytest.raises(ModelNotFoundError):
        engine.check_label("missing-model")
    with pytest.raises(ModelNotFoundError):
        engine.check_label("../etc")
