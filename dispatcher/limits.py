"""Cheap early checks of a task's parameters, so obviously bad tasks never reach a worker.

The rules are those of `smartrouting.texts`, which the worker applies again (it owns the task
types): nesting deeper than `max_json_depth`, and for `embed_texts` (or any `texts` list) the
texts rules: a non-empty list of at most `max_texts` strings of at most `max_text_chars`
characters. Each refusal is a `ValidationFailed` (422) naming the field.
`CallerLimits` counts unfinished tasks per caller (429 `CallerBusy` past the limit).
"""

from __future__ import annotations

from typing import Any

from dispatcher.errors import CallerBusy, ValidationFailed
from smartrouting.texts import (
    EMBED_TEXTS,
    Problem,
    TextLimits,
    depth_problem,
    embed_problem,
    json_depth,
    texts_problem,
)

__all__ = ["CallerLimits", "check_parameters", "json_depth"]


def check_parameters(
    parameters: Any,
    max_depth: int,
    max_texts: int,
    max_text_chars: int,
    field: str,
    task_type: str | None = None,
) -> None:
    """Raise `ValidationFailed` naming `field` (or a path below it) when the parameters break
    the shared rules: too deep; for `embed_texts` any rule of its parameters; for another
    task type, the texts rules when it passes a `texts` list."""
    limits = TextLimits(max_texts, max_text_chars, max_depth)
    problem: Problem | None = depth_problem(parameters, max_depth)
    if problem is None and isinstance(parameters, dict):
        if task_type == EMBED_TEXTS:
            problem = embed_problem(parameters, limits)
        elif isinstance(parameters.get("texts"), list):
            # A task type the dispatcher does not know: only the texts it clearly passes.
            problem = texts_problem(parameters["texts"], limits)
    if problem is not None:
        raise ValidationFailed({"field": problem.field(field), "message": problem.message})


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
