"""Render the chart offline, as `helm template` would, where no helm binary is installed.

Uses Helm's own engine (the Helm v4 Go SDK in the `helm-python-sdk` wheel, a dev dependency):

    python charts/render.py [-f my-values.yaml]... [--release NAME] [--namespace NS]

Prints the manifests in `helm template` form (`---` and `# Source:` before each template).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART_DIR = Path(__file__).resolve().parent / "smart-routing"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base` (later -f files win, as in helm)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render_text(values: dict[str, Any], release: str, namespace: str) -> str:
    """The rendered chart as one multi-document YAML text (NOTES.txt left out)."""
    helm_python.disable_logging()
    with helm_python.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    parts = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    parser.add_argument("--release", default="smart-routing")
    parser.add_argument("--namespace", default="smart-routing")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        values = _merge(values, yaml.safe_load(path.read_text()) or {})
    try:
        sys.stdout.write(render_text(values, args.release, args.namespace))
    except helm_python.HelmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
