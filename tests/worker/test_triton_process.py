"""The tritonserver supervisor: command line, private backends, start failures, config choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import scaled
from tests.worker.conftest import LABELS
from worker.engines.triton import TritonEngine
from worker.engines.triton_process import TritonProcess, TritonState, find_binary
from worker.errors import EngineUnavailableError, IllegalTransitionError, ModelLoadError
from worker.repository import ModelRepository


def test_command_line_and_private_backends(tmp_path: Path) -> None:
    """Explicit model control, local HTTP only, and the stub linked into a private backends dir
    (site-packages untouched)."""
    from worker.engines.triton_process import prepare_backends

    binary = find_binary(None)
    proc = TritonProcess(binary, tmp_path / "repo", tmp_path / "state", "onnxruntime")
    proc.http_port = 8123
    backends = prepare_backends(binary, tmp_path / "state")
    args = proc.command(backends)
    assert "--model-control-mode=explicit" in args
    assert "--http-address=127.0.0.1" in args and "--http-port=8123" in args
    assert "--model-config-name=onnxruntime" in args
    assert "--disable-auto-complete-config" in args
    stub = backends / "python" / "triton_python_backend_stub"
    assert stub.is_symlink() and stub.resolve().is_file()
    assert (backends / "python" / "libtriton_python.so").exists()
    python_proc = TritonProcess(binary, tmp_path / "repo", tmp_path / "state")
    assert not any(a.startswith("--model-config-name") for a in python_proc.command(backends))


def test_illegal_process_transition_raises(tmp_path: Path) -> None:
    """The supervisor's state machine refuses a jump from STOPPED to READY."""
    proc = TritonProcess(find_binary(None), tmp_path, tmp_path)
    with pytest.raises(IllegalTransitionError, match="stopped -> ready"):
        proc._set(TritonState.READY)


@pytest.mark.triton
async def test_start_failure_is_engine_unavailable_with_log(tmp_path: Path) -> None:
    """A tritonserver that exits at start-up (missing repository) → EngineUnavailableError
    naming the log, which holds Triton's own error."""
    proc = TritonProcess(find_binary(None), tmp_path / "no-such-repo", tmp_path / "state")
    with pytest.raises(EngineUnavailableError, match="tritonserver exited"):
        await asyncio.wait_for(proc.start(), scaled(60))
    assert proc.state is TritonState.FAILED
    assert "no-such-repo" in proc.log_path.read_text()


@pytest.mark.triton
async def test_onnxruntime_model_config_is_selected_by_configuration(
    model_repository: Path, tmp_path: Path
) -> None:
    """`--triton-model-config onnxruntime` makes Triton read configs/onnxruntime.pbtxt: on the
    PyTriton build (no ONNX Runtime backend) the load fails as MODEL_LOAD_FAILED naming it."""
    engine = TritonEngine(
        ModelRepository(model_repository), state_dir=tmp_path / "t", model_config="onnxruntime"
    )
    await asyncio.wait_for(engine.start(), scaled(60))
    try:
        with pytest.raises(ModelLoadError, match="onnxruntime"):
            await engine.load(LABELS[0])
        assert engine.healthy()
    finally:
        await engine.stop()
