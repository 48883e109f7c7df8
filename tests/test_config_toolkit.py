"""smartrouting.config: flags, variables and defaults derived from one dataclass."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from smartrouting import config as toolkit
from smartrouting.config import ConfigError, setting
from tests.support import ROOT, scaled


@dataclass(frozen=True)
class Sample:
    """Every supported type once."""

    env_prefix: ClassVar[str] = "SAMPLE_"

    port: int = setting(8080, "bind port")
    ratio: float = setting(0.5, "a ratio")
    name: str = setting("x", "a name", env=("SAMPLE_NAME", "LEGACY_NAME"))
    path: Path = setting(Path("var"), "a path")
    mode: Literal["a", "b"] = setting("a", "a choice")
    verbose: bool = setting(False, "a switch")
    keys: tuple[str, ...] = setting((), "comma-separated keys")
    dirs: tuple[Path, ...] = setting((), "repeatable dirs", flag="--dir", repeat=True, sep=":")
    seed: int | None = setting(None, "optional int")
    token: str | None = setting(None, "a secret", env="SAMPLE_SECRET", secret=True)

    def __post_init__(self) -> None:
        if self.port < 1:
            raise ValueError("port must be >= 1")


@dataclass(frozen=True)
class Needs:
    """A required setting and a positional one."""

    env_prefix: ClassVar[str] = "NEEDS_"

    item: str = setting(help="the item", positional=True)
    repository: Path = setting(help="where to write", env="REPO")


def _load(argv: list[str], env: dict[str, str]) -> Sample:
    parser = toolkit.build_parser(Sample, prog="sample")
    return toolkit.parse_args(Sample, parser, argv, env)


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        ([], {}, 8080),
        ([], {"SAMPLE_PORT": "9000"}, 9000),
        (["--port", "7000"], {"SAMPLE_PORT": "9000"}, 7000),
        (["--port", "7000"], {}, 7000),
        ([], {"SAMPLE_PORT": ""}, 8080),  # an empty variable counts as unset
    ],
)
def test_flag_over_env_over_default(argv: list[str], env: dict[str, str], port: int) -> None:
    """A flag wins over its variable, which wins over the default."""
    assert _load(argv, env).port == port


def test_every_type_from_the_environment() -> None:
    """Variables are converted with the field's type; the first named variable that is set wins."""
    env = {
        "SAMPLE_RATIO": "0.25",
        "LEGACY_NAME": "old",
        "SAMPLE_PATH": "/data",
        "SAMPLE_MODE": "b",
        "SAMPLE_VERBOSE": "yes",
        "SAMPLE_KEYS": " k1, ,k2 ",
        "SAMPLE_DIRS": "/a:/b",
        "SAMPLE_SEED": "7",
        "SAMPLE_SECRET": "s3cret",
    }
    config = _load([], env)
    assert config == Sample(
        ratio=0.25,
        name="old",
        path=Path("/data"),
        mode="b",
        verbose=True,
        keys=("k1", "k2"),
        dirs=(Path("/a"), Path("/b")),
        seed=7,
        token="s3cret",
    )
    assert _load([], {**env, "SAMPLE_NAME": "new"}).name == "new"
    assert "s3cret" not in repr(config)


def test_every_type_from_flags() -> None:
    """Flags convert the same way; booleans have --x/--no-x; repeatable flags append."""
    argv = ["--mode", "b", "--verbose", "--keys", "a,b", "--dir", "/x", "--dir", "/y"]
    config = _load([*argv, "--seed", "3", "--path", "p"], {"SAMPLE_VERBOSE": "false"})
    assert (config.mode, config.verbose, config.keys) == ("b", True, ("a", "b"))
    assert (config.dirs, config.seed, config.path) == ((Path("/x"), Path("/y")), 3, Path("p"))
    assert _load(["--no-verbose"], {"SAMPLE_VERBOSE": "1"}).verbose is False


@pytest.mark.parametrize(
    ("hint", "raw", "message"),
    [
        (int, "abc", "'abc' is not an int"),
        (int, "1.5", "'1.5' is not an int"),
        (float, "fast", "'fast' is not a number"),
        (bool, "maybe", "'maybe' is not a boolean (true or false)"),
        (Literal["a", "b"], "c", "'c' is not one of a, b"),
        (tuple[int, ...], "1,x", "'x' is not an int"),
        (int | None, "", "'' is not an int"),
    ],
)
def test_bad_values_name_what_was_expected(hint: Any, raw: str, message: str) -> None:
    """A string of the wrong kind is refused with a message saying what was expected."""
    with pytest.raises(toolkit.BadValue) as caught:
        toolkit.convert(raw, hint)
    assert str(caught.value) == message


def test_bad_variable_is_a_one_line_error() -> None:
    """A bad variable names the variable and its value; a secret's value is not shown."""
    with pytest.raises(ConfigError, match=r"^SAMPLE_PORT='abc' is not an int$"):
        toolkit.load(Sample, None, {"SAMPLE_PORT": "abc"})
    with pytest.raises(ConfigError, match=r"^SAMPLE_VERBOSE='2' is not a boolean"):
        toolkit.load(Sample, None, {"SAMPLE_VERBOSE": "2"})


