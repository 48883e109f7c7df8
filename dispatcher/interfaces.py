"""What the sans-I/O dispatcher core needs from the world, as protocols.

The core (`dispatcher.core`) never reads a clock, schedules a callback, touches a socket, a
database or a metric by itself: it is handed a `Clock`, a `Timers`, one `WorkerLink` per
connected worker and a list of `CoreObserver`s. The asyncio runtime (`dispatcher.runtime`)
gives it real ones; the simulator (`benchmark.simulation`) gives it virtual time, so the
policy is judged by driving the real core (docs/architecture.md §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dispatcher.registry import WorkerRecord
from dispatcher.routing import Decision, Preload
from dispatcher.tasks import TaskRecord
from proto import smartrouting_pb2 as pb


class Clock(Protocol):
    """Time as the core sees it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (task ages, deadlines)."""
        ...

    def unix(self) -> float:
        """Seconds since the epoch (deadlines sent to workers)."""
        ...


class Cancellable(Protocol):
    """A scheduled callback that can be called off."""

    def cancel(self) -> None: ...


class Timers(Protocol):
    """Runs a callback later, on the core's thread."""

    def call_later(self, delay_s: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        """Call `callback(*args)` after `delay_s` seconds."""
        ...


class WorkerLink(Protocol):
    """The sending side of one worker connection."""

    def send(self, message: pb.DispatcherMessage) -> None:
        """Queue a frame for the worker (never blocks)."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection."""


class CoreObserver(Protocol):
    """Told of everything the core does, after it did it (statistics, metrics, storage).

    Observers must not call back into the core: they see events, they do not take decisions.
    """

    def task_accepted(self, task: TaskRecord) -> None: ...

    def task_routed(self, task: TaskRecord, decision: Decision, now: float) -> None:
        """A decision was applied: the task was dispatched or queued."""

    def task_redispatched(self, task: TaskRecord) -> None: ...

    def preload_sent(self, preload: Preload) -> None:
        """A worker was told to load a copy of a label before a task needs it."""

    def task_finished(self, task: TaskRecord, now: float) -> None:
        """The task has its answer (completed, or failed with `task.error`)."""

    def result_observed(
        self, record: WorkerRecord | None, label: str, result: pb.TaskResult
    ) -> None:
        """A worker reported a task's run (counted once per result, late ones included)."""

    def late_result(self, worker_id: str, task_id: str) -> None:
        """A result for a task already answered or moved elsewhere (it ran twice or late)."""

    def worker_joined(self, record: WorkerRecord) -> None: ...

    def worker_left(self, record: WorkerRecord) -> None: ...

    def worker_suspended(self, record: WorkerRecord, why: str) -> None:
        """The circuit breaker took a worker out of routing for a cool-down."""


class NullObserver:
    """An observer that ignores everything (a base for observers that need a few events)."""

    def task_accepted(self, task: TaskRecord) -> None:
        pass

    def task_routed(self, task: TaskRecord, decision: Decision, now: float) -> None:
        pass

    def task_redispatched(self, task: TaskRecord) -> None:
        pass

    def preload_sent(self, preload: Preload) -> None:
        pass

    def task_finished(self, task: TaskRecord, now: float) -> None:
        pass

    def result_observed(
        self, record: WorkerRecord | None, label: str, result: pb.TaskResult
    ) -> None:
        pass

    def late_result(self, worker_id: str, task_id: str) -> None:
        pass

    def worker_joined(self, record: WorkerRecord) -> None:
        pass

    def worker_left(self, record: WorkerRecord) -> None:
        pass

    def worker_suspended(self, record: WorkerRecord, why: str) -> None:
        pass
