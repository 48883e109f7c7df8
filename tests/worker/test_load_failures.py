"""A model whose load fails, through a real tritonserver: a clean message, and what Hello says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmark.models import register_label
from tests.support import scaled
from tests.worker.conftest import LABELS
from worker.config import Config
from worker.engines.onnxruntime import OnnxRuntimeEngine
from worker.engines.simulated import SimulatedEngine
from worker.engines.triton import TritonEngine
from worker.errors import ModelLoadError, public_message
from worker.repository import ModelRepository
from worker.runtime import Worker

BROKEN_MODEL_PY = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this model is broken on purpose")
"""


def broken_repository(model_repository: Path, tmp_path: Path) -> Path:
    """A repository with one good label and `broken`, whose model.py raises in initialize."""
    repo = tmp_path / "repo"
    register_label(model_repository / LABELS[0], repo, LABELS[0])
    register_label(model_repository / LABELS[0], repo, "broken")
    model_py = repo / "broken" / "1" / "model.py"
    model_py.unlink()  # it may be a hard link into the shared conversion: never write through
    model_py.write_text(BROKEN_MODEL_PY)
    return repo


@pytest.mark.triton
async def test_broken_model_fails_with_a_clean_message(
    model_repository: Path, tmp_path: Path
) -> None:
    """Triton's load error reaches callers without a traceback or a server path."""
    repo = broken_repository(model_repository, tmp_path)
    engine = TritonEngine(ModelRepository(repo), state_dir=tmp_path / "triton")
    await asyncio.wait_for(engine.start(), scaled(60))
    try:
        with pytest.raises(ModelLoadError) as caught:
            await engine.load("broken")
        message = public_message(caught.value)
        assert "broken" in message
        assert "Traceback" not in message and "\n" not in message
        assert str(tmp_path) not in message and str(repo) not in message
        await engine.load(LABELS[0])  # the server keeps serving the good model
    finally:
        await engine.stop()


def test_public_message_keeps_the_what_and_drops_the_where() -> None:
    exc = ModelLoadError(
        "triton could not load 'm': failed to load '/srv/models/m/1/model.onnx'\n"
        'Traceback (most recent call last):\n  File "/srv/x.py", line 3'
    )
    assert public_message(exc) == "triton could not load 'm': failed to load '<path>'"
    assert len(public_message(ModelLoadError("x" * 5000))) == 300


def test_hello_declares_the_repository_or_any_label(model_repository: Path, tmp_path: Path) -> None:
    """A repository engine lists its models; the simulated engine serves any label."""
    config = Config(worker_id="w1", engine="onnxruntime", model_repository=model_repository)
    worker = Worker(config, engine=OnnxRuntimeEngine(ModelRepository(model_repository)))
    hello = worker.hello()
    assert hello.servable_only and sorted(hello.servable) == sorted(LABELS)
    simulated = Worker(Config(worker_id="w2", engine="simulated"), engine=SimulatedEngine())
    hello = simulated.hello()
    assert not hello.servable_only and list(hello.servable) == []
