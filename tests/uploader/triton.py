"""A minimal real tritonserver for the uploader's tests (the PyTriton wheel's Triton 2.51).

Self-contained on purpose: it checks that what the uploader writes loads in a real Triton,
independently of the worker's production supervisor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port, scaled, wait_for_http


def pytriton_dir() -> Path | None:
    """The PyTriton wheel's tritonserver directory, or None when it is not installed."""
    try:
        import pytriton
    except ImportError:
        return None
    path = Path(pytriton.__file__).parent / "tritonserver"
    return path if (path / "bin" / "tritonserver").is_file() else None


def make_backends(target: Path) -> Path:
    """A private backends directory: the Python backend plus the stub for this Python."""
    source = pytriton_dir()
    assert source is not None, "nvidia-pytriton is not installed"
    python = target / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(source / "backends" / "python" / name, python / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return target


@dataclass
class Triton:
    """A running tritonserver in explicit model-control mode."""

    process: subprocess.Popen[bytes]
    http_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_triton(repository: Path, workdir: Path) -> Iterator[Triton]:
    """Start tritonserver on `repository`, wait until ready, stop it (TERM, then KILL)."""
    source = pytriton_dir()
    assert source is not None, "nvidia-pytriton is not installed"
    backends = make_backends(workdir / "backends")
    http_port, grpc_port = free_port(), free_port()
    log_path = workdir / "tritonserver.log"
    env = dict(os.environ)
    # The Python backend stub imports numpy and onnxruntime from this environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = [source / "external_libs", source.parent.parent / "nvidia_pytriton.libs"]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(p) for p in libs if p.is_dir()] + [env.get("LD_LIBRARY_PATH", "")]
    ).rstrip(os.pathsep)
    command = [
        str(source / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--disable-auto-complete-config",
    ]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    triton = Triton(process, http_port, log_path)
    try:
        try:
            wait_for_http(f"http://{triton.url}/v2/health/ready", timeout=60)
        except TimeoutError as exc:
            raise AssertionError(f"tritonserver did not start:\n{triton.log()}") from exc
        yield triton
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(scaled(30))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(scaled(30))
