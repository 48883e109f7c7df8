"""Cheap early checks of a task's parameters, so obviously oversized tasks never reach a worker.

The worker validates parameters again (it owns the task types); the dispatcher only refuses
what no worker would accept: nesting deeper than `max_json_depth`, more than `max_texts` texts,
a text longer than `max_text_chars`. Each refusal is a `ValidationFailed` (422) naming the field.
`CallerLimits` counts unfinished tasks per caller (429 `CallerBusy` past the limit).
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.errors import CallerBusy, ValidationFailed


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `[]` and `{}` are 1); iterative."""
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


def loads_bounded(raw: str | bytes, field: str) -> Any:
    """`json.loads`, with nesting too deep for Python's parser reported as a 422, not a crash."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValidationFailed({"field": field, "message": "JSON nested too deeply"}) from None


def check_parameters(
    parameters: Any, max_depth: int, max_texts: int, max_text_chars: int, field: str
) -> None:
    """Raise `ValidationFailed` when the parameters are deeper or bigger than allowed."""
    depth = json_depth(parameters)
    if depth > max_depth:
        raise ValidationFailed(
            {"field": field, "message": f"nested {depth} deep, more than {max_depth}"}
        )
    if not isinstance(parameters, dict):
        return
    texts = parameters.get("texts")
    if not isinstance(texts, list):
        return
    if len(texts) > max_texts:
        raise ValidationFailed(
            {"field": f"{field}.texts", "message": f"{len(texts)} texts, more than {max_texts}"}
        )
    for index, text in enumerate(texts):
        if isinstance(text, str) and len(text) > max_text_chars:
            raise ValidationFailed(
                {
                    "field": f"{field}.texts[{index}]",
                    "message": f"{len(text)} characters, more than {max_text_chars}",
                }
            )


class CallerLimits:
    """Unfinished tasks per caller, against `max_tasks_per_caller` (0: no limit, no counting)."""

    def __init__(self, limit: int, retry_after_s: float) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.counts: dict[str, int] = {}

    def admit(self, caller: str | None) -> str | None:
        """Count a new task of `caller`; raise `CallerBusy` (429) at the limit. Returns the key
        to `release` when the task finishes (None when nothing was counted)."""
        if caller is None or not self.limit:
            return None
        count = self.counts.get(caller, 0)
        if count >= self.limit:
            raise CallerBusy(
                f"this caller has {count} unfinished tasks (limit {self.limit})",
                retry_after_s=self.retry_after_s,
            )
        self.counts[caller] = count + 1
        return caller

    def release(self, caller: str) -> None:
        """A counted task finished."""
        left = self.counts.get(caller, 1) - 1
        if left > 0:
            self.counts[caller] = left
        else:
            self.counts.pop(caller, None)
