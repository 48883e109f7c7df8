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
  memory or the scrape;
- `DELETE /models/{name}` (`dispatcher.model_admin`) marks a model `begin_delete`: new tasks
  for it are answered 410 `model_deleted` at once while its workers drain and unload it;
  `finish_delete` forgets it (404 from then on, even where workers still declare it, until it
  is published again), `abort_delete` serves it again when the delete could not finish;
- the periodic catalogue sync (`dispatcher.model_admin`, `--catalogue-sync-s`) asks
  `reconcile` what the uploader's `GET /models` (parsed by `listed_models`) changes: models
  published, rolled back or deleted through another dispatcher.

It is a `CoreObserver`: it follows workers joining and leaving and tasks failing with
`MODEL_LOAD_FAILED`; it never calls back into the core.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from msgspec import Struct

from dispatcher.errors import (
    DispatcherError,
    ModelDeleted,
    ModelLoadFailed,
    ModelNotFound,
    TaskFailed,
)
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
#: Most deleted names remembered (the oldest is forgotten first).
MAX_DELETED = 1024


class ModelEntry(Struct, forbid_unknown_fields=True):
    """One model of `GET /models` (`Catalogue.describe`)."""

    name: str
    version: str | None
    content_hash: str | None
    published: bool
    servable_by: int
    loaded_on: list[str]
    load_ms: float
    run_ms: float
    load_failed: bool


class ModelCatalogue(Struct, forbid_unknown_fields=True):
    """The `GET /models` answer."""

    models: list[ModelEntry]


class LabelDetail(Struct, forbid_unknown_fields=True):
    """One label of `GET /labels?detail=true`: its holders and current version."""

    workers: list[str]
    version: str | None
    content_hash: str | None


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
        #: Published models' content hashes (`sha256:...`), when the uploader gave one.
        self.hashes: dict[str, str] = {}
        #: Models being deleted, and deleted ones (insertion order: oldest first).
        self.deleting: set[str] = set()
        self.deleted: dict[str, None] = {}
        #: Labels declared by connected workers, with how many declare each.
        self._declared: dict[str, int] = {}
        self._failures: dict[tuple[str, str], LoadFailure] = {}

    # ---- what is known ------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Whether any label is accepted: a worker serves any label, or nothing is known."""
        return bool(self._any) or not (self._servable or self.published)

    def labels(self) -> list[str]:
        """Every label known by name (declared or published, not deleted), sorted."""
        return sorted((set(self._declared) | set(self.published)) - set(self.deleted))

    def known(self, label: str) -> bool:
        """Whether a task for `label` can be served (always, while the catalogue is open,
        unless the model was deleted)."""
        if label in self.deleted:
            return False
        return self.open or label in self._declared or label in self.published

    def named(self, label: str) -> bool:
        """Whether `label` is a model of the catalogue by name (what `DELETE` may remove)."""
        return label in self.labels()

    def version(self, label: str) -> str:
        """The published version of `label` ("" when unknown or not published)."""
        return self.published.get(label, "")

    def content_hash(self, label: str) -> str:
        """The content hash of `label`'s published version ("" when unknown)."""
        return self.hashes.get(label, "")

    def metric_label(self, label: str) -> str:
        """`label` when it may be a metric label and a `/stats` key; else `OTHER_LABEL`.

        While no worker is connected and nothing is published every label is refused a
        series of its own, so queued junk cannot grow the scrape either."""
        if label in self.deleted:
            return OTHER_LABEL
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
        if label in self.deleting:
            return ModelDeleted(f"model {label!r} is being deleted (DELETE /models/{label})")
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
        if label in self.deleted:
            detail += " (it was deleted; publish it again to use it)"
        elif hints:
            detail += "; did you mean " + " or ".join(repr(h) for h in hints) + "?"
        elif "/" in label:
            detail += f" (a label spells a Hugging Face id with '--': {label.replace('/', '--')!r})"
        return detail + " (GET /models lists the models)"

    # ---- changes ------------------------------------------------------------------------

    def publish(self, label: str, version: str = "", content_hash: str = "") -> bool:
        """The uploader published `label` (a new version): known, and its failures cleared;
        whether this changed its version or content hash (a repeated report of the same one
        does not)."""
        changed = (
            self.published.get(label) != version
            or label in self.deleted
            or bool(content_hash and self.hashes.get(label) != content_hash)
        )
        self.published[label] = version
        if content_hash:
            self.hashes[label] = content_hash
        self.deleted.pop(label, None)
        self._forget_failures(label)
        return changed

    def begin_delete(self, label: str) -> None:
        """`DELETE /models/{label}` started: new tasks for it are refused 410."""
        self.deleting.add(label)

    def abort_delete(self, label: str) -> None:
        """The delete could not finish: `label` is served again (loaded on demand)."""
        self.deleting.discard(label)

    def finish_delete(self, label: str) -> None:
        """The model is gone: forgotten, and refused (404) until published again."""
        self.deleting.discard(label)
        self.published.pop(label, None)
        self.hashes.pop(label, None)
        self._forget_failures(label)
        self.deleted.pop(label, None)
        if len(self.deleted) >= MAX_DELETED:
            del self.deleted[next(iter(self.deleted))]
        self.deleted[label] = None

    def _forget_failures(self, label: str) -> None:
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

    def sync_actions(
        self, listed: Iterable[ListedModel], leave_alone: Collection[str] = ()
    ) -> list[SyncAction]:
        """What the uploader's list changes here (`reconcile` on this catalogue's state);
        models being deleted here are always left alone."""
        return reconcile(self.published, self.hashes, listed, {*leave_alone, *self.deleting})

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
                "content_hash": self.hashes.get(label) or None,
                "published": label in self.published,
                "servable_by": self._declared.get(label, 0),
                "loaded_on": sorted(registry.holders(label)),
                "load_ms": round(estimates.load_ms(label), 3),
                "run_ms": round(estimates.run_ms(label), 3),
                "load_failed": label in failed,
            }
            for label in self.labels()
        ]

    def label_details(self, registry: Registry) -> dict[str, dict[str, Any]]:
        """`GET /labels?detail=true`: each held label's workers, version and content hash."""
        return {
            label: {
                "workers": workers,
                "version": self.published.get(label) or None,
                "content_hash": self.hashes.get(label) or None,
            }
            for label, workers in registry.labels().items()
        }


