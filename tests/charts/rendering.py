"""Render the Helm chart with the real Helm engine and look through what it produced.

The engine is Helm's own Go SDK (v4) from the `helm-python-sdk` wheel (`helm_python`):
the same template functions, values coalescing, values.schema.json validation and `fail`
handling as `helm template`, offline (no cluster; `lookup` returns nothing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

from tests.support import ROOT

# The Go library logs template `fail` calls to stderr; the exceptions carry the message.
helm_python.disable_logging()

CHART_DIR = ROOT / "charts" / "smart-routing"
RELEASE = "demo"
NAMESPACE = "ml"


@dataclass(frozen=True)
class Rendered:
    """The manifests of one render, keyed by template, plus the NOTES.txt text."""

    manifests: tuple[dict[str, Any], ...]
    notes: str
    sources: Mapping[str, str]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every manifest of `kind`."""
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        """The manifest of `kind` named `name`; fails the test when absent or repeated."""
        found = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} in {self.kinds()}"
        return found[0]

    def kinds(self) -> list[str]:
        """`Kind/name` of every manifest, for assertion messages."""
        return [f"{m['kind']}/{m['metadata']['name']}" for m in self.manifests]


def render(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> Rendered:
    """Render the chart as `helm template demo charts/smart-routing -n ml` would."""
    with helm_python.Chart.load(chart_dir) as chart:
        sources = chart.render(
            dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    manifests: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(sources.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(manifests=tuple(manifests), notes=notes, sources=sources)


def containers(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers of a workload's pod template."""
    return list(manifest["spec"]["template"]["spec"]["containers"])


def env_of(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries keyed by name (each entry kept whole)."""
    env = container.get("env", [])
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e for e in env}


def workloads(rendered: Rendered) -> Iterator[dict[str, Any]]:
    """Every Deployment and StatefulSet."""
    for kind in ("Deployment", "StatefulSet"):
        yield from rendered.all(kind)
