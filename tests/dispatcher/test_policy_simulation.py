"""The policies on the benchmark's reference scenarios, driving the REAL dispatcher core.

No sockets and no sleeping: `benchmark.simulation` runs the real `Core`, `Admission`, policy,
registry, queue and estimates in virtual time, with workers modelled as in the simulated
engine (load ~270 ms, run ~10 ms, LRU cache honouring evict hints). Two workers of capacity 2,
2,400 requests from two closed-loop producers, labels uniform (docs/architecture.md §8).
"""

from __future__ import annotations

import random

import pytest

from benchmark.simulation import Outcome, Simulation, closed_loop
from dispatcher.config import Config


def simulate(
    policy_name: str,
    labels: int,
    wait_avg: float,
    wait_sd: float,
    seed: int = 1,
    cold_wait_ms: float = 0.0,
) -> Outcome:
    config = Config(policy=policy_name, task_timeout_s=300.0, cold_wait_ms=cold_wait_ms)
    sim = Simulation(config, workers=2, seed=seed + 2)
    trace = random.Random(seed + 1)
    closed_loop(
        sim,
        (f"label-{trace.randrange(labels)}" for _ in range(2400)),
        producers=2,
        wait_avg_s=wait_avg,
        wait_stddev_s=wait_sd,
        rng=random.Random(seed),
    )
    return sim.run()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_over_capacity_routed_beats_random(seed: int) -> None:
    """5 labels on 4 slots: routed misses about 1 in 5 (target <= 505), random about 3 in 5."""
    routed = simulate("routed", labels=5, wait_avg=2.5, wait_sd=1.0, seed=seed)
    random_ = simulate("random", labels=5, wait_avg=2.5, wait_sd=1.0, seed=seed)
    assert routed.completed == random_.completed == 2400
    assert routed.misses <= 505, routed
    assert random_.misses > 1200, random_
    assert routed.avg_runtime_s < random_.avg_runtime_s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_at_capacity_routed_converges_to_no_misses(seed: int) -> None:
    """4 labels on 4 slots: routed loads each label once (target <= 12 misses)."""
    routed = simulate("routed", labels=4, wait_avg=0.75, wait_sd=1.0, seed=seed)
    random_ = simulate("random", labels=4, wait_avg=0.75, wait_sd=1.0, seed=seed)
    assert routed.completed == 2400
    assert routed.misses <= 12, routed
    assert random_.misses > 900, random_


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_cold_wait_keeps_the_reference_scenarios(seed: int) -> None:
    """With a cold wait (a task for a label nobody holds waits up to 500 ms for a cheap
    place), every task is still answered and both reference targets still hold."""
    over = simulate("routed", labels=5, wait_avg=2.5, wait_sd=1.0, seed=seed, cold_wait_ms=500)
    at = simulate("routed", labels=4, wait_avg=0.75, wait_sd=1.0, seed=seed, cold_wait_ms=500)
    assert over.completed == at.completed == 2400
    assert over.misses <= 505, over
    assert at.misses <= 12, at


def test_the_simulation_counts_what_the_core_counts() -> None:
    """The outcome the simulation records agrees with the core's own statistics."""
    sim = Simulation(Config(), workers=2, seed=5)
    trace = random.Random(6)
    closed_loop(sim, (f"l{trace.randrange(5)}" for _ in range(300)), 2, 0.5, 0.2, random.Random(7))
    outcome = sim.run()
    counters = sim.stats.counters
    assert outcome.completed == counters.completed == 300
    assert outcome.misses == counters.misses == sum(link.loads for link in sim.links)
    assert not sim.core.queue and not sim.core.running
