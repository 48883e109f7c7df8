"""values.yaml documents every value, and the values a user must set are in the guide."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from tests.charts.rendering import CHART_DIR
from tests.support import ROOT

VALUES = CHART_DIR / "values.yaml"
GUIDE = ROOT / "docs" / "kubernetes.md"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?:\s|$)")


@dataclass(frozen=True)
class ValueLine:
    """One `key:` line of values.yaml and whether a comment sits right above it."""

    path: str
    documented: bool
    comment: str


def _value_lines(text: str) -> list[ValueLine]:
    """Keys of the block-style values.yaml with their dotted paths (list items are data)."""
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    found: list[ValueLine] = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        comment: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.insert(0, lines[above].strip().lstrip("#").strip())
            above -= 1
        found.append(ValueLine(".".join(k for _, k in stack), bool(comment), " ".join(comment)))
    return found


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        paths: list[str] = []
        for key, child in node.items():
            paths.extend(_leaf_paths(child, f"{prefix}.{key}" if prefix else str(key)))
        return paths
    return [prefix]


def test_scanner_sees_every_value() -> None:
    """The line scanner finds every leaf value YAML finds, so the next test checks them all."""
    scanned = {v.path for v in _value_lines(VALUES.read_text())}
    leaves = set(_leaf_paths(yaml.safe_load(VALUES.read_text())))
    assert leaves and leaves <= scanned


def test_every_value_is_documented() -> None:
    """Each leaf value has a comment above it or above the block it belongs to."""
    lines = {v.path: v for v in _value_lines(VALUES.read_text())}
    undocumented = []
    for leaf in _leaf_paths(yaml.safe_load(VALUES.read_text())):
        parts = leaf.split(".")
        ancestors = [".".join(parts[: i + 1]) for i in range(len(parts))]
        if not any(lines[a].documented for a in ancestors):
            undocumented.append(leaf)
    assert undocumented == []


def test_values_a_user_must_set_are_in_the_guide() -> None:
    """Every value marked "SET ME" in values.yaml is named in docs/kubernetes.md."""
    must_set = [v.path for v in _value_lines(VALUES.read_text()) if "SET ME" in v.comment]
    assert len(must_set) >= 4  # the three images and the storage class at least
    guide = GUIDE.read_text()
    missing = [path for path in must_set if f"`{path}`" not in guide]
    assert missing == []
