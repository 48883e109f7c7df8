"""The live status page: `/dashboard` (HTML, `/` redirects to it) and `/status.json` (its data).

The page is one static HTML document with inline CSS and script: no build step, nothing from
a CDN. The script polls `/status.json` every second and draws the workers (state, slot use,
labels), the labels (copies, demand, queue, hit rate), the queue and the recent tasks with
DOM text nodes only, so a label or a worker id can never inject markup. The page itself holds
no data and is open like `/docs`; `/status.json` names every caller's labels, so with API keys
on it needs a key like `/stats` (the page asks for one and keeps it in the tab's
sessionStorage).

`RecentTasks` is the core observer keeping a bounded ring of the last finished tasks.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dispatcher.event_log import task_fields
from dispatcher.interfaces import NullObserver
from dispatcher.stats import LabelStats
from dispatcher.tasks import TaskRecord

if TYPE_CHECKING:
    from dispatcher.runtime import Dispatcher

#: Finished tasks the page lists.
RECENT_TASKS = 50
#: Labels the page lists (the most demanded first), so a flood of names cannot bloat it.
MAX_LABELS = 200


class RecentTasks(NullObserver):
    """The last `size` finished tasks, newest first, as the fields of their log line."""

    def __init__(self, size: int = RECENT_TASKS) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def task_finished(self, task: TaskRecord, now: float) -> None:
        fields = task_fields(task)
        fields["finished_unix"] = round(time.time(), 3)
        self._ring.appendleft(fields)

    def __iter__(self) -> Any:
        return iter(list(self._ring))

    def __len__(self) -> int:
        return len(self._ring)


def status_json(d: Dispatcher) -> dict[str, Any]:
    """Everything the status page shows, read from the core and the statistics."""
    core, counters = d.core, d.stats.counters
    now = core.clock.monotonic()
    holders = core.registry.labels()
    queued = {label: core.queue.count(label) for label in core.queue.labels()}
    names = set(holders) | set(queued) | set(counters.per_label)
    demand = {label: core.demand.rate(label, now) for label in names}
    labels = []
    for label in sorted(names, key=lambda n: (-demand[n], n))[:MAX_LABELS]:
        s = counters.per_label.get(label, LabelStats())
        labels.append(
            {
                "label": label,
                "copies": len(holders.get(label, ())),
                "holders": holders.get(label, []),
                "demand_per_s": round(demand[label], 3),
                "queued": queued.get(label, 0),
                "completed": s.completed,
                "misses": s.misses,
                "hit_rate": _ratio(s.completed - s.misses, s.completed),
                "avg_load_ms": round(s.load_ms_total / s.misses, 1) if s.misses else None,
                "avg_run_ms": round(s.run_ms_total / s.completed, 1) if s.completed else None,
            }
        )
    workers = [
        {
            "worker_id": w.worker_id,
            "state": w.state.value,
            "engine": w.engine,
            "device": w.device,
            "capacity": w.capacity,
            "slots": w.slots,
            "busy": len(w.in_flight),
            "labels": sorted(w.labels),
            "labels_loading": sorted(w.loading),
            "completed": d.stats.worker(w.worker_id).completed,
            "misses": d.stats.worker(w.worker_id).misses,
        }
        for _, w in sorted(core.registry.workers.items())
    ]
    return {
        "dispatcher_id": d.dispatcher_id,
        "policy": d.config.policy,
        "uptime_s": round(time.monotonic() - d.started_at, 1),
        "accepting": core.accepting,
        "queue_depth": len(core.queue),
        "in_flight": len(core.running),
        "totals": {
            "submitted": counters.submitted,
            "completed": counters.completed,
            "failed": counters.failed,
            "hits": counters.hits,
            "misses": counters.misses,
            "hit_rate": _ratio(counters.hits, counters.completed),
        },
        "workers": workers,
        "labels": labels,
        "recent_tasks": list(d.recent_tasks),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def status_endpoint(request: Request) -> Response:
    """`GET /status.json`."""
    return JSONResponse(status_json(request.state.dispatcher))


async def dashboard_endpoint(request: Request) -> Response:
    """`GET /dashboard`: the page (its data comes from /status.json)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})


