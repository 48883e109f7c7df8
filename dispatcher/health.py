"""Per-worker health: a soft timeout on every dispatch, and a circuit breaker per worker.

A worker is another process on the network and is not trusted to answer (docs/architecture.md
§3.2). Sans-I/O like the core that owns it: time and delays come from the core's `Clock` and
`Timers`, and what must happen to a task is handed back to the core through two callbacks.

- **Soft timeout**: a dispatch not answered within max(`soft_timeout_min_s`,
  `soft_timeout_factor` x the task's expected load + run time) is given up on that worker:
  `on_timed_out(task, worker_id)` (the core sends Cancel and re-dispatches it elsewhere).
- **Circuit breaker**: soft timeouts and errors of the worker's own (`WORKER_FAULTS`) in a row
  are counted; `breaker_failures` of them suspend the worker for `breaker_cooldown_s`, after
  which it takes tasks again (`on_resumed(worker_id)`) with one failure left before the next
  suspension; a success clears the count.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatcher.config import Config
from dispatcher.estimates import LabelEstimates
from dispatcher.interfaces import Cancellable, Clock, CoreObserver, Timers
from dispatcher.registry import Registry, WorkerState
from dispatcher.tasks import TaskRecord, TaskState
from proto import smartrouting_pb2 as pb

#: Worker error codes that count against the worker itself (not the caller or the model).
#: BUSY is not one: it is a race between dispatchers sharing the worker (docs/architecture.md
#: §6.6), and the core never hands it to `judge`.
WORKER_FAULTS = frozenset({pb.ENGINE_UNAVAILABLE, pb.INFERENCE_FAILED, pb.INTERNAL})


class WorkerHealth:
    """Soft timeouts and the circuit breaker of one core's workers."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        estimates: LabelEstimates,
        clock: Clock,
        timers: Timers,
        observers: list[CoreObserver],
        on_timed_out: Callable[[TaskRecord, str], None],
        on_resumed: Callable[[str], None],
    ) -> None:
        self.config = config
        self.registry = registry
        self.estimates = estimates
        self.clock = clock
        self.timers = timers
        self.observers = observers  # the core's own list: observers added later are told too
        self._on_timed_out = on_timed_out
        self._on_resumed = on_resumed
        self._soft_timeouts: dict[str, Cancellable] = {}

    # ---- soft timeouts ------------------------------------------------------------------

    def watch(self, task: TaskRecord, miss: bool) -> None:
        """Start the soft timeout of a task just dispatched."""
        now = self.clock.monotonic()
        load_ms = self.estimates.load_ms(task.label) if miss else 0.0
        expected_s = (load_ms + self.estimates.run_ms(task.label)) / 1000.0
        cfg = self.config
        soft_s = max(cfg.soft_timeout_min_s, cfg.soft_timeout_factor * expected_s)
        if now + soft_s < task.deadline:  # else the deadline answers first anyway
            self._soft_timeouts[task.task_id] = self.timers.call_later(
                soft_s, self._expired, task, task.attempt
            )

    def forget(self, task_id: str) -> None:
        """The task left its worker (answered, re-dispatched or failed)."""
        handle = self._soft_timeouts.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def _expired(self, task: TaskRecord, attempt: int) -> None:
        self._soft_timeouts.pop(task.task_id, None)
        if task.state is not TaskState.RUNNING or task.attempt != attempt or not task.worker_id:
            return
        worker_id = task.worker_id
        self.strike(worker_id, "soft timeout")
        self._on_timed_out(task, worker_id)

    # ---- circuit breaker ----------------------------------------------------------------

    def judge(self, worker_id: str, result: pb.TaskResult) -> None:
        """A success clears a worker's failure count; a failure of its own adds to it."""
        record = self.registry.workers.get(worker_id)
        if record is None:
            return
        if result.ok:
            record.failures = 0
        elif result.error_code in WORKER_FAULTS:
            self.strike(worker_id, pb.ErrorCode.Name(result.error_code))

    def strike(self, worker_id: str, why: str) -> None:
        """One more failure in a row; at `breaker_failures` the worker is suspended."""
        record = self.registry.workers.get(worker_id)
        if record is None:
            return
        record.failures += 1
        limit = self.config.breaker_failures
        if limit and record.failures >= limit and record.state is WorkerState.READY:
            self.registry.set_state(worker_id, WorkerState.SUSPENDED)
            for o in self.observers:
                o.worker_suspended(record, why)
            self.timers.call_later(self.config.breaker_cooldown_s, self._resume, worker_id)

    def _resume(self, worker_id: str) -> None:
        """Half-open: the worker takes tasks again; one more failure suspends it again."""
        record = self.registry.workers.get(worker_id)
        if record is None or record.state is not WorkerState.SUSPENDED:
            return
        record.failures = max(0, self.config.breaker_failures - 1)
        self.registry.set_state(worker_id, WorkerState.READY)
        self._on_resumed(worker_id)
