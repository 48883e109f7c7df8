"""The dispatcher's HTTP endpoints as documented: what each takes, answers, and examples.

`OPERATIONS` is the table `dispatcher.openapi` turns into the OpenAPI document. Bodies are named
by the `dispatcher.schemas` classes the app decodes into; the tests decode every example here
into its class, so an example cannot drift from the schema it illustrates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dispatcher.catalogue import LabelDetail, ModelCatalogue, ModelEntry
from dispatcher.openai_api import EmbeddingsAnswer, EmbeddingsRequest, ModelList, OpenAIError
from dispatcher.probes import Liveness, Readiness
from dispatcher.schemas import (
    DeleteModelAnswer,
    ErrorBody,
    Health,
    Labels,
    RollbackAnswer,
    Stats,
    TaskAccepted,
    TaskCompleted,
    TaskRequest,
    TaskStatus,
    UploadModelAnswer,
    UploadModelRequest,
    UploadStatus,
    WorkerDetails,
    WorkerIds,
)


@dataclass(frozen=True)
class Answer:
    """One documented response of an operation.

    `body`: the type its JSON body decodes into, a tuple of types (any of them), or None for a
    body that is not JSON (`media_type` says what it is). `examples`: name -> example body.
    """

    status: str
    description: str
    body: Any = ErrorBody
    examples: dict[str, Any] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    """One endpoint: a method on a path, what it takes and what it answers."""

    method: str
    path: str
    summary: str
    description: str
    tag: str
    answers: tuple[Answer, ...]
    request: type | None = None
    request_examples: dict[str, Any] = field(default_factory=dict)
    parameters: tuple[dict[str, Any], ...] = ()


def error(status: str, description: str, code: str, detail: Any) -> Answer:
    """A documented error answer with one example body."""
    return Answer(status, description, examples={code: {"error": code, "detail": detail}})


def openai_error(status: str, description: str, kind: str, code: str, message: str) -> Answer:
    """A documented error answer of the OpenAI-compatible API (OpenAI's error shape)."""
    body = {"message": message, "type": kind, "param": None, "code": code}
    return Answer(status, description, OpenAIError, {code: {"error": body}})


_COMPLETED_EXAMPLE = {
    "task_id": "3f2a9c",
    "status": "completed",
    "result": {"embeddings": [[0.12, -0.05, 0.33]], "dimension": 3, "model": "all-MiniLM-L6-v2"},
    "worker_id": "worker-1",
    "label": "all-MiniLM-L6-v2",
    "label_miss": False,
    "timings_ms": {"queue": 0.4, "load": 0.0, "run": 7.9, "total": 8.6},
}
_CANCELLED_EXAMPLE = {
    "task_id": "3f2a9c",
    "status": "failed",
    "error": {"error": "task_cancelled", "detail": "task '3f2a9c' was cancelled"},
}
_STATUS_EXAMPLES = {
    "running": {"task_id": "3f2a9c", "status": "running"},
    "completed": _COMPLETED_EXAMPLE,
    "failed": {
        "task_id": "3f2a9c",
        "status": "failed",
        "error": {"error": "deadline_exceeded", "detail": "no answer within 30.000s"},
    },
    "cancelled": _CANCELLED_EXAMPLE,
}
_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the id the task was submitted with",
}
_TASK_EXAMPLES = {
    "embed": {
        "task_type": "embed_texts",
        "label": "all-MiniLM-L6-v2",
        "parameters": {"texts": ["a cat sat on the mat", "routing by label"]},
        "timeout_s": 30,
    },
    "parameters_json": {
        "task_id": "3f2a9c",
        "task_type": "sample_task",
        "label": "model-a",
        "parameters_json": '{"run_ms": 5}',
    },
}
_TASK_ERRORS = (
    error(
        "400",
        "The body is not JSON, or not a JSON object.",
        "invalid_json",
        "body is not valid JSON",
    ),
    Answer(
        "409",
        "The task id is in use with another body (a retry with the same body gets the known "
        "task instead), or the task was cancelled while the caller waited.",
        examples={
            "task_id_conflict": {
                "error": "task_id_conflict",
                "detail": "task '3f2a9c' exists (completed) with another body",
            },
            "task_cancelled": {
                "error": "task_cancelled",
                "detail": "task '3f2a9c' was cancelled (DELETE /tasks/3f2a9c)",
            },
        },
    ),
    error(
        "410",
        "The task's model is being deleted (`DELETE /models/{name}`).",
        "model_deleted",
        "model 'org--m' is being deleted (DELETE /models/org--m)",
    ),
    error(
        "413",
        "The body is larger than the limit.",
        "payload_too_large",
        "body exceeds 4194304 bytes",
    ),
    error(
        "422",
        "A field is missing, unknown, mistyped or out of range; `parameters` and "
        "`parameters_json` together; parameters breaking the task type's rules.",
        "validation_failed",
        {"field": "parameters.texts", "message": "must be a non-empty list of strings"},
    ),
    error(
        "429",
        "The queue, or this caller's share of it, is full (see Retry-After).",
        "queue_full",
        "10000 tasks are queued (limit 10000)",
    ),
    error(
        "503",
        "Shutting down, no workers, attempts exhausted or the state database cannot be "
        "written (see Retry-After).",
        "no_workers",
        "no worker is connected",
    ),
)

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the model's label",
    "schema": {"type": "string"},
}
_UPLOADER_DOWN = (
    error(
        "502",
        "The uploader did not answer.",
        "uploader_unreachable",
        "uploader at http://uploader:8000: ConnectError",
    ),
    error(
        "503",
        "No uploader is configured.",
        "uploader_not_configured",
        "no uploader configured",
    ),
)
_PUBLISHED_EXAMPLE = {
    "status": "success",
    "message": "BAAI/bge-small-en-v1.5 published as BAAI--bge-small-en-v1.5 "
    "(dimension 384, max abs diff 2e-06)",
    "model_id": "BAAI/bge-small-en-v1.5",
    "model_name": "BAAI--bge-small-en-v1.5",
    "dimension": 384,
    "max_batch_size": 32,
    "max_seq_length": 512,
    "max_abs_diff": 2e-06,
    "onnx_bytes": 133093467,
    "seconds": 41.2,
    "replaced": False,
    "version": 1,
    "content_hash": "sha256:9f2c...",
}
_UPLOAD_ID = "6c1f0e2a9b7d4c3e8f5a1b2c3d4e5f60"
_UPLOAD_QUEUED = {
    "upload_id": _UPLOAD_ID,
    "model_id": "BAAI/bge-small-en-v1.5",
    "state": "queued",
    "phase": "queued",
    "phases": [{"phase": "queued", "started_unix": 1767225600.0}],
    "created_unix": 1767225600.0,
    "status_url": f"/uploads/{_UPLOAD_ID}",
}
_UPLOAD_STATES = {
    "queued": _UPLOAD_QUEUED,
    "export": {
        **_UPLOAD_QUEUED,
        "state": "running",
        "phase": "export",
        "phases": [
            {"phase": "queued", "started_unix": 1767225600.0},
            {"phase": "load", "started_unix": 1767225600.1},
            {"phase": "export", "started_unix": 1767225603.9},
        ],
    },
    "success": {
        **_UPLOAD_QUEUED,
        "state": "success",
        "phase": "publish",
        "phases": [
            {"phase": "queued", "started_unix": 1767225600.0},
            {"phase": "load", "started_unix": 1767225600.1},
            {"phase": "export", "started_unix": 1767225603.9},
            {"phase": "validate", "started_unix": 1767225631.0},
            {"phase": "publish", "started_unix": 1767225640.8},
        ],
        "finished_unix": 1767225641.3,
        "result": _PUBLISHED_EXAMPLE,
    },
    "failed": {
        **_UPLOAD_QUEUED,
        "state": "failed",
        "finished_unix": 1767225600.2,
        "error": {"error": "model_exists", "detail": "BAAI--bge-small-en-v1.5 exists"},
        "http_status": 409,
    },
}