class ListedModel(NamedTuple):
    """One model of the uploader's `GET /models`: its current version and content hash
    ("" when the uploader gave none)."""

    name: str
    version: str
    content_hash: str


@dataclass(frozen=True)
class PublishModel:
    """Sync action: `label` is new here, or at another version or content hash."""

    label: str
    version: str
    content_hash: str


@dataclass(frozen=True)
class ForgetModel:
    """Sync action: the uploader no longer has `label` (deleted through another dispatcher)."""

    label: str


SyncAction = PublishModel | ForgetModel


def reconcile(
    published: Mapping[str, str],
    hashes: Mapping[str, str],
    listed: Iterable[ListedModel],
    leave_alone: Collection[str] = (),
) -> list[SyncAction]:
    """The catalogue sync's rule: the uploader is the source of truth for what is published.

    `published` (label -> version) and `hashes` (label -> content hash) are the catalogue's
    state, `listed` the uploader's `GET /models`. A listed model that is new, or at another
    version, or at another content hash (a model deleted and published again may restart at
    version 1) is published; a published model the uploader no longer lists is forgotten.
    Labels in `leave_alone` (being deleted here, or changed here while the list was read, so
    the list may predate the change) get no action. Actions are sorted by label.
    """
    actions: list[SyncAction] = []
    current = {model.name: model for model in listed}
    for name, model in current.items():
        if name in leave_alone:
            continue
        known = published.get(name)
        new_hash = bool(model.content_hash) and hashes.get(name, "") != model.content_hash
        if known is None or known != model.version or new_hash:
            actions.append(PublishModel(name, model.version, model.content_hash))
    for name in published:
        if name not in current and name not in leave_alone:
            actions.append(ForgetModel(name))
    return sorted(actions, key=lambda action: action.label)


def listed_models(answer: bytes) -> list[ListedModel] | None:
    """The models of the uploader's `GET /models` answer; None when the body is not such an
    answer (then nothing may be concluded from it: an empty list would forget everything)."""
    try:
        body = json.loads(answer)
    except ValueError:
        return None
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return None
    found = []
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            continue
        version, digest = entry.get("version"), entry.get("content_hash")
        found.append(
            ListedModel(
                entry["model_name"],
                "" if version is None else str(version),
                digest if isinstance(digest, str) else "",
            )
        )
    return found


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


def published_hash(answer: bytes) -> str:
    """The content hash of the uploader's success answer ("" when it has none)."""
    try:
        body = json.loads(answer)
    except ValueError:
        return ""
    value = body.get("content_hash") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""
