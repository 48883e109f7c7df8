"""What a worker says is checked before the core believes it: pure functions, no I/O.

A worker is another process on the network: a bug, or a hostile peer, can send any bytes that
parse. The websocket endpoint runs every frame through here (docs/architecture.md §3.6):

- `hello_refusal`: a Hello the dispatcher will not accept (why, or None): capacity, slots,
  labels and label costs bounded, so one peer cannot make every routing decision slow or
  `/labels` huge;
- `worker_id_refusal`: the `Worker-Id` header, bounded and in a safe alphabet (it appears in
  logs, metrics and JSON answers);
- `clean_result` / `clean_costs`: timings made finite and clamped, so one NaN or 1e308 cannot
  poison the learned estimates or `/stats`;
- `clean_labels`: label lists bounded by the worker's capacity.

`parse_result_json` (used by the core) parses a result strictly: NaN and Infinity are not
JSON, and a result that needs them is answered as the worker's failure, not passed on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from proto import smartrouting_pb2 as pb

#: Most labels a worker may hold, and most tasks it may run at once.
MAX_CAPACITY = 1024
MAX_SLOTS = 1024
#: Longest label and worker id, in characters.
MAX_LABEL_CHARS = 256
MAX_WORKER_ID_CHARS = 128
#: Most models a worker may declare it can serve (Hello.servable): bounds the catalogue.
MAX_SERVABLE = 10_000
#: Timings above this (ms; an hour) are clamped: no real load or run takes longer.
MAX_REPORTED_MS = 3_600_000.0

_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")


def worker_id_refusal(worker_id: str) -> str | None:
    """Why this `Worker-Id` is refused, or None."""
    if not worker_id:
        return "missing Worker-Id header"
    if len(worker_id) > MAX_WORKER_ID_CHARS:
        return f"Worker-Id longer than {MAX_WORKER_ID_CHARS} characters"
    if not _WORKER_ID.match(worker_id):
        return "Worker-Id must be letters, digits and . _ : @ - (starting with a letter or digit)"
    return None


def hello_refusal(hello: pb.Hello) -> str | None:
    """Why this Hello is refused, or None."""
    capacity, slots = hello.capacity or 1, hello.slots or 1
    if capacity > MAX_CAPACITY:
        return f"capacity {capacity} is more than {MAX_CAPACITY}"
    if slots > MAX_SLOTS:
        return f"slots {slots} is more than {MAX_SLOTS}"
    if len(hello.labels_loaded) > capacity:
        return f"Hello lists {len(hello.labels_loaded)} loaded labels for capacity {capacity}"
    if len(hello.label_costs) > 4 * capacity:
        return f"Hello carries {len(hello.label_costs)} label costs for capacity {capacity}"
    if len(hello.servable) > MAX_SERVABLE:
        return f"Hello declares {len(hello.servable)} servable models (at most {MAX_SERVABLE})"
    for label in (*hello.labels_loaded, *hello.label_costs, *hello.servable):
        if not label or len(label) > MAX_LABEL_CHARS:
            return f"a label of {len(label)} characters (1 to {MAX_LABEL_CHARS} allowed)"
    return None


def clamp_ms(value: float) -> float:
    """A reported duration made usable: NaN and negatives are 0, the rest at most an hour."""
    if math.isnan(value) or value <= 0:
        return 0.0
    return min(value, MAX_REPORTED_MS)


def clean_costs(hello: pb.Hello) -> None:
    """Clamp the Hello's label costs in place (0 means "not measured")."""
    for cost in hello.label_costs.values():
        cost.load_ms = clamp_ms(cost.load_ms)
        cost.run_ms = clamp_ms(cost.run_ms)


def clean_labels(labels: Any, capacity: int) -> list[str]:
    """At most `capacity` non-empty labels of bounded length (the rest is ignored)."""
    return [label for label in labels if 0 < len(label) <= MAX_LABEL_CHARS][:capacity]


def clean_result(result: pb.TaskResult, capacity: int) -> None:
    """Clamp the result's timings and bound its label lists, in place."""
    result.load_ms = clamp_ms(result.load_ms)
    result.queue_ms = clamp_ms(result.queue_ms)
    result.run_ms = clamp_ms(result.run_ms)
    if len(result.labels_loaded) > capacity:
        kept = clean_labels(result.labels_loaded, capacity)
        del result.labels_loaded[:]
        result.labels_loaded.extend(kept)


def clean_change(change: pb.LabelsChanged, capacity: int) -> None:
    """Bound a LabelsChanged's label lists, in place."""
    for field in (change.labels_loaded, change.labels_loading):
        if len(field) > capacity:
            kept = clean_labels(field, capacity)
            del field[:]
            field.extend(kept)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_result_json(text: str) -> Any:
    """A worker's result, parsed strictly (NaN/Infinity refused); raises ValueError."""
    if not text:
        return None
    return json.loads(text, parse_constant=_no_constants)
