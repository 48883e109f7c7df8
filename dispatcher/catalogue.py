"""The model catalogue: which labels the dispatcher serves, and which failed to load. Pure.

A label is in the catalogue when a connected worker declares it can serve it (`Hello.servable`
with `servable_only`), when the uploader published it (`publish`), or when a connected worker
serves any label (the simulated engine: benchmarks and `sample_task` examples use arbitrary
labels). With no worker connected and nothing published the catalogue cannot tell and is
*open*: tasks queue as before and are answered when workers arrive.

Uses (docs/architecture.md §3.3):

- admission asks `refusal(label, now)` and answers an unknown label 404 `model_not_found` with
  a "did you mean" hint at once, never sending a frame to a worker; a label whose load failed
  recently is answered 502 `model_load_failed` at once (one load attempt per window);
- `Stats` asks `metric_label(label)`: only catalogue labels become Prometheus label values and
  `/stats` entries, anything else is counted under `OTHER_LABEL`, so junk labels cannot grow
  memory or the scrape.

It is a `CoreObserver`: it follows workers joining and leaving and tasks failing with
`MODEL_LOAD_FAILED`; it never calls back into the core.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from msgspec import Struct

from dispatcher.errors import DispatcherError, ModelLoadFailed, ModelNotFound, TaskFailed
from dispatcher.estimates import LabelEstimates
from dispatcher.interfaces import NullObserver
from dispatcher.registry import Registry, WorkerRecord
from dispatcher.tasks import TaskRecord

#: The metric label value and `/stats` key of every label outside the catalogue.
OTHER_LABEL = "__other__"
#: How long a failed load is remembered (seconds): tasks for it are answered at once.
FAILED_LOAD_TTL_S = 60.0
#: Most (label, version) failures remembered at once (the oldest is forgotten first).
MAX_FAILURES = 1024
#: Most close matches offered in a hint.
MAX_HINTS = 3


class ModelEntry(Struct, forbid_unknown_fields=True):
    """One model of `GET /models` (`Catalogue.describe`)."""

    name: str
    version: str | None
    published: bool
    servable_by: int
    loaded_on: list[str]
    load_ms: float
    run_ms: float
    load_failed: bool


class ModelCatalogue(Struct, forbid_unknown_fields=True):
    """The `GET /models` answer."""

    models: list[ModelEntry]


@dataclass(frozen=True)
class LoadFailure:
    """A load of `label` at `version` failed; remembered until `until` (monotonic s)."""

    label: str
    version: str
    until: float


class Catalogue(NullObserver):
    """Models known from workers' Hellos and the uploader's publishes."""

    def __init__(self, failed_load_ttl_s: float = FAILED_LOAD_TTL_S) -> None:
        self.failed_load_ttl_s = failed_load_ttl_s
        #: Connected workers that declared what they serve: worker id -> labels.
        self._servable: dict[str, frozenset[str]] = {}
        #: Connected workers that serve any label (simulated).
        self._any: set[str] = set()
        #: Published models: label -> version (the uploader's, "" when it gave none).
        self.published: dict[str, str] = {}
        #: Labels declared by connected workers, with how many declare each.
        self._declared: dict[str, int] = {}
        self._failures: dict[tuple[str, str], LoadFailure] = {}

    # ---- what is known ------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Whether any label is accepted: a worker serves any label, or nothing is known."""
        return bool(self._any) or not (self._servable or self.published)

    def labels(self) -> list[str]:
        """Every label known by name (declared or published), sorted."""
        return sorted(set(self._declared) | set(self.published))

    def known(self, label: str) -> bool:
        """Whether a task for `label` can be served (always, while the catalogue is open)."""
        return self.open or label in self._declared or label in self.published

    def version(self, label: str) -> str:
        """The published version of `label` ("" when unknown or not published)."""
        return self.published.get(label, "")

    def metric_label(self, label: str) -> str:
        """`label` when it may be a metric label and a `/stats` key; else `OTHER_LABEL`.

        While no worker is connected and nothing is published every label is refused a
        series of its own, so queued junk cannot grow the scrape either."""
        if label in self._declared or label in self.published or self._any:
            return label
        return OTHER_LABEL

    def did_you_mean(self, label: str) -> list[str]:
        """Known labels close to `label`: first the Hugging Face id spelled as a label
        (`org/name` → `org--name`), then close matches by similarity."""
        names = self.labels()
        hints: list[str] = []
        mapped = label.strip().replace("/", "--")
        if mapped != label and mapped in names:
            hints.append(mapped)
        for candidate in (label, mapped):
            for match in difflib.get_close_matches(candidate, names, n=MAX_HINTS, cutoff=0.6):
                if match not in hints:
                    hints.append(match)
        if not hints:
            lowered = mapped.lower()
            hints = [name for name in names if name.lower() == lowered]
        return hints[:MAX_HINTS]

    def refusal(self, label: str, now: float) -> DispatcherError | None:
        """Why a task for `label` is answered at once, or None when it may go to a worker."""
        if not self.known(label):
            return ModelNotFound(self.not_found_detail(label))
        failure = self._failures.get((label, self.version(label)))
        if failure is None:
            return None
        if failure.until <= now:
            del self._failures[(label, failure.version)]
            return None
        where = f" version {failure.version}" if failure.version else ""
        return ModelLoadFailed(
            f"model {label!r}{where} failed to load; it is not tried again for"
            f" {failure.until - now:.0f} s (publish a new version, or see the worker's log)",
            retry_after_s=failure.until - now,
        )

    def not_found_detail(self, label: str) -> str:
        """The 404 detail for `label`: what was asked, and the closest known names."""
        shown = label if len(label) <= 200 else label[:200] + "..."
        hints = self.did_you_mean(label)
        detail = f"no model {shown!r}"
        if hints:
            detail += "; did you mean " + " or ".join(repr(h) for h in hints) + "?"
        elif "/" in label:
            detail += f" (a label spells a Hugging Face id with '--': {label.replace('/', '--')!r})"
        return detail + " (GET /models lists the models)"

    # ---- changes ------------------------------------------------------------------------

    def publish(self, label: str, version: str = "") -> None:
        """The uploader published `label` (a new version): known, and its failures cleared."""
        self.published[label] = version
        for key in [k for k in self._failures if k[0] == label]:
            del self._failures[key]

    def remove(self, label: str) -> None:
        """Forget a published model (`DELETE /models/{name}`)."""
        self.published.pop(label, None)
        for key in [k for k in self._failures if k[0] == label]:
            del self._failures[key]

    def load_failed(self, label: str, now: float, version: str | None = None) -> LoadFailure:
        """Remember that `label` failed to load, for `failed_load_ttl_s`."""
        version = self.version(label) if version is None else version
        if len(self._failures) >= MAX_FAILURES:
            oldest = min(self._failures.values(), key=lambda f: f.until)
            del self._failures[(oldest.label, oldest.version)]
        failure = LoadFailure(label, version, now + self.failed_load_ttl_s)
        self._failures[(label, version)] = failure
        return failure

    def failures(self, now: float) -> list[LoadFailure]:
        """Failures still remembered at `now`."""
        return [f for f in self._failures.values() if f.until > now]

    # ---- observer -----------------------------------------------------------------------

    def worker_joined(self, record: WorkerRecord) -> None:
        if record.servable is None:
            self._any.add(record.worker_id)
            return
        self._servable[record.worker_id] = record.servable
        for label in record.servable:
            self._declared[label] = self._declared.get(label, 0) + 1

    def worker_left(self, record: WorkerRecord) -> None:
        self._any.discard(record.worker_id)
        for label in self._servable.pop(record.worker_id, frozenset()):
            left = self._declared.get(label, 1) - 1
            if left > 0:
                self._declared[label] = left
            else:
                self._declared.pop(label, None)

    def task_finished(self, task: TaskRecord, now: float) -> None:
        error = task.error
        if isinstance(error, TaskFailed) and error.worker_code == "MODEL_LOAD_FAILED":
            self.load_failed(task.label, now)

    # ---- views --------------------------------------------------------------------------

    def describe(
        self, registry: Registry, estimates: LabelEstimates, now: float
    ) -> list[dict[str, Any]]:
        """`GET /models`: every model known by name, where it is loaded, what it costs."""
        failed = {f.label for f in self.failures(now)}
        return [
            {
                "name": label,
                "version": self.published.get(label) or None,
                "published": label in self.published,
                "servable_by": self._declared.get(label, 0),
                "loaded_on": sorted(registry.holders(label)),
                "load_ms": round(estimates.load_ms(label), 3),
                "run_ms": round(estimates.run_ms(label), 3),
                "load_failed": label in failed,
            }
            for label in self.labels()
        ]


def models_published(answer: bytes) -> tuple[str, str] | None:
    """(model name, version) from the uploader's success answer, None when it has none."""
    try:
        body = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") != "success":
        return None
    name = body.get("model_name")
    if not isinstance(name, str) or not name:
        return None
    version = body.get("version")
    return name, str(version) if version is not None else ""
