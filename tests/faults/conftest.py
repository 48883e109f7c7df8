"""Fixtures of the fault suite: a killable cluster, and the worker tests' real model repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.config import Config
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.faults.cluster import SimCluster
from tests.support import ProcessFactory
from tests.worker.conftest import model_repository  # noqa: F401  (session fixture, reused)


@pytest.fixture
def cluster(processes: ProcessFactory, tmp_path: Path) -> Iterator[SimCluster]:
    """A cluster with no process started yet; every child is stopped at teardown."""
    yield SimCluster(processes, tmp_path)


@pytest.fixture
def dispatchers() -> Iterator[Callable[..., RunningDispatcher]]:
    """Starts in-process dispatchers (`dispatchers(**config_fields)`), stopped at teardown."""
    started: list[RunningDispatcher] = []

    def start(**fields: Any) -> RunningDispatcher:
        started.append(start_dispatcher(Config(**fields)))
        return started[-1]

    yield start
    for running in started:
        running.stop()
