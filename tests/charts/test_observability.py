"""The chart's observability: the Grafana dashboard, the alert rules and the probes they rely on.

The rules are checked by `promtool check rules` (Debian's `prometheus` package) when it is
installed, and always by parsing; every metric the dashboard and the rules use must be on a
live dispatcher's /metrics (a real dispatcher with a worker connected).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.config import Config
from tests.charts.rendering import CHART_DIR, Rendered, containers, render
from tests.dispatcher.conftest import start_dispatcher
from tests.dispatcher.fake_worker import FakeWorker

PREFIX = "demo-smart-routing"
RULES = CHART_DIR / "files" / "alerts.yaml"
DASHBOARD = CHART_DIR / "files" / "grafana-dashboard.json"
ALERTS = {
    "SmartRoutingNoWorkers",
    "SmartRoutingQueueGrowing",
    "SmartRoutingMissRatioHigh",
    "SmartRoutingWorkerFlapping",
}
#: PromQL words that look like metric names but are not.
_PROMQL = {
    "sum", "max", "min", "avg", "rate", "increase", "delta", "deriv", "by", "and", "or",
    "unless", "histogram_quantile", "le", "clamp_min", "label_values", "job", "offset",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside braces, strings, durations
    and `by (...)` lists, that are not functions or keywords."""
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)
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


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
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


@pytest.fixture(scope="module")
def live_metric_names() -> Iterator[set[str]]:
    """Every sample name a live dispatcher with one worker connected serves on /metrics."""
    running = start_dispatcher(Config())
    worker = FakeWorker(running.ws_url, "w1", labels=["a"])
    try:
        from tests.support import run_async

        async def connect_and_scrape() -> str:
            await worker.start()
            try:
                async with httpx.AsyncClient(base_url=running.base_url) as client:
                    return (await client.get("/metrics")).text
            finally:
                await worker.close()

        text = run_async(connect_and_scrape())
    finally:
        running.stop()
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
    yield names


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
    for panel in shipped["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel


def test_prometheus_rule_carries_the_alerts(observability_render: Rendered) -> None:
    """The PrometheusRule holds the rule file's groups as they are, templates included."""
    rule = observability_render.one("PrometheusRule", f"{PREFIX}-alerts")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == ALERTS
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["for"]
    # Helm must not have eaten Prometheus' own templates.
    assert "{{ $value }}" in alerts["SmartRoutingQueueGrowing"]["annotations"]["description"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt: prometheus)")
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template of the rule file."""
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_metric_names_are_found_in_expressions() -> None:
    """The name extraction the next test relies on finds names and skips PromQL words."""
    expr = (
        'histogram_quantile(0.95, sum by (le, label) (rate(x_bucket{job=~"$job"}'
        "[$__rate_interval]))) / max(y_total) and z"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


@pytest.mark.timeout(60)
def test_every_metric_of_the_dashboard_and_the_rules_is_served(
    live_metric_names: set[str],
) -> None:
    """Each metric the dashboard and the alert rules query exists on a live /metrics."""
    used: dict[str, Any] = {}
    for expr in rule_exprs() + dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, expr)
    assert len(used) >= 20
    missing = {name: expr for name, expr in used.items() if name not in live_metric_names}
    assert not missing, missing
