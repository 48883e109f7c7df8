"""Typed request and response bodies of the dispatcher's HTTP API, and the decoding of requests.

Every body is a `msgspec.Struct` with `forbid_unknown_fields=True`: the OpenAPI document
(`dispatcher.openapi`) is generated from these classes, requests are decoded into them, and
the tests decode real answers into the response classes, so the three cannot drift apart.
msgspec rather than pydantic keeps the dispatcher's base install light: one small C extension
with no dependencies (docs/architecture.md).

Decoding errors become the dispatcher's own errors (`dispatcher.errors`): a body over the size
limit is 413 `PayloadTooLarge`; a body that is not JSON, or not a JSON object, is 400
`InvalidJSON`; anything else (a missing, unknown, mistyped or out-of-range field; lone
surrogates; nesting too deep; `parameters` and `parameters_json` together) is 422
`ValidationFailed` with the detail `{"field": <path>, "message": <what is wrong>}`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct, field
from starlette.requests import Request

from dispatcher.config import Config, Policy
from dispatcher.errors import DispatcherError, InvalidJSON, PayloadTooLarge, ValidationFailed
from dispatcher.limits import check_parameters
from dispatcher.registry import WorkerState

#: Longest `task_type`, `label` or `task_id`.
MAX_FIELD_CHARS = 256
#: Longest deadline a request may ask for (a day).
MAX_TIMEOUT_S = 86_400.0
#: Longest model id the uploader accepts (uploader/names.py); it checks the id's form itself.
MAX_MODEL_ID_CHARS = 200
#: Longest long poll of `GET /tasks/{id}?wait_s=`.
MAX_WAIT_S = 60.0

#: Longest `task_id`.
MAX_TASK_ID_CHARS = 128
#: A task id: letters, digits and `._~-`, starting with a letter or digit. It is a path segment
#: of `/tasks/{id}` and a key in logs and the state database, so nothing that would need
#: escaping (`/`, `..`, spaces, `%`) is taken.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"

# `\S` (re.search): at least one character that is not whitespace.
Name = Annotated[str, Meta(min_length=1, max_length=MAX_FIELD_CHARS, pattern=r"\S")]
TaskId = Annotated[str, Meta(min_length=1, max_length=MAX_TASK_ID_CHARS, pattern=TASK_ID_PATTERN)]
Timeout = Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S)]
BatchSize = Annotated[int, Meta(ge=1, le=1024)]
ModelId = Annotated[str, Meta(min_length=1, max_length=MAX_MODEL_ID_CHARS)]


# --- requests ------------------------------------------------------------------------------


class TaskRequest(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A task for /run-task or /tasks. Give its parameters as `parameters` (an object) or
    `parameters_json` (the same object as JSON text), not both; neither means `{}`."""

    task_type: Annotated[Name, Meta(description="what to run", examples=["embed_texts"])]
    label: Annotated[
        Name, Meta(description="the model to run it with", examples=["all-MiniLM-L6-v2"])
    ]
    task_id: (
        Annotated[
            TaskId,
            Meta(
                description="assigned when absent; 1-128 letters, digits and `._~-`, starting"
                " with a letter or digit; unique while its result is kept",
                examples=["job-42"],
            ),
        ]
        | None
    ) = None
    parameters_json: Annotated[str, Meta(description="the parameters as JSON text")] | None = None
    parameters: Annotated[dict[str, Any], Meta(description="the parameters object")] | None = None
    timeout_s: (
        Annotated[Timeout, Meta(description="deadline in seconds (default: the server's)")] | None
    ) = None

    def submit_args(self) -> dict[str, Any]:
        """The keyword arguments of `Dispatcher.submit` (after `parse_task_request`)."""
        if self.parameters is not None:
            # Python's formatting, as callers passing parameters_json write it; msgspec refused
            # lone surrogates and integers past Python's digit limit on the way in.
            parameters_json = json.dumps(self.parameters)
        else:
            parameters_json = self.parameters_json if self.parameters_json is not None else "{}"
        return {
            "task_type": self.task_type,
            "label": self.label,
            "parameters_json": parameters_json,
            "task_id": self.task_id,
            "timeout_s": self.timeout_s,
        }


