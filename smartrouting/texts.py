"""The rules of task parameters that both the dispatcher and the worker apply, written once.

The dispatcher applies them on the way in (a 422 before anything is queued) and the worker
again before it loads a model (its own `INVALID_PARAMETERS` error), so a worker reached
another way is just as safe. Each check returns a `Problem` (where, and what) or None; each
side wraps the problem in its own error type. Pure functions, no I/O (docs/architecture.md).

`embed_texts` parameters: `{"texts": [str, ...], "normalize": bool}`, `texts` non-empty, at
most `max_texts` items of at most `max_text_chars` characters each, `normalize` optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The task type whose parameters these rules describe.
EMBED_TEXTS = "embed_texts"
#: The parameters `embed_texts` takes; any other key is refused.
EMBED_PARAMETERS = ("texts", "normalize")


@dataclass(frozen=True)
class TextLimits:
    """Bounds on the texts of one task, and on the nesting of its parameters JSON."""

    max_texts: int = 256
    max_text_chars: int = 20_000
    max_json_depth: int = 32


@dataclass(frozen=True)
class Problem:
    """What is wrong with a task's parameters.

    `path` locates the offending value inside the parameters object (`"texts"`,
    `"texts[3]"`; `""` for the object itself); `message` says what is wrong with it.
    """

    path: str
    message: str

    def field(self, root: str) -> str:
        """The path below a named root: `field("parameters")` -> `"parameters.texts[3]"`."""
        return f"{root}.{self.path}" if self.path else root

    def __str__(self) -> str:
        return f"'{self.path}' {self.message}" if self.path else self.message


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `[]` and `{}` are 1); iterative,
    so a value nested past Python's recursion limit is measured without crashing."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def depth_problem(value: Any, max_depth: int) -> Problem | None:
    """A problem when `value` is nested deeper than `max_depth`."""
    depth = json_depth(value)
    if depth > max_depth:
        return Problem("", f"nested {depth} deep, more than {max_depth}")
    return None


def texts_problem(texts: Any, limits: TextLimits) -> Problem | None:
    """A problem unless `texts` is a non-empty list of at most `max_texts` strings of at
    most `max_text_chars` characters each."""
    if not isinstance(texts, list) or not texts:
        return Problem("texts", "must be a non-empty list of strings")
    if len(texts) > limits.max_texts:
        return Problem("texts", f"has {len(texts)} items; at most {limits.max_texts}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            return Problem(f"texts[{i}]", f"is {type(text).__name__}, not a string")
        if len(text) > limits.max_text_chars:
            return Problem(
                f"texts[{i}]", f"has {len(text)} characters; at most {limits.max_text_chars}"
            )
    return None


def embed_problem(params: Mapping[str, Any], limits: TextLimits) -> Problem | None:
    """A problem with the parameters object of an `embed_texts` task, or None."""
    unknown = sorted(set(params) - set(EMBED_PARAMETERS))
    if unknown:
        return Problem("", f"unknown parameter(s): {unknown}")
    problem = texts_problem(params.get("texts"), limits)
    if problem is not None:
        return problem
    if not isinstance(params.get("normalize", True), bool):
        return Problem("normalize", "must be true or false")
    return None
