"""Error codes of the exception tree, and the typed configuration from flags and env."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path

import pytest

import worker.errors as errors
from proto import smartrouting_pb2 as pb
from worker.config import Config, default_engine, default_worker_id, parse_config
from worker.errors import ConfigError


def test_every_error_class_has_a_protocol_code() -> None:
    """Every exception of worker.errors maps to an ErrorCode the proto defines."""
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, errors.WorkerError)
    ]
    assert len(classes) >= 10
    valid = set(pb.ErrorCode.values())
    for cls in classes:
        assert cls.code in valid, cls
        assert cls.code != pb.ERROR_CODE_UNSPECIFIED, cls
    assert errors.ModelNotFoundError.code == pb.MODEL_NOT_FOUND


def test_flags_override_environment() -> None:
    """Flags win over env vars; env vars fill in what flags leave out."""
    env = {
        "WORKER_DISPATCHER_URL": "ws://h:1/worker-listen",
        "WORKER_ID": "env-id",
        "WORKER_CAPACITY": "3",
        "MODEL_REPOSITORY": "/models",
        "WORKER_ENGINE": "simulated",
        "WORKER_SIM_LOAD_MS": "42",
    }
    config = parse_config(["--capacity", "5", "--seed", "7"], env)
    assert config.dispatcher_url == ("ws://h:1/worker-listen",)
    assert config.worker_id == "env-id"
    assert config.capacity == 5
    assert config.model_repository == Path("/models")
    assert config.engine == "simulated"
    assert config.sim_load_ms == 42.0
    assert config.seed == 7


def test_default_worker_id_is_stable_per_host_and_device() -> None:
    """Without --worker-id the id is `<hostname>-<device>`, the same on every start."""
    config = parse_config(["--engine", "simulated"], {})
    assert config.worker_id == f"{socket.gethostname()}-cpu"
    assert default_worker_id("cuda:1") == f"{socket.gethostname()}-cuda1"
    assert parse_config(["--engine", "simulated"], {}).worker_id == config.worker_id


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity must be >= 1"),
        ({"slots": 0}, "slots must be >= 1"),
        ({"engine": "tensorflow"}, "unknown engine"),
        ({"time_scale": 0}, "time_scale must be > 0"),
    ],
)
def test_invalid_config_raises(kwargs: dict[str, object], match: str) -> None:
    """Impossible settings are refused with ConfigError."""
    with pytest.raises(ConfigError, match=match):
        Config(**kwargs)  # type: ignore[arg-type]


def test_cli_rejects_unknown_engine() -> None:
    """argparse refuses an engine outside the Literal choices."""
    with pytest.raises(SystemExit):
        parse_config(["--engine", "magic"], {})


def test_environment_names_and_start_up_defaults() -> None:
    """WORKER_MODEL_REPOSITORY wins over MODEL_REPOSITORY, WORKER_WORKER_ID is an alias of
    WORKER_ID, and without --engine the CLI picks what this machine can run."""
    env = {"WORKER_MODEL_REPOSITORY": "/w", "MODEL_REPOSITORY": "/m", "WORKER_WORKER_ID": "w1"}
    config = parse_config([], env)
    assert (config.model_repository, config.worker_id) == (Path("/w"), "w1")
    assert config.engine == default_engine()
    assert parse_config([], {"WORKER_ENGINE": "simulated"}).engine == "simulated"


def test_bad_environment_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A variable that is not of its setting's type is one line on stderr and exit 2."""
    with pytest.raises(SystemExit) as exited:
        parse_config([], {"WORKER_TIME_SCALE": "fast"})
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "python -m worker: error: WORKER_TIME_SCALE='fast' is not a number\n"
    )