class UploadModelRequest(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A model to convert and publish; the uploader checks the id's form and the model."""

    model_id: Annotated[
        ModelId,
        Meta(
            description="a Hugging Face id `owner/name` (or `name`)",
            examples=["sentence-transformers/all-MiniLM-L6-v2"],
        ),
    ]
    max_batch_size: Annotated[BatchSize, Meta(description="Triton's max_batch_size")] = 32
    overwrite: Annotated[bool, Meta(description="replace a published model")] = False
    model_name: (
        Annotated[ModelId, Meta(description="label to publish under (default: from the id)")] | None
    ) = None
    background: Annotated[
        bool,
        Meta(description="answer 202 at once with a status URL; convert in the background"),
    ] = field(default=False, name="async")


# --- responses -----------------------------------------------------------------------------


class ErrorBody(Struct, forbid_unknown_fields=True):
    """Every error answer. `detail` is a message, or `{"field", "message"}` for a 422
    `validation_failed`, or `{"code", "message"}` for a worker's `task_failed`."""

    error: Annotated[str, Meta(description="machine-readable code", examples=["queue_full"])]
    detail: Any


class Health(Struct, forbid_unknown_fields=True):
    """The liveness answer."""

    message: Literal["OK"]


class TaskCompleted(Struct, forbid_unknown_fields=True):
    """A completed task: its result and who ran it."""

    task_id: str
    status: Literal["completed"]
    result: Annotated[Any, Meta(description="the task type's result object")]
    worker_id: str | None
    label: str
    label_miss: Annotated[bool, Meta(description="the worker had to load the label")]
    timings_ms: dict[str, float]
    model_version: (
        Annotated[str, Meta(description="the model version that ran the task")] | None
    ) = None


class TaskAccepted(Struct, forbid_unknown_fields=True):
    """An asynchronous task was queued; poll `status_url` for its result. A retry of a known
    task (same id and body) is answered with that task's state instead of running it again."""

    task_id: str
    status: Literal["queued", "running", "completed"]
    status_url: str


class TaskStatus(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A task's state; a completed one carries the fields of its /run-task answer, a failed
    one its error body."""

    task_id: str
    status: Literal["queued", "running", "completed", "failed"]
    result: Any = None
    worker_id: str | None = None
    label: str | None = None
    label_miss: bool | None = None
    timings_ms: dict[str, float] | None = None
    model_version: str | None = None
    error: ErrorBody | None = None


class WorkerIds(Struct, forbid_unknown_fields=True):
    """Connected workers by id (`/workers`)."""

    workers: list[str]


class WorkerInfo(Struct, forbid_unknown_fields=True):
    """One connected worker (`/workers?detail=true`)."""

    worker_id: str
    state: WorkerState
    capacity: Annotated[int, Meta(description="labels it can hold at once")]
    slots: Annotated[int, Meta(description="tasks it runs at once")]
    engine: str
    device: str
    labels: list[str]
    labels_loading: list[str]
    in_flight: int
    failures_in_a_row: Annotated[
        int, Meta(description="soft timeouts and own errors in a row (the circuit breaker)")
    ]
    completed: int
    misses: int


class WorkerDetails(Struct, forbid_unknown_fields=True):
    """Connected workers with their labels, state and counters (`/workers?detail=true`)."""

    workers: list[WorkerInfo]


#: `/labels`: label -> sorted ids of the workers holding it.
Labels = dict[str, list[str]]


class LabelStats(Struct, forbid_unknown_fields=True):
    """Counters of one label in /stats."""

    completed: int
    misses: int
    avg_load_ms: Annotated[float, Meta(description="mean reported load time, else the estimate")]
    avg_run_ms: Annotated[float, Meta(description="mean reported run time, else the estimate")]
    queued: int


class WorkerStats(Struct, forbid_unknown_fields=True):
    """Counters of one worker in /stats."""

    completed: int
    misses: int
    labels: list[str]
    busy: Annotated[bool, Meta(description="no free task slot")]


class Stats(Struct, forbid_unknown_fields=True):
    """Counters of the dispatcher since it started (read by the benchmark)."""

    policy: Policy
    uptime_s: float
    workers_connected: int
    tasks_submitted: int
    tasks_completed: int
    tasks_failed: int
    tasks_redispatched: int
    label_hits: int
    label_misses: int
    load_time_s_total: float
    run_time_s_total: float
    avg_task_runtime_s: float
    queue_depth: int
    in_flight: int
    per_label: dict[str, LabelStats]
    per_worker: dict[str, WorkerStats]


class UploadModelAnswer(Struct, forbid_unknown_fields=True):
    """The uploader's answer once the model is published (passed through)."""

    status: Literal["success"]
    message: str
    model_id: str
    model_name: str
    dimension: int
    max_batch_size: int
    max_seq_length: int
    max_abs_diff: float
    onnx_bytes: int
    seconds: float
    replaced: bool
    version: Annotated[int, Meta(description="the version now current (1, 2, ...)")] = 1
    content_hash: Annotated[str, Meta(description="sha256 of the version's model.onnx")] = ""


class UploadPhase(Struct, forbid_unknown_fields=True):
    """One phase an asynchronous upload entered, and when (Unix seconds)."""

    phase: Literal["queued", "load", "export", "validate", "publish"]
    started_unix: float


class UploadStatus(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An asynchronous upload: `POST /upload-model` with `async` (202) and `GET /uploads/{id}`."""

    upload_id: str
    model_id: str
    state: Annotated[
        Literal["queued", "running", "success", "failed"],
        Meta(description="queued for a conversion slot, running, or ended"),
    ]
    phase: Literal["queued", "load", "export", "validate", "publish"]
    phases: list[UploadPhase]
    created_unix: float
    status_url: str
    finished_unix: float | None = None
    result: (
        Annotated[UploadModelAnswer, Meta(description="on success: the synchronous answer")] | None
    ) = None
    error: Annotated[ErrorBody, Meta(description="on failure: the error")] | None = None
    http_status: (
        Annotated[int, Meta(description="on failure: the synchronous call's status")] | None
    ) = None


class DeleteModelAnswer(Struct, forbid_unknown_fields=True):
    """`DELETE /models/{name}`: the model unloaded everywhere, then removed."""

    status: Literal["success"]
    message: str
    model_name: str
    unloaded_from: Annotated[list[str], Meta(description="workers told to unload it")]
    still_loaded_on: Annotated[
        list[str], Meta(description="workers that had not unloaded it when the wait ended")
    ]
    queued_tasks_failed: Annotated[int, Meta(description="its queued tasks, answered 410")]
    files_removed: Annotated[bool, Meta(description="the uploader removed its folder")]
    versions_removed: list[int]


class RollbackAnswer(Struct, forbid_unknown_fields=True):
    """The uploader's answer once the previous version is current again (passed through)."""

    status: Literal["success"]
    message: str
    model_name: str
    version: int
    content_hash: str
    rolled_back_from: int


# --- decoding ------------------------------------------------------------------------------

T = TypeVar("T")

# msgspec's messages: "<what> - at `$.path`" (no suffix at the top level).
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_BLANK = "Expected `str` matching regex '\\\\S'"
_BAD_TASK_ID = f"Expected `str` matching regex {TASK_ID_PATTERN!r}"
_FIELD_NAMED = re.compile(
    r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>.*)`$"
)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 `PayloadTooLarge` past `limit` bytes, without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(raw: bytes, kind: type[T]) -> T:
    """`raw` decoded into `kind`; raises `InvalidJSON` (400) or `ValidationFailed` (422)."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise _validation_error(raw, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _decode_error(raw, exc) from None
    except RecursionError:
        raise _too_deep("body") from None


def parse_task_request(raw: bytes, config: Config) -> TaskRequest:
    """A /run-task or /tasks body, every rule checked (`config` bounds the parameters)."""
    task = decode_body(raw, TaskRequest)
    if task.parameters is not None and task.parameters_json is not None:
        raise ValidationFailed(
            {
                "field": "parameters",
                "message": "contradictory: give parameters or parameters_json, not both",
            }
        )
    field = "parameters"
    parameters: Any = task.parameters
    if task.parameters_json is not None:
        field = "parameters_json"
        parameters = _load_parameters_json(task.parameters_json)
    if parameters is not None:
        check_parameters(
            parameters,
            config.max_json_depth,
            config.max_texts,
            config.max_text_chars,
            field,
            task.task_type,
        )
    return task


def parse_wait(raw: str | None) -> float:
    """The `wait_s` query parameter of `GET /tasks/{id}`: 0 to `MAX_WAIT_S` seconds."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_WAIT_S:  # NaN fails too
        message = f"must be a number of seconds from 0 to {MAX_WAIT_S:g}"
        raise ValidationFailed({"field": "wait_s", "message": message})
    return value


def parse_upload_request(raw: bytes) -> UploadModelRequest:
    """A /upload-model body with its fields' types and ranges checked."""
    return decode_body(raw, UploadModelRequest)


def _load_parameters_json(raw: str) -> Any:
    # Parsed as the worker will parse it (json.loads), so both judge the same text alike.
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep("parameters_json") from None
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise ValidationFailed(
            {"field": "parameters_json", "message": f"is not JSON: {exc}"}
        ) from None
    if not isinstance(value, dict):
        raise ValidationFailed({"field": "parameters_json", "message": "must be a JSON object"})
    return value


def _too_deep(field: str) -> ValidationFailed:
    return ValidationFailed({"field": field, "message": "JSON nested too deeply"})


def _validation_error(raw: bytes, message: str) -> DispatcherError:
    """The error for msgspec's `ValidationError` message, naming the field it points at."""
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    what, path = match["what"], (match["path"] or "").lstrip(".")
    named = _FIELD_NAMED.match(what)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
        what = "is required" if named["kind"] == "missing required" else "is not a known field"
    elif what == _BLANK:
        what = "must not be blank"
    elif what == _BAD_TASK_ID:
        what = "must be letters, digits and ._~- only, starting with a letter or digit"
    # msgspec validates as it parses, so a body can break a rule before it is seen to be
    # malformed: check the whole of it (only on this error path) before blaming a field.
    try:
        msgspec.json.decode(raw)
    except RecursionError:
        return _too_deep("body")
    except msgspec.ValidationError:  # (a DecodeError too) well-formed, a number out of range
        pass
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return _decode_error(raw, exc)
    if not path and what.startswith("Expected `object`"):
        return InvalidJSON(f"body must be a JSON object: {what}")
    return ValidationFailed({"field": path or "body", "message": what})


def _decode_error(raw: bytes, exc: Exception) -> DispatcherError:
    """The error for a body msgspec cannot parse: 400, unless Python's more lenient parser
    reads it, when a field carries what msgspec refuses: lone surrogates (which protobuf
    strings cannot carry) or NaN/Infinity. That is a 422 naming the field."""
    try:
        value = json.loads(raw)
    except RecursionError:
        return _too_deep("body")
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return InvalidJSON(f"body is not valid JSON: {exc}")
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _unencodable(key) or _unencodable(item)
            if problem:
                field = key if _unencodable(key) is None else ascii(key)
                return ValidationFailed({"field": field, "message": problem})
    return InvalidJSON(f"body is not valid JSON: {exc}")


def _unencodable(value: Any) -> str | None:
    """What in a value parsed by `json.loads` standard JSON cannot carry, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "is not valid Unicode"
        elif isinstance(item, float) and not math.isfinite(item):
            return "is not a finite number"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
