"""charts/render.py, the `task helm-template` fallback where no helm binary is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.support import ROOT


def _render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "charts" / "render.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_render_cli_prints_every_manifest_with_values_files(tmp_path: Path) -> None:
    """-f files merge in order (later wins), and the output is the manifests as YAML."""
    first = tmp_path / "a.yaml"
    first.write_text("autoscaling: {enabled: true, maxReplicas: 3}\nworkers: {capacity: 4}\n")
    second = tmp_path / "b.yaml"
    second.write_text("autoscaling: {maxReplicas: 5}\n")
    result = _render("-f", str(first), "-f", str(second), "--release", "r1", "--namespace", "n1")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 5
    assert by_kind["StatefulSet"]["metadata"]["name"] == "r1-smart-routing-worker"
    assert "# Source: smart-routing/templates/worker.yaml" in result.stdout


def test_render_cli_fails_with_the_chart_message(tmp_path: Path) -> None:
    """A bad value exits 1 with Helm's message naming it on stderr and nothing on stdout."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("dispatcher: {policy: fastest}\n")
    result = _render("-f", str(bad))
    assert result.returncode == 1
    assert "/dispatcher/policy': value must be one of" in result.stderr
    assert result.stdout == ""