async def root_endpoint(request: Request) -> Response:
    """`GET /`: to the status page."""
    return RedirectResponse("/dashboard", status_code=307)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smart-routing dispatcher</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330;
         background: #f7f8fa; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1rem; margin: 1.4rem 0 .5rem; }
  #meta { color: #5b6475; }
  #conn.down { color: #b3261e; font-weight: 600; }
  .cards { display: flex; gap: .8rem; flex-wrap: wrap; margin-top: 1rem; }
  .card { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: .6rem 1rem;
          min-width: 8rem; }
  .card b { display: block; font-size: 1.4rem; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { border: 1px solid #dde1e8; padding: .3rem .5rem; text-align: left; vertical-align: top; }
  th { background: #eef1f5; font-weight: 600; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  .state-ready { color: #146c2e; } .state-suspended { color: #b3261e; }
  .state-draining { color: #8a5a00; }
  .bar { display: inline-block; height: .7rem; background: #dde1e8; width: 6rem;
         vertical-align: middle; margin-right: .4rem; }
  .bar i { display: block; height: 100%; background: #3b6fd8; }
  .fail { color: #b3261e; } .tag { background: #eef1f5; border-radius: 3px; padding: 0 .3rem;
  margin-right: .2rem; display: inline-block; }
  .empty { color: #5b6475; font-style: italic; }
  #key { display: none; margin-top: 1rem; }
</style>
</head>
<body>
<h1>smart-routing dispatcher</h1>
<div id="meta"><span id="ident">loading…</span> · <span id="conn">connecting</span></div>
<form id="key"><label>API key for /status.json: <input id="key-input" type="password"></label>
<button>Use</button></form>
<noscript>This page needs JavaScript; the same data is at <a href="/status.json">/status.json</a>.
</noscript>
<div class="cards">
  <div class="card">workers<b id="c-workers">–</b></div>
  <div class="card">queue depth<b id="c-queue">–</b></div>
  <div class="card">in flight<b id="c-flight">–</b></div>
  <div class="card">completed<b id="c-completed">–</b></div>
  <div class="card">failed<b id="c-failed">–</b></div>
  <div class="card">hit rate<b id="c-hits">–</b></div>
</div>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>worker</th><th>state</th><th>engine</th><th>slots busy</th>
<th>labels</th><th>completed</th><th>misses</th></tr></thead><tbody></tbody></table>
<h2>Labels</h2>
<table id="labels"><thead><tr><th>label</th><th>copies</th><th>demand /s</th><th>queued</th>
<th>completed</th><th>hit rate</th><th>avg load ms</th><th>avg run ms</th></tr></thead>
<tbody></tbody></table>
<h2>Recent tasks</h2>
<table id="recent"><thead><tr><th>finished</th><th>task</th><th>label</th><th>worker</th>
<th>hit/miss</th><th>queue ms</th><th>load ms</th><th>run ms</th><th>total ms</th><th>status</th>
</tr></thead><tbody></tbody></table>
<script>
"use strict";
const PERIOD_MS = 1000;
let key = sessionStorage.getItem("smartrouting-key") || "";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function num(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits || 0);
}
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }
function fill(id, rows, columns, empty) {
  const body = document.querySelector("#" + id + " tbody");
  const fresh = document.createElement("tbody");
  if (!rows.length) {
    const td = el("td", empty, "empty");
    td.colSpan = columns;
    fresh.appendChild(el("tr")).appendChild(td);
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const cell of cells) tr.appendChild(cell);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}
function td(text, cls) { return el("td", text, cls); }
function tags(items) {
  const cell = el("td");
  for (const item of items) cell.appendChild(el("span", item, "tag"));
  return cell;
}
function slots(busy, total) {
  const cell = el("td");
  const bar = cell.appendChild(el("span", null, "bar"));
  bar.appendChild(el("i")).style.width = (total ? 100 * busy / total : 0) + "%";
  cell.appendChild(document.createTextNode(busy + " / " + total));
  return cell;
}
function draw(s) {
  document.getElementById("ident").textContent =
    "dispatcher " + s.dispatcher_id + " · policy " + s.policy + " · up " + num(s.uptime_s) + " s"
    + (s.accepting ? "" : " · shutting down");
  document.getElementById("c-workers").textContent = s.workers.length;
  document.getElementById("c-queue").textContent = s.queue_depth;
  document.getElementById("c-flight").textContent = s.in_flight;
  document.getElementById("c-completed").textContent = s.totals.completed;
  document.getElementById("c-failed").textContent = s.totals.failed;
  document.getElementById("c-hits").textContent = pct(s.totals.hit_rate);
  fill("workers", s.workers.map(w => [
    td(w.worker_id), td(w.state, "state-" + w.state), td(w.engine + " " + w.device),
    slots(w.busy, w.slots), tags(w.labels), td(w.completed, "n"), td(w.misses, "n"),
  ]), 7, "no worker connected");
  fill("labels", s.labels.map(l => [
    td(l.label), td(l.copies, "n"), td(num(l.demand_per_s, 2), "n"), td(l.queued, "n"),
    td(l.completed, "n"), td(pct(l.hit_rate), "n"), td(num(l.avg_load_ms, 1), "n"),
    td(num(l.avg_run_ms, 1), "n"),
  ]), 8, "no label asked for yet");
  fill("recent", s.recent_tasks.map(t => [
    td(new Date(t.finished_unix * 1000).toLocaleTimeString()), td(t.task_id), td(t.label),
    td(t.worker || "–"), td(t.miss ? "miss" : "hit"), td(num(t.queue_ms, 1), "n"),
    td(num(t.load_ms, 1), "n"), td(num(t.run_ms, 1), "n"), td(num(t.total_ms, 1), "n"),
    td(t.status, t.status === "completed" ? "" : "fail"),
  ]), 10, "no task finished yet");
}
async function poll() {
  const conn = document.getElementById("conn");
  try {
    const headers = key ? {"Authorization": "Bearer " + key} : {};
    // Relative, so the page also works behind a path prefix.
    const answer = await fetch("status.json", {headers, cache: "no-store"});
    if (answer.status === 401) {
      document.getElementById("key").style.display = "block";
      conn.textContent = "API key needed";
      conn.className = "down";
    } else if (answer.ok) {
      draw(await answer.json());
      conn.textContent = "updated " + new Date().toLocaleTimeString();
      conn.className = "";
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } else {
      throw new Error("HTTP " + answer.status);
    }
  } catch (err) {
    conn.textContent = "dispatcher unreachable (" + err.message + ")";
    conn.className = "down";
  }
  setTimeout(poll, PERIOD_MS);
}
document.getElementById("key").addEventListener("submit", event => {
  event.preventDefault();
  key = document.getElementById("key-input").value.trim();
  sessionStorage.setItem("smartrouting-key", key);
  document.getElementById("key").style.display = "none";
});
poll();
</script>
</body>
</html>
"""
