"""Task records, the queue of tasks waiting for a worker, and the store of finished results.

The queue keeps one global FIFO (oldest first; the random policy uses only it) and one FIFO per
label (the routed policy takes the oldest task of a label a freed worker holds). Both give O(1)
push, pop and removal of any task (deadline, cancel).

Memory is bounded (docs/reliability.md): a task keeps its parameters only while a worker may
still need them (queued or running: a re-dispatch sends them again); once it finishes they are
replaced by a digest, enough to recognise an idempotent retry. Finished results are kept
`ttl_s`, and at most `max_results` of them and `max_bytes` in all, the oldest dropped first.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from dispatcher.errors import DispatcherError
from proto import smartrouting_pb2 as pb


class TaskState(enum.Enum):
    """Lifecycle of a task in the dispatcher."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED)


@dataclass
class TaskRecord:
    """One task from submission to its answer."""

    task_id: str
    task_type: str
    label: str
    parameters_json: str
    submitted_at: float  # monotonic seconds
    deadline: float  # monotonic seconds
    deadline_unix_ms: int
    state: TaskState = TaskState.QUEUED
    attempt: int = 0
    enqueued_at: float = 0.0  # monotonic; the age used for queue order and starvation
    dispatched_at: float = 0.0
    worker_id: str | None = None
    label_miss: bool = False
    #: The model version the worker ran the task on ("" when its engine has none).
    model_version: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    result: Any = None
    #: Why the task failed, once it has (rendered by `dispatcher.errors.error_response`).
    error: DispatcherError | None = None
    finished_at: float = 0.0
    #: Who submitted it (per-caller limit); None: not counted.
    caller: str | None = None
    #: Kept in the state database (an asynchronous task with DISPATCHER_STATE_DB set).
    persisted: bool = False
    #: Read back from the state database after a restart.
    restored: bool = False
    #: Workers this task must not go to again (it timed out there, or was handed back).
    excluded: set[str] = field(default_factory=set)
    #: Who may read or cancel it: the API key that submitted it (hashed); None: anyone.
    owner: str | None = None
    #: Size of the answer it keeps once finished (the worker's result JSON), in bytes.
    answer_bytes: int = 0
    #: Held by the routing policy's cold wait (its label nobody holds waits for a cheap place);
    #: cleared once the hold's outcome is recorded (`dispatcher.cold_wait`).
    cold_held: bool = False
    #: Digest of the parameters once they are dropped (`drop_parameters`); "" while held.
    parameters_digest: str = ""

    def same_request(self, task_type: str, label: str, parameters_json: str) -> bool:
        """Whether a request with this body asks for this very task (an idempotent retry).

        The parameters are compared as JSON values, so a retry that formats its
        `parameters_json` differently (spacing, key order) is still the same request; after
        the task finished they are compared by digest (`drop_parameters`).
        """
        if (task_type, label) != (self.task_type, self.label):
            return False
        if self.parameters_digest:
            return parameters_digest(parameters_json) == self.parameters_digest
        if parameters_json == self.parameters_json:
            return True
        return _canonical(parameters_json) == _canonical(self.parameters_json)

    def drop_parameters(self) -> None:
        """Forget the parameters, keeping their digest: a finished task never sends them again,
        and a kept result must not hold its (possibly megabytes of) input for its whole TTL."""
        if not self.parameters_digest:
            self.parameters_digest = parameters_digest(self.parameters_json)
        self.parameters_json = ""

    def to_frame(self, evict: tuple[str, ...] = ()) -> pb.Task:
        """The Task frame that sends this task to a worker."""
        return pb.Task(
            task_id=self.task_id,
            task_type=self.task_type,
            label=self.label,
            parameters_json=self.parameters_json,
            deadline_unix_ms=self.deadline_unix_ms,
            evict_hint=list(evict),
            attempt=self.attempt,
        )

    def record_run(self, result: pb.TaskResult, now: float) -> None:
        """Keep what the worker reported of this task's run: miss, timings, answer size."""
        self.label_miss = result.label_miss
        self.model_version = result.model_version
        self.answer_bytes = len(result.result_json) + len(result.error_message)
        self.timings_ms = {
            "queue": round((self.dispatched_at - self.enqueued_at) * 1000 + result.queue_ms, 3),
            "load": round(result.load_ms, 3),
            "run": round(result.run_ms, 3),
            "total": round((now - self.submitted_at) * 1000, 3),
        }

    def answer_json(self) -> dict[str, Any]:
        """What the state database keeps of a finished task to answer /tasks/{id} again."""
        if self.state is TaskState.COMPLETED:
            return {"completed": self.completed_json()}
        return {"error": self.error.to_record() if self.error else None}

    def restore_answer(self, state: TaskState, answer: dict[str, Any]) -> None:
        """Fill a finished task in from `answer_json()` read back from the database."""
        self.state = state
        if state is TaskState.COMPLETED:
            done = answer.get("completed", {})
            self.result = done.get("result")
            self.worker_id = done.get("worker_id")
            self.label_miss = bool(done.get("label_miss"))
            self.model_version = str(done.get("model_version") or "")
            self.timings_ms = done.get("timings_ms") or {}
        else:
            error = answer.get("error")
            self.error = DispatcherError.from_record(error) if isinstance(error, dict) else None

    def status_json(self) -> dict[str, Any]:
        """The /tasks/{id} answer."""
        body: dict[str, Any] = {"task_id": self.task_id, "status": self.state.value}
        if self.state is TaskState.COMPLETED:
            body.update(self.completed_json())
        elif self.state is TaskState.FAILED and self.error is not None:
            body["error"] = self.error.to_json()
        return body

    def completed_json(self) -> dict[str, Any]:
        """The /run-task answer of a completed task (docs/interfaces.md section 3)."""
        answer = {
            "task_id": self.task_id,
            "status": "completed",
            "result": self.result,
            "worker_id": self.worker_id,
            "label": self.label,
            "label_miss": self.label_miss,
            "timings_ms": self.timings_ms,
        }
        if self.model_version:  # engines without versions (simulated) report none
            answer["model_version"] = self.model_version
        return answer


