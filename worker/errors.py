"""Exceptions of the worker, each mapped to a protocol `ErrorCode`.

Exception tree (each class's protocol `ErrorCode`)::

    WorkerError                      INTERNAL
    ├── TaskError
    │   ├── UnknownTaskTypeError     UNKNOWN_TASK_TYPE
    │   ├── InvalidParametersError   INVALID_PARAMETERS
    │   ├── DeadlineExceededError    DEADLINE_EXCEEDED
    │   └── ShuttingDownError        WORKER_SHUTTING_DOWN
    ├── ModelNotFoundError           MODEL_NOT_FOUND
    ├── ModelLoadError               MODEL_LOAD_FAILED
    ├── InferenceError               INFERENCE_FAILED
    ├── EngineUnavailableError       ENGINE_UNAVAILABLE
    ├── IllegalTransitionError       INTERNAL (a bug in the cache bookkeeping)
    ├── CacheFullError               INTERNAL (worker/cache.py; the runtime waits on it)
    └── ConfigError                  INTERNAL (bad command line or environment)
"""

from __future__ import annotations

from proto import smartrouting_pb2 as pb


class WorkerError(Exception):
    """Base of every worker error; `code` is what goes into `TaskResult.error_code`."""

    code: int = pb.INTERNAL


class TaskError(WorkerError):
    """The task itself is wrong; the worker keeps serving."""


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
    """A model state change that the cache's state machine forbids."""


class ConfigError(WorkerError):
    """The configuration is invalid."""
