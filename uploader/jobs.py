"""Asynchronous uploads: the state of each `POST /upload-model` sent with `"async": true`.

A job is answered 202 at once and read at `GET /uploads/{id}`. It goes through the phases
`queued` (waiting for a conversion slot: the service converts `max_concurrent` models at a
time, one by default), `load`, `export`, `validate` (the builder's steps) and `publish` (the
version moved into the repository), each with the wall-clock time it started, and ends in state
`success` with the body the synchronous call answers, or `failed` with its error body and HTTP
status.

Bookkeeping only, no I/O: the service (`uploader.service`) runs the conversion and reports
to the job. Phases are reported from the conversion's thread, states read on the event loop,
so every change happens under one lock. Bounded: at most `max_pending` jobs queued or running
(one more is refused 429 `too_many_uploads`), at most `max_kept` finished ones kept, each
forgotten `ttl_s` after it ended (the oldest first when over the bound).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uploader.errors import TooManyUploads, UploaderError

#: The phases of a conversion, in order.
PHASES = ("queued", "load", "export", "validate", "publish")
QUEUED, LOAD, EXPORT, VALIDATE, PUBLISH = PHASES
#: The states of a job: unfinished (queued, running) or finished (success, failed).
SUCCESS, FAILED = "success", "failed"
#: How the real builder's progress messages (`uploader.convert.build_entry`) begin, per phase.
PHASE_MARKERS = (("loading ", LOAD), ("exporting ", EXPORT), ("validating ", VALIDATE))

#: Defaults of the bounds.
MAX_PENDING = 16
MAX_KEPT = 100
TTL_S = 3600.0


def phase_of(message: str) -> str | None:
    """The phase a builder's progress message starts, or None for any other message."""
    for prefix, phase in PHASE_MARKERS:
        if message.startswith(prefix):
            return phase
    return None


@dataclass
class UploadJob:
    """One asynchronous upload."""

    upload_id: str
    model_id: str
    created_unix: float
    #: Each phase entered, with when: `{"phase", "started_unix"}`, in order.
    phases: list[dict[str, Any]] = field(default_factory=list)
    state: str = QUEUED
    finished_unix: float | None = None
    #: On success: the synchronous answer's body.
    result: dict[str, Any] | None = None
    #: On failure: the error body and its HTTP status.
    error: dict[str, str] | None = None
    http_status: int | None = None
    #: Set when the job ends (on the event loop that created it: long polls wait on it).
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in (SUCCESS, FAILED)

    @property
    def phase(self) -> str:
        return str(self.phases[-1]["phase"]) if self.phases else QUEUED

    def status_json(self) -> dict[str, Any]:
        """The `GET /uploads/{id}` answer."""
        body: dict[str, Any] = {
            "upload_id": self.upload_id,
            "model_id": self.model_id,
            "state": self.state,
            "phase": self.phase,
            "phases": [dict(p) for p in self.phases],
            "created_unix": self.created_unix,
            "status_url": status_url(self.upload_id),
        }
        if self.finished_unix is not None:
            body["finished_unix"] = self.finished_unix
        if self.result is not None:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
            body["http_status"] = self.http_status
        return body


def status_url(upload_id: str) -> str:
    """Where a job's state is read."""
    return f"/uploads/{upload_id}"


class UploadJobs:
    """The asynchronous uploads of one service, bounded (see the module doc)."""

    def __init__(
        self,
        max_pending: int = MAX_PENDING,
        max_kept: int = MAX_KEPT,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_pending = max_pending
        self.max_kept = max_kept
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, UploadJob] = {}
        #: Finished jobs, oldest end first.
        self._finished: OrderedDict[str, UploadJob] = OrderedDict()

    def create(self, model_id: str) -> UploadJob:
        """A new queued job; TooManyUploads when `max_pending` are unfinished already."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise TooManyUploads(
                    f"{len(self._pending)} asynchronous uploads are queued or running (limit "
                    f"{self.max_pending}); try again when one has finished"
                )
            now = self.clock()
            job = UploadJob(uuid.uuid4().hex, model_id, now)
            job.phases.append({"phase": QUEUED, "started_unix": now})
            self._pending[job.upload_id] = job
            return job

    def get(self, upload_id: str) -> UploadJob | None:
        """The job `upload_id`, unless unknown or expired."""
        with self._lock:
            self._expire(self.clock())
            return self._pending.get(upload_id) or self._finished.get(upload_id)

    def enter(self, job: UploadJob, phase: str) -> None:
        """`job` starts `phase` (repeats and phases out of order are ignored)."""
        with self._lock:
            if job.finished or PHASES.index(phase) <= PHASES.index(job.phase):
                return
            job.state = "running"
            job.phases.append({"phase": phase, "started_unix": self.clock()})

    def progress(self, job: UploadJob, message: str) -> None:
        """A builder's progress message: enters the phase it starts, if any."""
        phase = phase_of(message)
        if phase is not None:
            self.enter(job, phase)

    def succeed(self, job: UploadJob, result: dict[str, Any]) -> None:
        """`job` ended with the synchronous answer `result`."""
        self._finish(job, SUCCESS, result=result)

    def fail(self, job: UploadJob, error: UploaderError) -> None:
        """`job` ended with `error`."""
        self._finish(job, FAILED, error=error)

    def _finish(
        self,
        job: UploadJob,
        state: str,
        result: dict[str, Any] | None = None,
        error: UploaderError | None = None,
    ) -> None:
        with self._lock:
            now = self.clock()
            job.state, job.finished_unix, job.result = state, now, result
            if error is not None:
                job.error, job.http_status = error.to_json(), error.status
            self._pending.pop(job.upload_id, None)
            self._finished[job.upload_id] = job
            self._expire(now)
        job.done.set()

    def _expire(self, now: float) -> None:
        """Forget finished jobs past their TTL, then the oldest over `max_kept` (lock held)."""
        while self._finished:
            oldest = next(iter(self._finished.values()))
            expired = (oldest.finished_unix or now) + self.ttl_s <= now
            if not expired and len(self._finished) <= self.max_kept:
                break
            self._finished.popitem(last=False)

    def counts(self) -> tuple[int, int]:
        """(unfinished jobs, finished jobs kept)."""
        with self._lock:
            return len(self._pending), len(self._finished)
