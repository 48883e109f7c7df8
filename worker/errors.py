"""Exceptions of the worker, each mapped to a protocol `ErrorCode` (proto/smartrouting.proto).

A failed task is answered with `TaskResult(ok=False, error_code=..., error_message=...)`;
`error_code(exc)` below is the one place an exception becomes a code, and the dispatcher
maps the code to HTTP (docs/architecture.md §4.2). Exception tree (each class's code)::

    WorkerError                      INTERNAL
    ├── TaskError                    INVALID_PARAMETERS (the task itself is wrong)
    │   ├── UnknownTaskTypeError     UNKNOWN_TASK_TYPE
    │   ├── InvalidParametersError   INVALID_PARAMETERS
    │   ├── DeadlineExceededError    DEADLINE_EXCEEDED
    │   └── ShuttingDownError        WORKER_SHUTTING_DOWN
    ├── ModelNotFoundError           MODEL_NOT_FOUND
    ├── ModelLoadError               MODEL_LOAD_FAILED
    ├── InferenceError               INFERENCE_FAILED
    ├── EngineUnavailableError       ENGINE_UNAVAILABLE
    ├── IllegalTransitionError       INTERNAL (a bug in the state bookkeeping)
    ├── CacheFullError               INTERNAL (no label can be evicted; the runtime waits)
    └── ConfigError                  INTERNAL (bad flags, environment or settings; a ValueError)
"""

from __future__ import annotations

import re
from typing import ClassVar, TypeAlias

from proto import smartrouting_pb2 as pb

#: The type of a protocol `ErrorCode` value.
ErrorCode: TypeAlias = pb.ErrorCode.ValueType


class WorkerError(Exception):
    """Base of every worker error; `code` is what goes into `TaskResult.error_code`."""

    code: ClassVar[ErrorCode] = pb.INTERNAL


class TaskError(WorkerError):
    """The task itself is wrong; the worker keeps serving."""

    code = pb.INVALID_PARAMETERS


class UnknownTaskTypeError(TaskError):
    """The task type is not one this worker runs."""

    code = pb.UNKNOWN_TASK_TYPE


class InvalidParametersError(TaskError):
    """`parameters_json` is malformed or out of bounds."""

    code = pb.INVALID_PARAMETERS


class DeadlineExceededError(TaskError):
    """The task's deadline passed before it finished."""

    code = pb.DEADLINE_EXCEEDED


class ShuttingDownError(TaskError):
    """The worker is draining and hands the task back."""

    code = pb.WORKER_SHUTTING_DOWN


class ModelNotFoundError(WorkerError):
    """The label names no model in the repository."""

    code = pb.MODEL_NOT_FOUND


class ModelLoadError(WorkerError):
    """The model exists but the engine failed to load it."""

    code = pb.MODEL_LOAD_FAILED


class InferenceError(WorkerError):
    """The engine failed while running the task."""

    code = pb.INFERENCE_FAILED


class EngineUnavailableError(WorkerError):
    """The engine (e.g. tritonserver) is down or restarting."""

    code = pb.ENGINE_UNAVAILABLE


class IllegalTransitionError(WorkerError):
    """A state change that a state machine (model cache, Triton process) forbids."""

    code = pb.INTERNAL


class CacheFullError(WorkerError):
    """No room can be made: every loaded label is in use or busy changing state."""

    code = pb.INTERNAL


class ConfigError(WorkerError, ValueError):
    """The configuration is invalid (also a ValueError: it is a bad value, refused early)."""

    code = pb.INTERNAL


def error_code(exc: BaseException) -> ErrorCode:
    """The protocol code of `exc`: its class's code, INTERNAL for anything outside the tree."""
    return exc.code if isinstance(exc, WorkerError) else pb.INTERNAL


#: Most characters of an error message that leaves the worker.
MAX_PUBLIC_MESSAGE = 300
#: An absolute filesystem path (POSIX or Windows), quoted or not.
_PATH = re.compile(r"""(?:[A-Za-z]:\\|(?<![\w.])/)[^\s'"(),:]+""")


def public_message(exc: BaseException) -> str:
    """What a caller may read of `exc`: its first line, server paths replaced by `<path>`,
    no traceback, at most `MAX_PUBLIC_MESSAGE` characters. The full error goes to the
    worker's log; a caller learns what failed, not where the server keeps its files."""
    text = str(exc).strip()
    cut = text.find("Traceback")
    if cut >= 0:
        text = text[:cut].strip() or type(exc).__name__
    first = text.splitlines()[0] if text else type(exc).__name__
    first = _PATH.sub("<path>", first).strip()
    if len(first) > MAX_PUBLIC_MESSAGE:
        first = first[: MAX_PUBLIC_MESSAGE - 3] + "..."
    return first


def all_error_classes() -> list[type[WorkerError]]:
    """Every class of the tree, the base included (tests check each has a code)."""
    seen: list[type[WorkerError]] = []
    stack: list[type[WorkerError]] = [WorkerError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
