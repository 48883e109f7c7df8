"""Packaging: the layout docs/architecture.md §1.3 requires and the weight of each install."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HEAVY = {"torch", "onnxruntime", "onnxruntime-gpu", "sentence-transformers", "transformers"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, following installed metadata."""
    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        req = pending.pop()
        name = _normal(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist_requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in dist_requires:
            sub = Requirement(text)
            # Follow the unconditional requirements and the extras the parent asked for.
            env = {"extra": next(iter(req.extras), "")}
            if sub.marker is None or sub.marker.evaluate(env):
                pending.append(sub)
    return seen


def test_top_level_layout_exists() -> None:
    """The entries docs/architecture.md §1.3 marks as required are present."""
    for entry in [
        "pyproject.toml",
        "Taskfile.yml",
        "README.md",
        "proto",
        "dispatcher",
        "worker",
        "uploader",
        "benchmark",
        "charts",
        "tests",
        ".ci/run",
    ]:
        assert (ROOT / entry).exists(), entry


def test_dispatcher_install_pulls_no_torch_and_no_onnxruntime() -> None:
    """The base install (the dispatcher) needs neither torch nor onnxruntime, transitively."""
    closure = _closure(PYPROJECT["project"]["dependencies"])
    assert "uvicorn" in closure and "starlette" in closure  # the walk really followed them
    assert not closure & HEAVY, closure & HEAVY


def test_gpu_and_cpu_onnxruntime_are_separate_extras() -> None:
    """onnxruntime and onnxruntime-gpu must never be installed together by one extra."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    for name, requirements in extras.items():
        names = {_normal(Requirement(r).name) for r in requirements}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, name


@pytest.mark.parametrize("package", ["dispatcher", "worker", "uploader", "benchmark"])
def test_entry_point_help(package: str) -> None:
    """`python -m <package> --help` works and mentions its environment variables."""
    done = subprocess.run(
        [sys.executable, "-m", package, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
