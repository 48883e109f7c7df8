"""The chart's observability: the Grafana dashboard, the alert rules and the probes they rely on.

The rules are checked by `promtool check rules` (Debian's `prometheus` package) when it is
installed, the worker alerts also by `promtool test rules` on series shaped like a worker's,
and always by parsing; every metric the dashboard and the rules use must be on a live
/metrics: a real dispatcher's, or a real `python -m worker`'s (simulated engine) connected to
it, after a task ran so that the histograms and counters have samples.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.config import Config
from tests.charts.rendering import CHART_DIR, Rendered, containers, render
from tests.dispatcher.conftest import start_dispatcher
from tests.support import ProcessFactory, free_port, scaled, wait_for_http

PREFIX = "demo-smart-routing"
RULES = CHART_DIR / "files" / "alerts.yaml"
DASHBOARD = CHART_DIR / "files" / "grafana-dashboard.json"
ALERTS = {
    "SmartRoutingNoWorkers",
    "SmartRoutingQueueGrowing",
    "SmartRoutingMissRatioHigh",
    "SmartRoutingWorkerFlapping",
}
#: The alerts on each worker's own /metrics (the rule file's second group).
WORKER_ALERTS = {
    "SmartRoutingWorkerEngineDown",
    "SmartRoutingTritonRestarting",
    "SmartRoutingModelLoadsFailing",
    "SmartRoutingWorkerMissingDispatchers",
}
#: The dashboard row of the workers' own metrics.
WORKER_ROW = "Worker processes"
#: PromQL words that look like metric names but are not.
_PROMQL = {
    "sum", "max", "min", "avg", "rate", "increase", "delta", "deriv", "by", "and", "or",
    "unless", "histogram_quantile", "le", "clamp_min", "label_values", "job", "offset",
    "count", "on", "ignoring", "group_left", "group_right", "bool",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside braces, strings, durations
    and label lists (`by`, `without`, `on`, `ignoring`, `group_left`, `group_right`), that
    are not functions or keywords."""
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    names = set()
    for match in _IDENT.finditer(expr):
        name = match.group(0)
        following = expr[match.end() :].lstrip()
        if name in _PROMQL or following.startswith("("):
            continue
        names.add(name)
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def rows(panels: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The dashboard's panels under the title of the row above them ("" before any row)."""
    grouped: dict[str, list[dict[str, Any]]] = {"": []}
    current = ""
    for panel in panels:
        if panel["type"] == "row":
            current = panel["title"]
            grouped[current] = list(panel.get("panels", []))  # a collapsed row holds its own
        else:
            grouped[current].append(panel)
    return grouped


def dashboard_exprs(row: str | None = None) -> list[str]:
    """The queries of the dashboard (of one row only with `row`), template variables too."""
    dashboard = json.loads(DASHBOARD.read_text())
    grouped = rows(dashboard["panels"])
    panels = grouped[row] if row is not None else [p for ps in grouped.values() for p in ps]
    exprs = [t["expr"] for panel in panels for t in panel["targets"]]
    if row is None:
        exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.fixture(scope="module")
def observability_render() -> Rendered:
    return render(
        {
            "metrics": {
                "grafanaDashboard": {"enabled": True},
                "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            }
        }
    )


@dataclass(frozen=True)
class LiveMetrics:
    """The sample names a live dispatcher and a live worker serve on their /metrics."""

    dispatcher: set[str]
    worker: set[str]

    @property
    def all(self) -> set[str]:
        return self.dispatcher | self.worker


def served_names(text: str) -> set[str]:
    """Every sample name of a scrape, and those of families declared but still empty."""
    names: set[str] = set()
    suffixes: dict[str, tuple[str, ...]] = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
    }
    for family in text_string_to_metric_families(text):
        # A labelled family nobody used yet has no samples but is declared all the same.
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMetrics]:
    """A real dispatcher and a real `python -m worker --engine simulated --http-port`
    connected to it; a miss then a hit run through them before both are scraped."""
    running = start_dispatcher(Config(task_timeout_s=20.0))
    processes = ProcessFactory(log_dir=tmp_path_factory.mktemp("live-metrics"))
    http_port = free_port()
    try:
        processes.worker(
            running.ws_url,
            "dash-w1",
            "--engine=simulated",
            "--sim-load-ms=5",
            "--sim-run-ms=1",
            f"--http-port={http_port}",
            "--http-host=127.0.0.1",
        )
        worker_url = f"http://127.0.0.1:{http_port}"
        wait_for_http(f"{worker_url}/readyz", 60)  # its engine is up and its link open
        with httpx.Client(base_url=running.base_url, timeout=scaled(30)) as client:
            body = {"task_type": "sample_task", "label": "dash-a", "parameters_json": "{}"}
            misses = [client.post("/run-task", json=body).json()["label_miss"] for _ in "12"]
            assert misses == [True, False]
            dispatcher_text = client.get("/metrics").text
        worker_text = httpx.get(f"{worker_url}/metrics", timeout=scaled(10)).text
    finally:
        processes.close()
        running.stop()
    yield LiveMetrics(served_names(dispatcher_text), served_names(worker_text))