_MODEL_EXAMPLE = {
    "name": "all-MiniLM-L6-v2",
    "version": None,
    "content_hash": None,
    "published": False,
    "servable_by": 2,
    "loaded_on": ["worker-1"],
    "load_ms": 480.0,
    "run_ms": 11.0,
    "load_failed": False,
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/health",
        "Liveness",
        "Answers while the process serves HTTP.",
        "meta",
        (Answer("200", "Alive.", Health, {"ok": {"message": "OK"}}),),
    ),
    Operation(
        "get",
        "/livez",
        "Liveness probe",
        "200 while the process's event loop answers (Kubernetes livenessProbe).",
        "meta",
        (Answer("200", "Alive.", Liveness, {"ok": {"status": "alive"}}),),
    ),
    Operation(
        "get",
        "/readyz",
        "Readiness probe",
        "200 while the dispatcher can run tasks: at least `--ready-min-workers` (1) workers "
        "connected and not shutting down; else 503 with the reason and `Retry-After` "
        "(Kubernetes readinessProbe).",
        "meta",
        (
            Answer(
                "200",
                "Ready.",
                Readiness,
                {"ready": {"status": "ready", "workers": 2, "ready_min_workers": 1}},
            ),
            Answer(
                "503",
                "Not ready (see Retry-After).",
                Readiness,
                {
                    "no_workers": {
                        "status": "not_ready",
                        "workers": 0,
                        "ready_min_workers": 1,
                        "detail": "0 of the 1 workers needed are connected",
                    }
                },
            ),
        ),
    ),
    Operation(
        "get",
        "/dashboard",
        "Live status page",
        "An HTML page (no data in it; `/` redirects here) that polls /status.json every "
        "second: workers, labels, queue, recent tasks.",
        "meta",
        (
            Answer(
                "200",
                "The page.",
                None,
                {"page": "<!doctype html><html>...</html>"},
                media_type="text/html",
            ),
        ),
    ),
    Operation(
        "get",
        "/status.json",
        "Live status",
        "What the status page shows: workers (state, slots busy, labels), labels (copies, "
        "demand per second, queued, hit rate), queue depth, totals and the last 50 tasks.",
        "meta",
        (
            Answer(
                "200",
                "The status.",
                dict[str, Any],
                {
                    "idle": {
                        "dispatcher_id": "5d1c0f9ab2e4",
                        "policy": "routed",
                        "uptime_s": 12.5,
                        "accepting": True,
                        "queue_depth": 0,
                        "in_flight": 0,
                        "totals": {
                            "submitted": 0,
                            "completed": 0,
                            "failed": 0,
                            "hits": 0,
                            "misses": 0,
                            "hit_rate": None,
                        },
                        "workers": [],
                        "labels": [],
                        "recent_tasks": [],
                    }
                },
            ),
        ),
    ),
    Operation(
        "get",
        "/workers",
        "Connected workers",
        "Worker ids; with `?detail=true` each worker's labels, state and counters.",
        "workers",
        (
            Answer(
                "200",
                "Worker ids, or worker records with `?detail=true`.",
                (WorkerIds, WorkerDetails),
                {
                    "ids": {"workers": ["worker-1", "worker-2"]},
                    "detail": {
                        "workers": [
                            {
                                "worker_id": "worker-1",
                                "state": "ready",
                                "capacity": 4,
                                "slots": 2,
                                "engine": "triton",
                                "device": "cuda:0",
                                "labels": ["all-MiniLM-L6-v2"],
                                "labels_loading": [],
                                "in_flight": 1,
                                "failures_in_a_row": 0,
                                "completed": 120,
                                "misses": 3,
                            }
                        ]
                    },
                },
            ),
        ),
        parameters=(
            {
                "name": "detail",
                "in": "query",
                "required": False,
                "description": "`true` for full worker records",
                "schema": {"type": "boolean", "default": False},
            },
        ),
    ),
    Operation(
        "get",
        "/labels",
        "Labels and their holders",
        "Each label held by a worker (loaded or loading) -> ids of the workers holding it; "
        "with `?detail=true` -> its workers, current version and content hash (from the "
        "model catalogue; null for a model the uploader did not publish through this "
        "dispatcher).",
        "workers",
        (
            Answer(
                "200",
                "Label -> worker ids, or label -> details with `?detail=true`.",
                (Labels, dict[str, LabelDetail]),
                {
                    "two": {"all-MiniLM-L6-v2": ["worker-1", "worker-2"]},
                    "detail": {
                        "org--m": {
                            "workers": ["worker-1"],
                            "version": "2",
                            "content_hash": "sha256:9f2c...",
                        }
                    },
                },
            ),
        ),
        parameters=(
            {
                "name": "detail",
                "in": "query",
                "required": False,
                "description": "`true` for each label's workers, version and content hash",
                "schema": {"type": "boolean", "default": False},
            },
        ),
    ),
    Operation(
        "get",
        "/models",
        "The model catalogue",
        "Every model known by name: declared by a connected worker (its repository) or "
        "published through `/upload-model`; where it is loaded and its learned costs. A task "
        "for a label outside the catalogue is answered 404 at once (dispatcher.catalogue).",
        "workers",
        (
            Answer(
                "200",
                "The models.",
                ModelCatalogue,
                {"one": {"models": [_MODEL_EXAMPLE]}},
            ),
        ),
    ),
    Operation(
        "get",
        "/models/{name}",
        "One model of the catalogue",
        "The catalogue's entry of one model.",
        "workers",
        (
            Answer("200", "The model.", ModelEntry, {"one": _MODEL_EXAMPLE}),
            error(
                "404",
                "No model has this name.",
                "model_not_found",
                "no model 'all-MiniLM-L6'; did you mean 'all-MiniLM-L6-v2'?",
            ),
        ),
        parameters=(_NAME,),
    ),
    Operation(
        "delete",
        "/models/{name}",
        "Delete a model",
        "In order: the uploader is checked (unreachable: 503, nothing changed); the model is "
        "marked deleting (new tasks for it are answered 410 `model_deleted` at once, its "
        "queued tasks fail 410); every worker holding it is sent `Unload` and finishes the "
        "tasks running on it first; the uploader removes its folder from the repository; the "
        "catalogue forgets it (tasks for it: 404 until it is published again). When the "
        "uploader fails at the removal the model is served again and the 503 says so.",
        "admin",
        (
            Answer(
                "200",
                "Deleted: where it was unloaded, what was removed.",
                DeleteModelAnswer,
                {
                    "deleted": {
                        "status": "success",
                        "message": "org--m deleted",
                        "model_name": "org--m",
                        "unloaded_from": ["worker-1"],
                        "still_loaded_on": [],
                        "queued_tasks_failed": 0,
                        "files_removed": True,
                        "versions_removed": [1, 2],
                    }
                },
            ),
            error(
                "404",
                "No model has this name.",
                "model_not_found",
                "no model 'org--n'; did you mean 'org--m'?",
            ),
            Answer(
                "4XX",
                "Another refusal of the uploader (an upload of the model is running: 409), "
                "passed through; the model is served again.",
            ),
            error(
                "503",
                "No uploader is configured, or it did not answer; the detail says what state "
                "the model is in.",
                "uploader_unavailable",
                "the uploader at http://uploader:8000 does not answer; nothing was changed",
            ),
        ),
        parameters=(_NAME,),
    ),
    Operation(
        "post",
        "/models/{name}/rollback",
        "Make the previous version of a model current",
        "Forwarded to the uploader, which points the model's configs at the newest version "
        "older than the current one; every worker holding the model is then told to load it "
        "(`Reload`). Tasks already running finish on the version they started on.",
        "admin",
        (
            Answer(
                "200",
                "Rolled back.",
                RollbackAnswer,
                {
                    "one": {
                        "status": "success",
                        "message": "all-MiniLM-L6-v2 rolled back from version 2 to version 1",
                        "model_name": "all-MiniLM-L6-v2",
                        "version": 1,
                        "content_hash": "sha256:9f2c...",
                        "rolled_back_from": 2,
                    }
                },
            ),
            error("404", "No model has this name.", "model_not_found", "no published model"),
            error(
                "409",
                "No version older than the current one is left.",
                "no_previous_version",
                "all-MiniLM-L6-v2 has no version older than 1",
            ),
            Answer(
                "4XX", "Another refusal of the uploader (an invalid name: 422), passed through."
            ),
            *_UPLOADER_DOWN,
        ),
        parameters=(_NAME,),
    ),
    Operation(
        "post",
        "/run-task",
        "Run a task and wait for its result",
        "Queues the task, routes it to a worker (preferring one that holds its label) and "
        "answers when it finishes or its deadline passes.",
        "tasks",
        (
            Answer("200", "The task completed.", TaskCompleted, {"embed": _COMPLETED_EXAMPLE}),
            *_TASK_ERRORS,
            error(
                "404",
                "The worker has no model with this label.",
                "task_failed",
                {"code": "MODEL_NOT_FOUND", "message": "no model 'x'"},
            ),
            error(
                "502",
                "The worker failed the task.",
                "task_failed",
                {"code": "INFERENCE_FAILED", "message": "engine error"},
            ),
            error(
                "504",
                "The deadline passed before the task finished.",
                "deadline_exceeded",
                "no answer within 30.000s",
            ),
        ),
        TaskRequest,
        _TASK_EXAMPLES,
    ),
    Operation(
        "post",
        "/tasks",
        "Submit a task",
        "Queues the task and answers 202 at once; poll `status_url` for the result. With a "
        "state database the task survives a dispatcher restart.",
        "tasks",
        (
            Answer(
                "202",
                "Queued.",
                TaskAccepted,
                {
                    "queued": {
                        "task_id": "3f2a9c",
                        "status": "queued",
                        "status_url": "/tasks/3f2a9c",
                    }
                },
            ),
            *_TASK_ERRORS,
        ),
        TaskRequest,
        _TASK_EXAMPLES,
    ),
    Operation(
        "get",
        "/tasks/{task_id}",
        "A task's status and result",
        "Queued, running, completed (with the /run-task answer's fields) or failed (with its "
        "error). Finished tasks are kept for the result TTL. With `wait_s`, an unfinished "
        "task's answer waits up to that long for the task to finish (a long poll).",
        "tasks",
        (
            Answer("200", "The task's state.", TaskStatus, _STATUS_EXAMPLES),
            error(
                "404",
                "No task has this id, or its result expired.",
                "task_not_found",
                "no task '3f2a9c' (unknown, or its result expired)",
            ),
            error(
                "422",
                "`wait_s` is not a number of seconds from 0 to 60.",
                "validation_failed",
                {"field": "wait_s", "message": "must be a number of seconds from 0 to 60"},
            ),
        ),
        parameters=(
            _TASK_ID,
            {
                "name": "wait_s",
                "in": "query",
                "required": False,
                "description": "wait up to this many seconds for an unfinished task to finish",
                "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
            },
        ),
    ),
    Operation(
        "delete",
        "/tasks/{task_id}",
        "Cancel a task",
        "A queued task is taken off the queue; a running one's worker is sent `Cancel`. The "
        "task fails 409 `task_cancelled` (a caller waiting on /run-task gets that answer). A "
        "task that had already finished stays as it ended. Answers the task's state.",
        "tasks",
        (
            Answer(
                "200",
                "The task's state after the cancel.",
                TaskStatus,
                {
                    "cancelled": _CANCELLED_EXAMPLE,
                    "finished_before": _COMPLETED_EXAMPLE,
                },
            ),
            error(
                "404",
                "No task has this id, or its result expired.",
                "task_not_found",
                "no task '3f2a9c' (unknown, or its result expired)",
            ),
        ),
        parameters=(_TASK_ID,),
    ),
    Operation(
        "post",
        "/upload-model",
        "Convert and publish a model",
        "Checked here (unknown or mistyped fields: 422), then forwarded to the uploader, whose "
        "answer is passed through once the model is converted to ONNX and published. With "
        '`"async": true` the answer is 202 at once (with `Location: /uploads/{id}`); read the '
        "conversion's phase and its end at `status_url`. A published version goes into the "
        "catalogue and every worker holding the model is told to load it (`Reload`).",
        "admin",
        (
            Answer("200", "Published.", UploadModelAnswer, {"published": _PUBLISHED_EXAMPLE}),
            Answer(
                "202",
                '`"async": true`: queued; poll `status_url` (`Location`).',
                UploadStatus,
                {"queued": _UPLOAD_QUEUED},
            ),
            error(
                "400",
                "The body is not JSON, or not a JSON object.",
                "invalid_json",
                "body is not valid JSON",
            ),
            error(
                "409",
                "The model is published already (pass overwrite) or being converted.",
                "model_exists",
                "BAAI--bge-small-en-v1.5 exists",
            ),
            error(
                "413",
                "The body is larger than the limit.",
                "payload_too_large",
                "body exceeds 4194304 bytes",
            ),
            error(
                "422",
                "A field is unknown, mistyped or out of range, or the model id is invalid.",
                "validation_failed",
                {"field": "max_batch_size", "message": "Expected `int` <= 1024"},
            ),
            Answer("4XX", "Another refusal of the uploader, passed through."),
            *_UPLOADER_DOWN,
        ),
        UploadModelRequest,
        {
            "model": {"model_id": "BAAI/bge-small-en-v1.5", "max_batch_size": 32},
            "async": {"model_id": "BAAI/bge-small-en-v1.5", "overwrite": True, "async": True},
        },
    ),
    Operation(
        "get",
        "/uploads/{upload_id}",
        "An asynchronous upload's state",
        "Forwarded to the uploader: the phase the conversion is in (queued, load, export, "
        "validate, publish, each with when it started) and, once it ended, `success` with the "
        "synchronous answer as `result`, or `failed` with its `error` and `http_status`. "
        "Kept an hour after it ended (the newest 100). `wait_s` long-polls an unfinished one.",
        "admin",
        (
            Answer("200", "The upload's state.", UploadStatus, _UPLOAD_STATES),
            error(
                "404",
                "No upload has this id, or its state expired.",
                "upload_not_found",
                "no upload 'x' (unknown, or its status expired)",
            ),
            error(
                "422",
                "`wait_s` is not a number of seconds from 0 to 60.",
                "validation_failed",
                {"field": "wait_s", "message": "must be a number of seconds from 0 to 60"},
            ),
            *_UPLOADER_DOWN,
        ),
        parameters=(
            {
                "name": "upload_id",
                "in": "path",
                "required": True,
                "description": "the id the 202 answered",
                "schema": {"type": "string"},
            },
            {
                "name": "wait_s",
                "in": "query",
                "required": False,
                "description": "wait up to this many seconds for an unfinished upload to end",
                "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
            },
        ),
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics",
        "Counters, gauges and histograms in the Prometheus text format.",
        "meta",
        (
            Answer(
                "200",
                "Prometheus text format.",
                None,
                {"queue": "# TYPE smartrouting_queue_depth gauge\nsmartrouting_queue_depth 0.0\n"},
                media_type="text/plain",
            ),
        ),
    ),
    Operation(
        "get",
        "/stats",
        "Counters",
        "Totals since start, per label and per worker (read by the benchmark).",
        "meta",
        (
            Answer(
                "200",
                "The counters.",
                Stats,
                {
                    "busy": {
                        "policy": "routed",
                        "uptime_s": 12.5,
                        "workers_connected": 1,
                        "tasks_submitted": 10,
                        "tasks_completed": 9,
                        "tasks_failed": 0,
                        "tasks_redispatched": 0,
                        "label_hits": 8,
                        "label_misses": 1,
                        "load_time_s_total": 0.8,
                        "run_time_s_total": 0.09,
                        "avg_task_runtime_s": 0.098889,
                        "queue_depth": 0,
                        "in_flight": 1,
                        "per_label": {
                            "all-MiniLM-L6-v2": {
                                "completed": 9,
                                "misses": 1,
                                "avg_load_ms": 800.0,
                                "avg_run_ms": 10.0,
                                "queued": 0,
                            }
                        },
                        "per_worker": {
                            "worker-1": {
                                "completed": 9,
                                "misses": 1,
                                "labels": ["all-MiniLM-L6-v2"],
                                "busy": False,
                            }
                        },
                    }
                },
            ),
        ),
    ),
    Operation(
        "get",
        "/openapi.json",
        "This document",
        "The OpenAPI 3.1 document; /docs shows it as a page.",
        "meta",
        (
            Answer(
                "200",
                "OpenAPI 3.1.",
                dict[str, Any],
                {"start": {"openapi": "3.1.0", "info": {"title": "smart-routing dispatcher"}}},
            ),
        ),
    ),
    Operation(
        "post",
        "/v1/embeddings",
        "Embeddings (OpenAI-compatible)",
        "OpenAI's embeddings API, so the `openai` client, LangChain and LlamaIndex work "
        "unchanged: `model` is the label and the request runs as an `embed_texts` task, routed, "
        "limited and authenticated as /run-task is (`Authorization: Bearer <API key>`). `input` "
        "is a text or a list of texts (token ids are refused); `encoding_format` `float` or "
        "`base64` (little-endian float32); `dimensions` only as the model's own dimension. "
        "`usage` counts the tokens the model's tokenizer made. Errors are in OpenAI's shape.",
        "openai",
        (
            Answer(
                "200",
                "The embeddings, in input order.",
                EmbeddingsAnswer,
                {
                    "float": {
                        "object": "list",
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.12, -0.05]}],
                        "model": "all-MiniLM-L6-v2",
                        "usage": {"prompt_tokens": 7, "total_tokens": 7},
                    },
                    "base64": {
                        "object": "list",
                        "data": [{"object": "embedding", "index": 0, "embedding": "AACAPwAAAMA="}],
                        "model": "all-MiniLM-L6-v2",
                        "usage": {"prompt_tokens": 7, "total_tokens": 7},
                    },
                },
            ),
            openai_error(
                "400",
                "Malformed body, token-id input, texts over the limits, or `dimensions` other "
                "than the model's.",
                "invalid_request_error",
                "validation_failed",
                "input[0]: token-id input is not supported: send the text as a string",
            ),
            openai_error(
                "404",
                "No worker has a model with this label.",
                "invalid_request_error",
                "model_not_found",
                "The model `nope` does not exist",
            ),
            openai_error(
                "409",
                "The task was cancelled.",
                "invalid_request_error",
                "task_cancelled",
                "task '3f2a9c' was cancelled",
            ),
            openai_error(
                "413",
                "The body is larger than the limit.",
                "invalid_request_error",
                "payload_too_large",
                "body exceeds 4194304 bytes",
            ),
            openai_error(
                "429",
                "The queue, or this caller's share of it, is full (see Retry-After).",
                "rate_limit_error",
                "queue_full",
                "10000 tasks are queued (limit 10000)",
            ),
            openai_error(
                "502",
                "The worker failed the task.",
                "server_error",
                "task_failed",
                "INFERENCE_FAILED: engine error",
            ),
            openai_error(
                "503",
                "Shutting down, no workers or attempts exhausted (see Retry-After).",
                "server_error",
                "no_workers",
                "no worker is connected",
            ),
            openai_error(
                "504",
                "The deadline passed before the task finished.",
                "server_error",
                "deadline_exceeded",
                "no answer within 300.000s",
            ),
            openai_error(
                "401",
                "An API key is missing or wrong.",
                "invalid_request_error",
                "invalid_api_key",
                "API key required",
            ),
        ),
        EmbeddingsRequest,
        {
            "texts": {"model": "all-MiniLM-L6-v2", "input": ["a cat sat on the mat", "routing"]},
            "base64": {
                "model": "all-MiniLM-L6-v2",
                "input": "one text",
                "encoding_format": "base64",
            },
        },
    ),
    Operation(
        "get",
        "/v1/models",
        "Models (OpenAI-compatible)",
        "The labels the dispatcher knows: held by a connected worker, or run since it started.",
        "openai",
        (
            Answer(
                "200",
                "OpenAI's model list.",
                ModelList,
                {
                    "one": {
                        "object": "list",
                        "data": [
                            {
                                "id": "all-MiniLM-L6-v2",
                                "object": "model",
                                "created": 1767225600,
                                "owned_by": "smart-routing",
                            }
                        ],
                    }
                },
            ),
            openai_error(
                "401",
                "An API key is missing or wrong.",
                "invalid_request_error",
                "invalid_api_key",
                "API key required",
            ),
        ),
    ),
)
