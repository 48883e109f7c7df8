"""Renders of the chart shared by the chart tests (rendering is cheap; these keep it once)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.charts.rendering import Rendered, render

#: Everything optional switched on, and the "bring your own" options taken.
FULL_VALUES: dict[str, Any] = {
    "imageRegistry": "registry.example.com/ml/",
    "imagePullSecrets": [{"name": "regcred"}],
    "commonLabels": {"team": "ml-platform"},
    "dispatcher": {
        "replicas": 3,
        "podAntiAffinity": "required",
        "randomDispatch": True,
        "coldWaitMs": 1000,
        "coldWaitAdaptive": False,
        "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
        "extraEnv": [{"name": "DISPATCHER_SEED", "value": "7"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
    },
    "workers": {
        "capacity": 3,
        "slots": 2,
        "gpus": 1,
        "terminationGracePeriodSeconds": 300,
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 30},
    },
    "uploader": {"hfTokenSecret": "hf-token"},
    "auth": {"existingSecret": "smart-routing-credentials"},
    "modelRepository": {"existingClaim": "shared-models"},
    # A managed PostgreSQL whose URL the user keeps in a Secret of their own.
    "postgresql": {"enabled": False},
    "store": {
        "postgresql": {
            "external": {"existingSecret": "smart-routing-store-url", "existingSecretKey": "dsn"}
        }
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "ml"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    },
    "autoscaling": {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 6,
        "metricSelector": {"service": "demo-smart-routing-dispatcher"},
    },
}


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    """The chart rendered with its default values."""
    return render()


@pytest.fixture(scope="session")
def full_render() -> Rendered:
    """The chart rendered with every optional part on (ServiceMonitor, HPA, existing claim...)."""
    return render(FULL_VALUES)
