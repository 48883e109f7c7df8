"""Online estimates of load and run time per label (exponential moving averages).

Seeded from `Hello.label_costs` when a worker connects, then updated by every `TaskResult`.
The routing policy reads them to choose between waiting for a busy holder and loading the
label on another worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Assumed before anything is measured: loading is far dearer than running
#: (docs/architecture.md §1.1).
DEFAULT_LOAD_MS = 1000.0
DEFAULT_RUN_MS = 50.0


@dataclass
class MovingAverage:
    """An exponential moving average; the first sample sets it."""

    alpha: float = 0.2
    value: float = 0.0
    samples: int = 0

    def add(self, sample: float) -> None:
        """Fold one sample in."""
        if self.samples == 0:
            self.value = sample
        else:
            self.value += self.alpha * (sample - self.value)
        self.samples += 1


@dataclass
class LabelEstimates:
    """Load and run time per label, in milliseconds."""

    default_load_ms: float = DEFAULT_LOAD_MS
    default_run_ms: float = DEFAULT_RUN_MS
    alpha: float = 0.2
    _load: dict[str, MovingAverage] = field(default_factory=dict)
    _run: dict[str, MovingAverage] = field(default_factory=dict)

    def load_ms(self, label: str) -> float:
        """Expected time to load `label` on a worker."""
        avg = self._load.get(label)
        return avg.value if avg is not None and avg.samples else self.default_load_ms

    def run_ms(self, label: str) -> float:
        """Expected time to run one task of `label` once loaded."""
        avg = self._run.get(label)
        return avg.value if avg is not None and avg.samples else self.default_run_ms

    def seed(self, label: str, load_ms: float, run_ms: float) -> None:
        """Take a worker's own averages for a label nothing has been measured for yet."""
        if load_ms > 0 and label not in self._load:
            self._load[label] = MovingAverage(self.alpha)
            self._load[label].add(load_ms)
        if run_ms > 0 and label not in self._run:
            self._run[label] = MovingAverage(self.alpha)
            self._run[label].add(run_ms)

    def observe(self, label: str, *, load_ms: float | None, run_ms: float) -> None:
        """Record one finished task: its load time (on a miss) and its run time."""
        if load_ms is not None and load_ms > 0:
            self._load.setdefault(label, MovingAverage(self.alpha)).add(load_ms)
        if run_ms >= 0:
            self._run.setdefault(label, MovingAverage(self.alpha)).add(run_ms)

    def observe_result(
        self,
        label: str,
        *,
        label_miss: bool,
        load_ms: float,
        run_ms: float,
        turnaround_ms: float | None = None,
    ) -> None:
        """Learn from a worker's report of a completed task.

        The run time learned is how long a holder stays busy as the dispatcher sees it: the
        worker's run time, or the whole round trip (`turnaround_ms`, when known) minus the
        load when that is longer (network, queueing inside the worker).
        """
        busy_ms = run_ms
        if turnaround_ms is not None:
            busy_ms = max(run_ms, turnaround_ms - (load_ms if label_miss else 0.0))
        self.observe(label, load_ms=load_ms if label_miss else None, run_ms=busy_ms)
