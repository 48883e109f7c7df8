"""Every environment variable the chart sets is one the program reads, with a value it accepts.

Each container's command line and environment, as Kubernetes would assemble them (Secret
references resolved from the rendered Secrets, the downward API's pod name filled in), go
through the program's own parser (dispatcher/config.py, worker/config.py, uploader/config.py):
a variable no config field reads, or a value it refuses, fails here rather than in a pod.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from dispatcher.config import Config as DispatcherConfig
from dispatcher.config import config_from_args as dispatcher_config
from smartrouting.config import env_values
from tests.charts.conftest import FULL_VALUES
from tests.charts.rendering import Rendered, containers, render, workloads
from uploader.__main__ import parse as uploader_config
from uploader.config import ServeConfig, UploaderConfig
from worker.config import Config as WorkerConfig
from worker.config import parse_config as worker_config

PREFIX = "demo-smart-routing"
#: A value for Secrets the user brings (not rendered): realistic enough to parse.
BROUGHT_SECRETS = {
    ("smart-routing-credentials", "worker-token"): "wt",
    ("smart-routing-credentials", "api-keys"): "k1,k2",
    ("smart-routing-credentials", "admin-key"): "adm",
    ("smart-routing-store-url", "dsn"): "postgresql://sr:pw@db.example.com:5432/sr",
    ("hf-token", "token"): "hf_token",
}
#: Variables read by something other than the program's config, and by what.
READ_ELSEWHERE = {
    "dispatcher": {"RANDOM_DISPATCH": "dispatcher/config.py's legacy switch (an env hook)"},
    "uploader": {
        "HOME": "torch and Hugging Face caches",
        "HF_HOME": "huggingface_hub",
        "HF_TOKEN": "huggingface_hub",
    },
    "worker": {},
}
#: The config classes whose fields each program reads from its environment.
CONFIG_CLASSES: dict[str, tuple[type, ...]] = {
    "dispatcher": (DispatcherConfig,),
    "worker": (WorkerConfig,),
    "uploader": (UploaderConfig, ServeConfig),
}
#: The program's own parser: (argv, environ) -> the parsed config(s).
PARSERS: dict[str, Callable[[list[str], Mapping[str, str]], Any]] = {
    "dispatcher": lambda argv, env: dispatcher_config(argv, env),
    "worker": lambda argv, env: worker_config(argv, env),
    "uploader": lambda argv, env: uploader_config(argv, env),
}
#: Renders that set different variables: defaults (in-chart PostgreSQL), every option on
#: (a Secret of the user's for the store), and one dispatcher on SQLite.
RENDERS = {
    "default": {},
    "full": FULL_VALUES,
    "sqlite": {"dispatcher": {"replicas": 1}, "postgresql": {"enabled": False}},
}


def _secrets(rendered: Rendered) -> dict[tuple[str, str], str]:
    found = dict(BROUGHT_SECRETS)
    for secret in rendered.all("Secret"):
        for key, value in secret.get("data", {}).items():
            found[(secret["metadata"]["name"], key)] = base64.b64decode(value).decode()
    return found


def _environment(container: Mapping[str, Any], secrets: Mapping[tuple[str, str], str]) -> dict:
    """The container's environment as the kubelet would set it."""
    environ: dict[str, str] = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            environ[entry["name"]] = str(entry["value"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            environ[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            assert source == {"fieldRef": {"fieldPath": "metadata.name"}}, entry
            environ[entry["name"]] = "pod-0"
    return environ


def _programs(rendered: Rendered) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Per program: the argv after `python -m <program>` and its environment."""
    secrets = _secrets(rendered)
    found = {}
    for workload in workloads(rendered):
        for container in containers(workload):
            command = container.get("command", [])
            if command[:2] != ["python", "-m"]:
                continue  # PostgreSQL's own image
            program = command[2]
            found[program] = (list(container.get("args", [])), _environment(container, secrets))
    return found


@pytest.fixture(scope="module", params=sorted(RENDERS))
def programs(request: pytest.FixtureRequest) -> dict[str, tuple[list[str], dict[str, str]]]:
    return _programs(render(RENDERS[request.param]))


def test_every_program_is_checked(programs: dict) -> None:
    """The three programs are found in the render (the checks below are not vacuous)."""
    assert set(programs) == {"dispatcher", "worker", "uploader"}


def test_every_variable_is_read_by_the_program(programs: dict) -> None:
    """Each variable set is a field of the program's config (or a documented exception)."""
    unread: dict[str, list[str]] = {}
    for program, (_, environ) in programs.items():
        for name, value in environ.items():
            if name in READ_ELSEWHERE[program]:
                continue
            if not any(env_values(cls, {name: value}) for cls in CONFIG_CLASSES[program]):
                unread.setdefault(program, []).append(name)
    assert unread == {}


def test_every_program_accepts_its_command_line_and_environment(programs: dict) -> None:
    """The program's own parser takes the rendered args and environment without an error."""
    for program, (argv, environ) in programs.items():
        try:
            PARSERS[program](argv, environ)
        except SystemExit as exc:  # the parsers exit 2 with the reason on stderr
            pytest.fail(f"{program} refuses its chart settings (exit {exc.code}): {environ}")


def test_parsed_settings_are_what_the_chart_means() -> None:
    """The default render, parsed: JSON logs everywhere, every dispatcher found by DNS, the
    worker's HTTP port, Triton's log on stdout, the dispatchers on the in-chart PostgreSQL."""
    programs = _programs(render())
    dispatcher = PARSERS["dispatcher"](*programs["dispatcher"])
    assert dispatcher.log_format == "json"
    assert dispatcher.store_url.startswith("postgresql://smartrouting:")
    assert dispatcher.store_url.endswith(f"@{PREFIX}-postgresql.ml.svc:5432/smartrouting")
    assert dispatcher.dispatcher_id == "pod-0"
    assert dispatcher.state_db is None
    worker = PARSERS["worker"](*programs["worker"])
    assert worker.log_format == "json"
    assert worker.dispatcher_discovery == "dns"
    assert worker.dispatcher_url == (f"ws://{PREFIX}-dispatchers.ml.svc:8080/worker-listen",)
    assert worker.http_port == 8090
    assert worker.triton_log == "stdout"
    assert worker.engine == "triton"
    common, serve = PARSERS["uploader"](*programs["uploader"])
    assert common.log_format == "json"
    assert str(serve.repository) == "/models"