def _canonical(parameters_json: str) -> object:
    """The parameters as a comparable value (text that is not JSON compares as itself)."""
    try:
        return json.loads(parameters_json or "{}")
    except (ValueError, RecursionError):
        return parameters_json


def parameters_digest(parameters_json: str) -> str:
    """SHA-256 of the parameters as a JSON value (key order and spacing do not matter), so two
    texts `same_request` would call equal have the same digest."""
    value = _canonical(parameters_json)
    text = "text:" + parameters_json  # not JSON: `_canonical` kept the text itself
    if value is not parameters_json:
        try:
            text = "json:" + json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (ValueError, RecursionError):  # nested too deep to write back
            pass
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class TaskQueue:
    """Tasks waiting for a worker: a global FIFO plus one FIFO per label."""

    def __init__(self) -> None:
        self._all: OrderedDict[str, TaskRecord] = OrderedDict()
        self._by_label: dict[str, OrderedDict[str, TaskRecord]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._all

    def push(self, task: TaskRecord, front: bool = False) -> None:
        """Queue a task at the back (new) or the front (re-dispatched: it is the oldest)."""
        self._all[task.task_id] = task
        per_label = self._by_label.setdefault(task.label, OrderedDict())
        per_label[task.task_id] = task
        if front:
            self._all.move_to_end(task.task_id, last=False)
            per_label.move_to_end(task.task_id, last=False)

    def remove(self, task_id: str) -> TaskRecord | None:
        """Take a task out wherever it is; None if it is not queued."""
        task = self._all.pop(task_id, None)
        if task is None:
            return None
        per_label = self._by_label[task.label]
        del per_label[task_id]
        if not per_label:
            del self._by_label[task.label]
        return task

    def oldest(self) -> TaskRecord | None:
        """The task queued longest, or None."""
        return next(iter(self._all.values()), None)

    def oldest_of(self, label: str) -> TaskRecord | None:
        """The oldest queued task of `label`, or None."""
        per_label = self._by_label.get(label)
        return next(iter(per_label.values())) if per_label else None

    def count(self, label: str) -> int:
        """Queued tasks of `label`."""
        per_label = self._by_label.get(label)
        return len(per_label) if per_label else 0

    def labels(self) -> list[str]:
        """Labels with queued tasks, the one whose oldest task is oldest first."""
        by_label = self._by_label
        return sorted(by_label, key=lambda lbl: next(iter(by_label[lbl].values())).enqueued_at)

    def drain(self) -> list[TaskRecord]:
        """Empty the queue, returning every task oldest first."""
        tasks = list(self._all.values())
        self._all.clear()
        self._by_label.clear()
        return tasks


#: What a kept result costs besides its answer (the record, its dicts, the index entries).
RECORD_BYTES = 1024


@dataclass
class ResultStore:
    """Every known task by id: live ones, and finished ones until `ttl_s` after they finished.

    Finished tasks are also bounded by number (`max_results`) and by the bytes of their
    answers (`max_bytes`, each counted `answer_bytes + RECORD_BYTES`): past either, the oldest
    finished ones are dropped first (their ids then read as unknown). 0 means no bound.
    """

    ttl_s: float = 600.0
    max_results: int = 0
    max_bytes: int = 0
    _tasks: dict[str, TaskRecord] = field(default_factory=dict)
    #: Finished tasks, oldest first: id -> (when it finished, bytes counted).
    _finished: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def finished_count(self) -> int:
        """Finished tasks kept."""
        return len(self._finished)

    @property
    def finished_bytes(self) -> int:
        """Bytes counted for the finished tasks kept."""
        return self._bytes

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def add(self, task: TaskRecord) -> None:
        self._forget_finished(task.task_id)  # a finished task's id may be reused
        self._tasks[task.task_id] = task

    def finished(self, task: TaskRecord, now: float) -> None:
        """Start the retention clock of a finished task; its parameters are dropped, and the
        oldest finished tasks go when the bounds are passed."""
        task.drop_parameters()
        self._forget_finished(task.task_id)
        size = task.answer_bytes + RECORD_BYTES
        self._finished[task.task_id] = (now, size)
        self._bytes += size
        # The newest stays whatever its size: its caller is about to read it.
        while len(self._finished) > 1 and self._over():
            self._drop_oldest()

    def live(self, task_id: str) -> bool:
        """Whether a task with this id is queued or running (a duplicate id is refused)."""
        task = self._tasks.get(task_id)
        return task is not None and not task.state.finished

    def expire(self, now: float) -> int:
        """Drop finished tasks older than the TTL; returns how many went."""
        dropped = 0
        while self._finished:
            at, _ = next(iter(self._finished.values()))
            if now - at < self.ttl_s:
                break
            self._drop_oldest()
            dropped += 1
        return dropped

    def _over(self) -> bool:
        return bool(
            (self.max_results and len(self._finished) > self.max_results)
            or (self.max_bytes and self._bytes > self.max_bytes)
        )

    def _drop_oldest(self) -> None:
        task_id, (_, size) = self._finished.popitem(last=False)
        self._bytes -= size
        task = self._tasks.get(task_id)
        if task is not None and task.state.finished:
            del self._tasks[task_id]

    def _forget_finished(self, task_id: str) -> None:
        kept = self._finished.pop(task_id, None)
        if kept is not None:
            self._bytes -= kept[1]
