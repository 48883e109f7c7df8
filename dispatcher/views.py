"""JSON views of the dispatcher's state: /stats and /workers (docs/interfaces.md section 3)."""

from __future__ import annotations

import time
from typing import Any

from dispatcher.runtime import Dispatcher
from dispatcher.stats import LabelStats


def stats_json(d: Dispatcher) -> dict[str, Any]:
    """The /stats answer (docs/interfaces.md section 3)."""
    c, core = d.stats.counters, d.core
    per_label: dict[str, Any] = {}
    # Only catalogue labels are keys (dispatcher.catalogue): junk labels cannot grow /stats.
    queued_labels = {
        label for label in core.queue.labels() if d.catalogue.metric_label(label) == label
    }
    for label in sorted(set(c.per_label) | queued_labels):
        s = c.per_label.get(label, LabelStats())
        per_label[label] = {
            "completed": s.completed,
            "misses": s.misses,
            # Means of what workers reported; the learned estimate before any report.
            "avg_load_ms": round(
                s.load_ms_total / s.misses if s.misses else core.estimates.load_ms(label), 3
            ),
            "avg_run_ms": round(
                s.run_ms_total / s.completed if s.completed else core.estimates.run_ms(label), 3
            ),
            "queued": core.queue.count(label),
        }
    per_worker = {
        wid: {
            "completed": d.stats.worker(wid).completed,
            "misses": d.stats.worker(wid).misses,
            "labels": sorted(w.labels),
            "busy": w.free_slots == 0,
        }
        for wid, w in sorted(core.registry.workers.items())
    }
    done = c.completed
    return {
        "policy": d.config.policy,
        "uptime_s": round(time.monotonic() - d.started_at, 3),
        "workers_connected": len(core.registry),
        "tasks_submitted": c.submitted,
        "tasks_completed": done,
        "tasks_failed": c.failed,
        "tasks_redispatched": c.redispatched,
        "label_hits": c.hits,
        "label_misses": c.misses,
        "load_time_s_total": round(c.load_ms_total / 1000, 6),
        "run_time_s_total": round(c.run_ms_total / 1000, 6),
        "avg_task_runtime_s": (
            round((c.load_ms_total + c.run_ms_total) / 1000 / done, 6) if done else 0.0
        ),
        "queue_depth": len(core.queue),
        "in_flight": len(core.running),
        "per_label": per_label,
        "per_worker": per_worker,
    }


def workers_json(d: Dispatcher, detail: bool) -> dict[str, Any]:
    """The /workers answer; `detail` adds labels, state and counters."""
    ids = sorted(d.core.registry.workers)
    if not detail:
        return {"workers": ids}
    return {
        "workers": [
            {
                "worker_id": w.worker_id,
                "state": w.state.value,
                "capacity": w.capacity,
                "slots": w.slots,
                "engine": w.engine,
                "device": w.device,
                "labels": sorted(w.labels),
                "labels_loading": sorted(w.loading),
                "in_flight": len(w.in_flight),
                "failures_in_a_row": w.failures,
                "completed": d.stats.worker(w.worker_id).completed,
                "misses": d.stats.worker(w.worker_id).misses,
            }
            for w in (d.core.registry.workers[i] for i in ids)
        ]
    }
