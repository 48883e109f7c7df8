"""Task types the worker runs: parameter validation and execution on an engine.

`embed_texts`: `{"texts": ["...", ...], "normalize": true}` →
`{"embeddings": [[float, ...], ...], "dimension": D, "model": "<label>",
"usage": {"prompt_tokens": N, "total_tokens": N}}`, N the tokens the model's tokenizer made of
the texts (after truncation; `usage` is absent for an engine without a tokenizer).
`sample_task`: `{}` or `{"run_ms": 5}` → `{"label", "simulated": true, "run_ms"}`.
(docs/interfaces.md section 4). Validation happens before any model is loaded, so a
bad task costs no load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from smartrouting.texts import EMBED_TEXTS, TextLimits, depth_problem, embed_problem
from worker.engines.base import Engine
from worker.errors import InvalidParametersError, UnknownTaskTypeError

TASK_TYPES = (EMBED_TEXTS, "sample_task")


@dataclass(frozen=True)
class Limits:
    """Bounds on task parameters."""

    max_texts: int = 256
    max_text_chars: int = 20_000
    max_run_ms: float = 600_000.0
    max_json_depth: int = 32

    @property
    def texts(self) -> TextLimits:
        """The bounds the shared parameter rules (`smartrouting.texts`) take."""
        return TextLimits(self.max_texts, self.max_text_chars, self.max_json_depth)


@dataclass(frozen=True)
class EmbedTexts:
    """Validated parameters of `embed_texts`."""

    texts: list[str]
    normalize: bool = True


@dataclass(frozen=True)
class SampleTask:
    """Validated parameters of `sample_task`; `run_ms` None draws from the engine."""

    run_ms: float | None = None


TaskParams = EmbedTexts | SampleTask


def _load_object(parameters_json: str, limits: Limits) -> dict[str, Any]:
    if not parameters_json.strip():
        return {}
    try:
        value = json.loads(parameters_json)
    except ValueError as exc:
        raise InvalidParametersError(f"parameters_json is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidParametersError("parameters_json is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidParametersError("parameters_json must be a JSON object")
    problem = depth_problem(value, limits.max_json_depth)
    if problem is not None:
        raise InvalidParametersError(f"parameters_json is {problem}")
    return value


def parse_task(task_type: str, parameters_json: str, limits: Limits = Limits()) -> TaskParams:
    """Validate a task's type and parameters; raises a TaskError subclass."""
    if task_type not in TASK_TYPES:
        raise UnknownTaskTypeError(f"unknown task type {task_type!r}; known: {list(TASK_TYPES)}")
    params = _load_object(parameters_json, limits)
    if task_type == EMBED_TEXTS:
        return _parse_embed(params, limits)
    return _parse_sample(params, limits)


def _parse_embed(params: dict[str, Any], limits: Limits) -> EmbedTexts:
    # The rules live in smartrouting.texts: the dispatcher applies the same ones on the way in.
    problem = embed_problem(params, limits.texts)
    if problem is not None:
        raise InvalidParametersError(str(problem))
    return EmbedTexts(list(params["texts"]), params.get("normalize", True))


def _parse_sample(params: dict[str, Any], limits: Limits) -> SampleTask:
    unknown = set(params) - {"run_ms"}
    if unknown:
        raise InvalidParametersError(f"unknown parameter(s): {sorted(unknown)}")
    run_ms = params.get("run_ms")
    if run_ms is None:
        return SampleTask()
    if isinstance(run_ms, bool) or not isinstance(run_ms, int | float):
        raise InvalidParametersError("'run_ms' must be a number")
    if not math.isfinite(run_ms) or not 0 <= run_ms <= limits.max_run_ms:
        raise InvalidParametersError(f"'run_ms' must be within [0, {limits.max_run_ms}]")
    return SampleTask(float(run_ms))


async def execute(engine: Engine, label: str, params: TaskParams) -> dict[str, Any]:
    """Run validated parameters on a loaded label; the result JSON object."""
    if isinstance(params, EmbedTexts):
        embeddings, dim, tokens = await engine.embed_counted(label, params.texts, params.normalize)
        result: dict[str, Any] = {"embeddings": embeddings, "dimension": dim, "model": label}
        if tokens is not None:
            # As OpenAI's `usage`, so /v1/embeddings can pass real counts on.
            result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return result
    return await engine.sample(label, params.run_ms)