def test_dispatcher_probes_and_json_logs(default_render: Rendered) -> None:
    """The chart probes the dispatcher on /readyz and /livez and asks for JSON log lines."""
    (container,) = containers(default_render.one("Deployment", f"{PREFIX}-dispatcher"))
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DISPATCHER_LOG_FORMAT"] == "json"
    assert env["DISPATCHER_READY_MIN_WORKERS"] == "1"


def test_dashboard_and_rules_are_off_by_default(default_render: Rendered) -> None:
    """Both need software the cluster may not have (Grafana's sidecar, the operator's CRDs)."""
    assert not default_render.all("ConfigMap") and not default_render.all("PrometheusRule")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(
    observability_render: Rendered,
) -> None:
    """A ConfigMap with `grafana_dashboard: "1"` holding the dashboard JSON unchanged."""
    configmap = observability_render.one("ConfigMap", f"{PREFIX}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["smart-routing.json"])
    assert shipped == json.loads(DASHBOARD.read_text())
    assert shipped["uid"] == "smart-routing" and len(shipped["panels"]) >= 15
    ids = [panel["id"] for panel in shipped["panels"]]
    assert len(ids) == len(set(ids))
    grouped = rows(shipped["panels"])
    assert len(grouped[WORKER_ROW]) >= 12
    for panel in (p for panels in grouped.values() for p in panels):
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel


def test_prometheus_rule_carries_the_alerts(observability_render: Rendered) -> None:
    """The PrometheusRule holds the rule file's groups as they are, templates included."""
    rule = observability_render.one("PrometheusRule", f"{PREFIX}-alerts")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    dispatcher_group, worker_group = rule["spec"]["groups"]
    assert {r["alert"] for r in dispatcher_group["rules"]} == ALERTS
    assert {r["alert"] for r in worker_group["rules"]} == WORKER_ALERTS
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["for"]
        assert alert["annotations"]["description"]
    # Helm must not have eaten Prometheus' own templates.
    assert "{{ $value }}" in alerts["SmartRoutingQueueGrowing"]["annotations"]["description"]
    engine_down = alerts["SmartRoutingWorkerEngineDown"]["annotations"]
    assert "{{ $labels.worker }}" in engine_down["summary"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt: prometheus)")
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template of the rule file."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS) + len(WORKER_ALERTS)} rules found" in done.stdout


#: Two workers (a, b) of namespace ns and two dispatchers, minute by minute (promtool's
#: expanding notation: `1x30` is 31 samples of 1, `0+1x30` counts up by one a minute).
#: Worker a: its engine goes down at minute 2, Triton restarts every minute, a model load
#: fails every minute; worker b: linked to one dispatcher of two, otherwise healthy.
_WORKER_SERIES = {
    'smartrouting_worker_info{job="w",instance="a",namespace="ns",worker="w-a"}': "1x30",
    'smartrouting_worker_info{job="w",instance="b",namespace="ns",worker="w-b"}': "1x30",
    'smartrouting_worker_engine_up{job="w",instance="a",namespace="ns"}': "1 1 0x28",
    'smartrouting_worker_engine_up{job="w",instance="b",namespace="ns"}': "1x30",
    'smartrouting_worker_engine_restarts_total{job="w",instance="a",namespace="ns"}': "0+1x30",
    'smartrouting_worker_engine_restarts_total{job="w",instance="b",namespace="ns"}': "0x30",
    'smartrouting_worker_model_load_failures_total{job="w",instance="a",namespace="ns",'
    'code="model_load_failed"}': "0+1x30",
    'smartrouting_worker_dispatcher_links_open{job="w",instance="a",namespace="ns"}': "2x30",
    'smartrouting_worker_dispatcher_links_open{job="w",instance="b",namespace="ns"}': "1x30",
    'smartrouting_workers_connected{job="d",instance="d1",namespace="ns"}': "2x30",
    'smartrouting_workers_connected{job="d",instance="d2",namespace="ns"}': "1x30",
}


def _fired(alert: str, summary: str, severity: str = "warning", **labels: str) -> dict[str, Any]:
    return {
        "exp_labels": {"alertname": alert, "severity": severity, **labels},
        "exp_annotations": {"summary": summary},
    }


_A = {"job": "w", "instance": "a", "namespace": "ns", "worker": "w-a"}
_B = {"job": "w", "instance": "b", "namespace": "ns", "worker": "w-b"}
#: (minute, alert, the alerts firing then): each alert before and after its `for`.
_WORKER_ALERTS_FIRING = [
    (3, "SmartRoutingWorkerEngineDown", []),  # down for 1 minute only
    (5, "SmartRoutingWorkerEngineDown",
     [_fired("SmartRoutingWorkerEngineDown", "Worker w-a: its engine is down", "critical", **_A)]),
    (2, "SmartRoutingTritonRestarting", []),  # 2 restarts
    (10, "SmartRoutingTritonRestarting",
     [_fired("SmartRoutingTritonRestarting", "Worker w-a: Triton keeps restarting", **_A)]),
    (6, "SmartRoutingModelLoadsFailing", []),  # failing for 5 minutes only
    (15, "SmartRoutingModelLoadsFailing",
     [_fired("SmartRoutingModelLoadsFailing", "Model loads keep failing (model_load_failed)",
             code="model_load_failed")]),
    (3, "SmartRoutingWorkerMissingDispatchers", []),
    (10, "SmartRoutingWorkerMissingDispatchers",
     [_fired("SmartRoutingWorkerMissingDispatchers",
             "Worker w-b is not linked to every dispatcher", **_B)]),
]  # fmt: skip


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt: prometheus)")
def test_the_worker_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """`promtool test rules`: on two workers' series, each worker alert fires for the worker
    it is about (named by its worker id), only after its `for`, and not for the other."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    # The rules as shipped, without their long descriptions (promtool compares every
    # annotation; the summaries say enough to check the templates).
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]["description"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values}
                    for series, values in _WORKER_SERIES.items()
                ],
                "alert_rule_test": [
                    {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": firing}
                    for minute, alert, firing in _WORKER_ALERTS_FIRING
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_metric_names_are_found_in_expressions() -> None:
    """The name extraction the next test relies on finds names and skips PromQL words."""
    expr = (
        'histogram_quantile(0.95, sum by (le, label) (rate(x_bucket{job=~"$job"}'
        "[$__rate_interval]))) / max(y_total) and z"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}
    join = (
        "(a < on (namespace) group_left () count by (namespace) (b))"
        " * on (job, instance) group_left (worker) c_info"
    )
    assert metric_names(join) == {"a", "b", "c_info"}


@pytest.mark.timeout(90)
def test_every_metric_of_the_dashboard_and_the_rules_is_served(
    live_metrics: LiveMetrics,
) -> None:
    """Each metric the dashboard and the alert rules query exists on a live /metrics: the
    dispatcher's or the worker's."""
    used: dict[str, Any] = {}
    for expr in rule_exprs() + dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, expr)
    assert len(used) >= 35
    missing = {name: expr for name, expr in used.items() if name not in live_metrics.all}
    assert not missing, missing


@pytest.mark.timeout(90)
def test_the_worker_row_and_alerts_read_the_workers_own_metrics(
    live_metrics: LiveMetrics,
) -> None:
    """The "Worker processes" row and the worker alerts query what the live worker serves
    (not the dispatcher's per-worker series of similar names), the dispatcher count they
    compare links with excepted; and they cover every worker metric but the per-label state."""
    worker_groups = yaml.safe_load(RULES.read_text())["groups"][1:]
    exprs = dashboard_exprs(WORKER_ROW) + [r["expr"] for g in worker_groups for r in g["rules"]]
    used = {name for expr in exprs for name in metric_names(expr)}
    dispatcher_count = {"smartrouting_workers_connected"}
    assert used - dispatcher_count <= live_metrics.worker, used - live_metrics.worker
    own = {n for n in live_metrics.worker if n.startswith("smartrouting_worker_")}
    not_shown = own - used
    # Histograms are read through their buckets; the per-label state (a series per label
    # held) is for ad-hoc queries: the dashboard shows the counts by state.
    not_shown -= {n for n in own if n.endswith(("_count", "_sum"))}
    assert not_shown == {"smartrouting_worker_label_state"}, not_shown
