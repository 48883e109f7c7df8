"""What the client returns and raises: typed results and one error tree.

Exception tree::

    ClientError
    ├── APIError (the dispatcher answered an error: `status`, `code`, `detail`)
    │   └── UploadFailed (an asynchronous upload ended failed: the uploader's error)
    ├── ConnectionFailed (no answer after every retry: the dispatcher is unreachable)
    ├── TaskTimeout (the task did not finish within the time the caller allowed)
    └── UploadTimeout (an asynchronous upload did not end within the time allowed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ClientError(Exception):
    """Base of every error the client raises."""


class APIError(ClientError):
    """An error answer of the dispatcher (after the retries it allows)."""

    def __init__(
        self, status: int, code: str, detail: Any, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s

    @classmethod
    def from_body(cls, status: int, body: Any, retry_after_s: float | None = None) -> APIError:
        """The error of a JSON body: ours `{"error", "detail"}` or OpenAI's `{"error": {...}}`."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # OpenAI's shape (/v1/)
            return cls(status, str(error.get("code")), error.get("message"), retry_after_s)
        if isinstance(error, str):
            return cls(status, error, body.get("detail"), retry_after_s)
        return cls(status, f"http_{status}", body, retry_after_s)


class ConnectionFailed(ClientError):
    """The dispatcher could not be reached (or kept failing) within the retry budget."""


class TaskTimeout(ClientError):
    """A task the caller waits for did not finish in time (it may still run)."""


class UploadTimeout(ClientError):
    """An upload the caller waits for did not end in time (the conversion may still run)."""


@dataclass(frozen=True)
class TaskResult:
    """A completed task: its result and who ran it."""

    task_id: str
    result: Any
    label: str
    worker_id: str | None = None
    label_miss: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskResult:
        return cls(
            task_id=str(body["task_id"]),
            result=body.get("result"),
            label=str(body.get("label", "")),
            worker_id=body.get("worker_id"),
            label_miss=bool(body.get("label_miss", False)),
            timings_ms=dict(body.get("timings_ms") or {}),
        )


#: States of a task at the dispatcher.
FINISHED = ("completed", "failed")


@dataclass(frozen=True)
class TaskStatus:
    """A task's state: queued, running, completed (with `result`) or failed (with `error`)."""

    task_id: str
    status: str
    result: TaskResult | None = None
    error: APIError | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskStatus:
        status = str(body["status"])
        result = TaskResult.from_json(body) if status == "completed" else None
        error = None
        if status == "failed" and isinstance(body.get("error"), dict):
            error = APIError.from_body(0, body["error"])
        return cls(str(body["task_id"]), status, result, error)


@dataclass(frozen=True)
class Embeddings:
    """The embeddings of a list of texts, in order."""

    vectors: list[list[float]]
    dimension: int
    model: str
    #: Tokens the model's tokenizer made of the texts (None: the engine has no tokenizer).
    prompt_tokens: int | None
    task: TaskResult

    @classmethod
    def from_task(cls, task: TaskResult) -> Embeddings:
        result = task.result if isinstance(task.result, dict) else {}
        usage = result.get("usage") or {}
        return cls(
            vectors=list(result.get("embeddings") or []),
            dimension=int(result.get("dimension") or 0),
            model=str(result.get("model", task.label)),
            prompt_tokens=usage.get("prompt_tokens"),
            task=task,
        )


@dataclass(frozen=True)
class WorkerInfo:
    """One connected worker (`GET /workers?detail=true`)."""

    worker_id: str
    state: str
    capacity: int
    slots: int
    engine: str
    device: str
    labels: list[str]
    labels_loading: list[str]
    in_flight: int
    completed: int
    misses: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> WorkerInfo:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in body.items() if k in names})


@dataclass(frozen=True)
class UploadedModel:
    """A model the uploader converted and published."""

    model_id: str
    model_name: str
    dimension: int
    max_batch_size: int
    max_seq_length: int
    max_abs_diff: float
    replaced: bool
    message: str = ""
    onnx_bytes: int = 0
    seconds: float = 0.0
    #: The version now current (1, 2, ...) and the sha256 of its model.onnx.
    version: int = 1
    content_hash: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> UploadedModel:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in body.items() if k in names})


#: States of an asynchronous upload at the uploader; the last two are final.
UPLOAD_FINISHED = ("success", "failed")


@dataclass(frozen=True)
class UploadPhase:
    """One phase an asynchronous upload entered (queued, load, export, validate, publish)."""

    phase: str
    started_unix: float


@dataclass(frozen=True)
class UploadStatus:
    """An asynchronous upload (`POST /upload-model` with `async`, `GET /uploads/{id}`):
    `state` queued, running, success (with `result`) or failed (with `error`, whose
    `status` is the HTTP status the synchronous call would have answered)."""

    upload_id: str
    model_id: str
    state: str
    phase: str
    phases: list[UploadPhase]
    created_unix: float
    status_url: str
    finished_unix: float | None = None
    result: UploadedModel | None = None
    error: APIError | None = None

    @property
    def finished(self) -> bool:
        return self.state in UPLOAD_FINISHED

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> UploadStatus:
        result = body.get("result")
        error = body.get("error")
        return cls(
            upload_id=str(body["upload_id"]),
            model_id=str(body.get("model_id", "")),
            state=str(body["state"]),
            phase=str(body.get("phase", "")),
            phases=[
                UploadPhase(str(p["phase"]), float(p["started_unix"]))
                for p in body.get("phases") or []
            ],
            created_unix=float(body.get("created_unix") or 0.0),
            status_url=str(body.get("status_url", "")),
            finished_unix=body.get("finished_unix"),
            result=UploadedModel.from_json(result) if isinstance(result, dict) else None,
            error=(
                APIError.from_body(int(body.get("http_status") or 0), error)
                if isinstance(error, dict)
                else None
            ),
        )


class UploadFailed(APIError):
    """An asynchronous upload ended failed: `status`, `code` and `detail` are those the
    synchronous call would have answered (409 `model_exists`, ...); `upload` is its state."""

    def __init__(self, upload: UploadStatus) -> None:
        error = upload.error or APIError(0, "upload_failed", f"upload {upload.upload_id} failed")
        super().__init__(error.status, error.code, error.detail)
        self.upload = upload


@dataclass(frozen=True)
class ModelInfo:
    """One model of the dispatcher's catalogue (`GET /models`, `GET /models/{name}`): its
    version and content hash (None when the uploader did not publish it), how many connected
    workers can serve it, where it is loaded, and its learned costs."""

    name: str
    version: str | None = None
    content_hash: str | None = None
    published: bool = False
    servable_by: int = 0
    loaded_on: list[str] = field(default_factory=list)
    load_ms: float = 0.0
    run_ms: float = 0.0
    load_failed: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelInfo:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in body.items() if k in names})


@dataclass(frozen=True)
class RolledBack:
    """`POST /models/{name}/rollback`: the version now current and the one it replaced."""

    model_name: str
    version: int
    content_hash: str
    rolled_back_from: int
    message: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RolledBack:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in body.items() if k in names})


@dataclass(frozen=True)
class DeletedModel:
    """`DELETE /models/{name}`: where the model was unloaded and what was removed."""

    model_name: str
    unloaded_from: list[str]
    still_loaded_on: list[str]
    queued_tasks_failed: int
    files_removed: bool
    versions_removed: list[int]
    message: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DeletedModel:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in body.items() if k in names})
