"""Fixtures of the fault suite: a killable cluster, and the worker tests' real model repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import SimCluster
from tests.support import ProcessFactory
from tests.worker.conftest import model_repository  # noqa: F401  (session fixture, reused)


@pytest.fixture
def cluster(processes: ProcessFactory, tmp_path: Path) -> Iterator[SimCluster]:
    """A cluster with no process started yet; every child is stopped at teardown."""
    yield SimCluster(processes, tmp_path)