def test_parse_args_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints `prog: error: ...` on one line and exits 2, for env and validation."""
    for argv, env, error in [
        ([], {"SAMPLE_PORT": "abc"}, "sample: error: SAMPLE_PORT='abc' is not an int"),
        (["--port", "0"], {}, "sample: error: port must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as exited:
            _load(argv, env)
        assert exited.value.code == 2
        assert capsys.readouterr().err == error + "\n"


def test_required_and_positional_settings() -> None:
    """A setting without default must come from a flag or a variable."""
    parser = toolkit.build_parser(Needs, prog="needs")
    flags = vars(parser.parse_args(["thing", "--repository", "/r"]))
    assert toolkit.load(Needs, flags, {}) == Needs(item="thing", repository=Path("/r"))
    assert toolkit.load(Needs, {}, {"NEEDS_ITEM": "i", "REPO": "/e"}).repository == Path("/e")
    with pytest.raises(ConfigError, match=r"--repository is required \(or set REPO\)"):
        toolkit.load(Needs, vars(parser.parse_args(["thing"])), {})
    with pytest.raises(ConfigError, match=r"ITEM is required \(or set NEEDS_ITEM\)"):
        toolkit.load(Needs, {}, {"REPO": "/e"})


def test_help_shows_default_and_variable_but_no_secret() -> None:
    """Help ends with `(default: X; env: NAME)`; a secret shows only whether it is set."""
    parser = toolkit.build_parser(Sample, prog="sample", defaults={"token": "s3cret"})
    helps = {a.dest: " ".join((a.help or "").split()) for a in parser._actions}
    assert helps["port"] == "bind port (default: 8080; env: SAMPLE_PORT)"
    assert helps["name"] == "a name (default: x; env: SAMPLE_NAME or LEGACY_NAME)"
    assert helps["verbose"].endswith("(default: false; env: SAMPLE_VERBOSE)")
    assert helps["seed"].endswith("(default: unset; env: SAMPLE_SEED)")
    assert helps["token"] == "a secret (default: set (hidden); env: SAMPLE_SECRET)"
    assert "s3cret" not in parser.format_help()


def test_start_up_defaults_replace_field_defaults() -> None:
    """`defaults` (computed at start-up) sit under the environment and the flags."""
    assert toolkit.load(Sample, None, {}, defaults={"port": 1}).port == 1
    assert toolkit.load(Sample, None, {"SAMPLE_PORT": "2"}, defaults={"port": 1}).port == 2


def test_env_hook_overrides_the_regular_variables() -> None:
    """A legacy switch mapped by `env_hook` wins over the variables, a flag over both."""

    def hook(env: Any) -> dict[str, Any]:
        return {"mode": "b"} if env.get("LEGACY_B") == "true" else {}

    env = {"SAMPLE_MODE": "a", "LEGACY_B": "true"}
    assert toolkit.load(Sample, None, env, env_hook=hook).mode == "b"
    assert toolkit.load(Sample, {"mode": "a"}, env, env_hook=hook).mode == "a"


def test_to_argv_round_trips() -> None:
    """`to_argv` writes only what differs from the defaults, and parses back to the same."""
    config = Sample(port=1, verbose=True, keys=("a", "b"), dirs=(Path("-x"),), seed=3)
    argv = toolkit.to_argv(config)
    assert argv == ["--port=1", "--verbose", "--keys=a,b", "--dir=-x", "--seed=3"]
    assert _load(argv, {}) == config
    assert toolkit.to_argv(Sample()) == []


def test_every_field_must_be_a_setting_with_help() -> None:
    """A field without setting() or without help text is refused, so no flag goes undocumented."""

    @dataclass
    class Plain:
        port: int = 1

    with pytest.raises(TypeError, match="is not declared with setting"):
        toolkit.build_parser(Plain, prog="plain")
    with pytest.raises(TypeError, match="needs a help text"):
        setting(1)


def test_parsers_leave_absent_flags_out() -> None:
    """An absent flag leaves no attribute, so it cannot hide a variable."""
    parser = toolkit.build_parser(Sample, prog="sample")
    assert vars(parser.parse_args([])) == {}
    assert isinstance(parser, argparse.ArgumentParser)


@pytest.mark.parametrize(
    ("command", "env", "error"),
    [
        (["dispatcher"], {"DISPATCHER_PORT": "abc"}, "DISPATCHER_PORT='abc' is not an int"),
        (["dispatcher", "--max-queue", "0"], {}, "max_queue must be >= 1"),
        (["worker"], {"WORKER_CAPACITY": "many"}, "WORKER_CAPACITY='many' is not an int"),
        (
            ["uploader", "serve"],
            {"UPLOADER_PORT": "abc", "MODEL_REPOSITORY": "/r"},
            "UPLOADER_PORT",
        ),
        (["benchmark", "run"], {"NUM_WORKERS": "two"}, "NUM_WORKERS='two' is not an int"),
    ],
)
def test_bad_setting_of_a_real_command_is_one_line(
    command: list[str], env: dict[str, str], error: str
) -> None:
    """`python -m ...` with a bad value prints one line, no traceback, and exits 2."""
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m {command[0]}"), done.stderr
    assert error in lines[0]
