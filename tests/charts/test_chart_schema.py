"""The chart renders with the real Helm engine, lints clean, and every manifest it renders
passes the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail).

`kubectl apply --dry-run=client` is not used: kubectl asks the API server for its discovery
and OpenAPI documents even in client dry-run, and there is no cluster here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest

from tests.charts.conftest import FULL_VALUES
from tests.charts.rendering import CHART_DIR, Rendered, render

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
#: kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

#: Kinds from CRDs, which kubernetes-validate has no schema for; checked field by field in
#: test_chart_wiring.py instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _validate_all(rendered: Rendered, version: str) -> list[str]:
    checked = []
    for manifest in rendered.manifests:
        if manifest["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked.append(manifest["kind"])
    return checked


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_default_render_passes_kubernetes_schemas(default_render: Rendered, version: str) -> None:
    """Every manifest of the default install validates against the Kubernetes schemas."""
    checked = _validate_all(default_render, version)
    assert sorted(checked) == sorted(
        [
            "Deployment",  # dispatchers
            "Deployment",  # uploader
            "PersistentVolumeClaim",  # model repository
            "Pod",  # helm test
            "PodDisruptionBudget",  # dispatchers
            "PodDisruptionBudget",  # workers
            "Secret",  # auth
            "Secret",  # store URL and PostgreSQL password
            "Service",  # dispatchers, for callers
            "Service",  # dispatchers, headless, for workers
            "Service",  # PostgreSQL
            "Service",  # uploader
            "Service",  # workers, headless
            "ServiceAccount",
            "StatefulSet",  # PostgreSQL
            "StatefulSet",  # workers
        ]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_full_render_passes_kubernetes_schemas(full_render: Rendered, version: str) -> None:
    """With ServiceMonitor, HPA, dashboard, alerts, existing claim and secret, every manifest
    still validates."""
    checked = _validate_all(full_render, version)
    assert "HorizontalPodAutoscaler" in checked
    assert "ConfigMap" in checked  # the Grafana dashboard
    assert {m["kind"] for m in full_render.manifests} - set(checked) == CRD_KINDS


def test_schema_validation_rejects_a_broken_manifest(default_render: Rendered) -> None:
    """The validator is not vacuous: a misspelt container field in a rendered manifest fails."""
    deployment = next(m for m in default_render.manifests if m["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"]}}
    template = {**broken["spec"]["template"]}
    pod = {**template["spec"]}
    pod["containers"] = [{**pod["containers"][0], "imagePullPolicyy": "Always"}]
    template["spec"] = pod
    broken["spec"]["template"] = template
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["default", "full"])
def test_helm_lint_reports_no_warnings_or_errors(values: dict) -> None:
    """`helm lint --strict` (Helm's own linter) finds nothing above info level."""
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_helm_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The linter is not vacuous: a template with a syntax error in a copy of the chart fails."""
    copy = tmp_path / "smart-routing"
    shutil.copytree(CHART_DIR, copy)
    hpa = copy / "templates" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("{{- if .enabled }}", "{{- if .enabled "))
    report = helm_python.lint(copy, strict=True)
    assert any("hpa.yaml" in error for error in report["errors"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dispatcher": {"policy": "fastest"}}, "/dispatcher/policy"),
        ({"workers": {"engine": "vllm"}}, "/workers/engine"),
        ({"workers": {"tritonModelConfig": "tensorrt"}}, "/workers/tritonModelConfig"),
        ({"workers": {"capacity": 0}}, "/workers/capacity"),
        ({"workers": {"replicas": "two"}}, "/workers/replicas"),
        (
            {"workers": {"terminationGracePeriodSeconds": 5}},
            "/workers/terminationGracePeriodSeconds",
        ),
        ({"worker": {"replicas": 3}}, "additional properties 'worker' not allowed"),
        ({"dispatcher": {"polcy": "random"}}, "additional properties 'polcy' not allowed"),
        ({"modelRepository": {"accessModes": ["ReadWriteAll"]}}, "/modelRepository/accessModes"),
    ],
)
def test_values_schema_rejects_bad_and_misspelt_values(values: dict, message: str) -> None:
    """values.schema.json stops `helm install` on a wrong type, choice or misspelt key."""
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render(values)


def test_cross_field_rules_fail_the_render() -> None:
    """What a schema cannot say (min above max) fails in the templates, naming the values."""
    with pytest.raises(helm_python.HelmRenderError, match="autoscaling.minReplicas must not"):
        render({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dispatcher": {"policy": "fastest"}}, "dispatcher.policy must be routed or random"),
        ({"workers": {"engine": "vllm"}}, "workers.engine must be"),
        ({"workers": {"capacity": 0}}, "workers.capacity must be >= 1"),
        (
            {"workers": {"terminationGracePeriodSeconds": 5}},
            "workers.terminationGracePeriodSeconds must be >= 30",
        ),
    ],
)
def test_template_guards_hold_without_the_schema(
    tmp_path: Path, values: dict, message: str
) -> None:
    """With schema validation skipped (`--skip-schema-validation`), the templates still refuse."""
    copy = tmp_path / "smart-routing"
    shutil.copytree(CHART_DIR, copy)
    (copy / "values.schema.json").unlink()
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(values, chart_dir=copy)
