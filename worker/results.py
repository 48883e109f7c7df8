"""Recently finished results, so that a task id sent again is answered, not run again.

With several dispatchers (docs/architecture.md §6.6) one task id can reach a worker twice: a
dispatcher dies, and a survivor claims its async task from the shared store and sends it
again, or a synchronous caller retries through another dispatcher with the same id. If the
first run's result is still known here, the second arrival is answered with it; the rule that
decides and the bounded memory it reads are here, the wiring in worker/runtime.py.

What is remembered: successful results only. An error (a failed load, a passed deadline, a
BUSY or shutdown answer) is worth running again on a retry; a success is not.

Why a bounded memory is safe: a re-send of a task that already ran comes within one lease
and one claim period of its dispatcher's death (async: `--lease-s`, 15 s by default, plus a
third of it), or within the caller's retry budget (sync, usually at once). `MAX_AGE_S` covers
both with margin; past it, or past the count and byte bounds under a heavy stream of large
results, the task simply runs again, as it would without this memory (a duplicate run, never
a wrong answer). The results still waiting in a down link's outbox are found there instead
(worker/connection.py), whatever their age.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from proto import smartrouting_pb2 as pb

#: Results kept at most (the oldest go first).
MAX_RESULTS = 4096
#: Their encoded size at most, summed (embeddings of long batches are large).
MAX_BYTES = 32 * 1024 * 1024
#: How long a result is kept: lease + claim period (~20 s by default) with margin, and a
#: synchronous caller's retries.
MAX_AGE_S = 120.0


def worth_remembering(result: pb.TaskResult) -> bool:
    """Only a success answers a re-send; an error is run again (module docstring)."""
    return result.ok


def answer_for(task: pb.Task, result: pb.TaskResult) -> pb.TaskResult:
    """`result` (of an earlier arrival of `task`'s id) as the answer to this arrival: the same
    result, carrying this arrival's attempt."""
    answer = pb.TaskResult()
    answer.CopyFrom(result)
    answer.attempt = task.attempt
    return answer


@dataclass
class _Entry:
    result: pb.TaskResult
    size: int
    finished: float


class RecentResults:
    """Successful results by task id, bounded by count, total bytes and age (LRU by finish).

    O(1) per `remember` and `get` (amortised: expired entries leave from the old end)."""

    def __init__(
        self,
        max_results: int = MAX_RESULTS,
        max_bytes: int = MAX_BYTES,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        #: Encoded bytes of the results held now.
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, result: pb.TaskResult) -> None:
        """Keep a finished result (a success; anything else is ignored)."""
        if not worth_remembering(result):
            return
        size = result.ByteSize()
        if size > self.max_bytes:
            return  # alone it breaks the bound: not kept
        self._drop(result.task_id)
        self._entries[result.task_id] = _Entry(result, size, self.clock())
        self.bytes += size
        while len(self._entries) > self.max_results or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._expire()

    def get(self, task_id: str) -> pb.TaskResult | None:
        """The result kept for `task_id`, if it is still within the bounds."""
        self._expire()
        entry = self._entries.get(task_id)
        return entry.result if entry is not None else None

    def _expire(self) -> None:
        oldest = self.clock() - self.max_age_s
        while self._entries:
            first = next(iter(self._entries.values()))
            if first.finished >= oldest:
                return
            self._drop(first.result.task_id)

    def _drop(self, task_id: str) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is not None:
            self.bytes -= entry.size
