"""`--help` of every entry point shows, for every flag, its help, its default and its variable."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

import benchmark.__main__ as benchmark_cli
import uploader.__main__ as uploader_cli
from dispatcher.config import build_parser as dispatcher_parser
from tests.support import ROOT, scaled
from worker.config import build_parser as worker_parser

#: The tail smartrouting.config writes: `(default: X; env: NAME[ or NAME])` or `(required; ...)`.
TAIL = re.compile(r"\((default: .+|required); env: [A-Z][A-Z0-9_]*( or [A-Z][A-Z0-9_]*)*\)$", re.S)


def _walk(
    prog: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(f"{prog} {name}", sub)


def _entry_points() -> list[tuple[str, argparse.ArgumentParser]]:
    parsers = [
        ("dispatcher", dispatcher_parser()),
        ("worker", worker_parser()),
        ("uploader", uploader_cli.build_parsers()[0]),
        ("benchmark", benchmark_cli.build_parsers()[0]),
    ]
    return [pair for prog, parser in parsers for pair in _walk(prog, parser)]


ENTRY_POINTS = _entry_points()


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]


def test_every_subcommand_is_walked() -> None:
    """The walk reaches every subcommand of the uploader and the benchmark."""
    names = {prog for prog, _ in ENTRY_POINTS}
    assert {"uploader convert", "uploader serve"} <= names
    assert {f"benchmark {c}" for c in ("run", "demo", "swarm", "dispatcher-micro")} <= names


@pytest.mark.parametrize(("prog", "parser"), ENTRY_POINTS, ids=[p for p, _ in ENTRY_POINTS])
def test_every_flag_names_its_help_default_and_variable(
    prog: str, parser: argparse.ArgumentParser
) -> None:
    """Each flag's help has its own text, then `(default: X; env: NAME)`."""
    options = _options(parser)
    if prog not in ("uploader", "benchmark"):  # the top levels may hold only subcommands
        assert len(options) >= 3, prog
    for action in options:
        text = " ".join((action.help or "").split())
        assert TAIL.search(text), f"{prog} {action.option_strings or action.dest}: {text!r}"
        assert TAIL.sub("", text).strip(), f"{prog} {action.dest} has no help of its own"


@pytest.mark.parametrize(
    ("prog", "flag", "shown"),
    [
        ("dispatcher", "--port", "default: 8080; env: DISPATCHER_PORT"),
        ("dispatcher", "--api-keys", "default: unset; env: SMARTROUTING_API_KEYS"),
        ("worker", "--capacity", "default: 2; env: WORKER_CAPACITY"),
        ("worker", "--model-repository", "env: WORKER_MODEL_REPOSITORY or MODEL_REPOSITORY"),
        ("uploader serve", "--port", "default: 8081; env: UPLOADER_PORT"),
        ("uploader convert", "--repository", "required; env: MODEL_REPOSITORY"),
        ("benchmark run", "--engine", "default: simulated"),
        ("benchmark run", "--time-scale", "default: 0.05"),
        ("benchmark run", "--workers", "env: BENCHMARK_RUN_WORKERS or NUM_WORKERS"),
        ("benchmark dispatcher-micro", "--paced-rate", "default: 500.0,1000.0"),
    ],
)
def test_important_defaults_are_shown(prog: str, flag: str, shown: str) -> None:
    """The defaults the issue found hidden (engine, time scale, ports) are in the help."""
    parser = dict(ENTRY_POINTS)[prog]
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert shown in " ".join((action.help or "").split())


@pytest.mark.parametrize(
    "command",
    [
        ["dispatcher"],
        ["worker"],
        ["uploader", "convert"],
        ["uploader", "serve"],
        ["benchmark", "run"],
        ["benchmark", "dispatcher-micro"],
    ],
)
def test_help_of_the_real_command(command: list[str]) -> None:
    """`python -m ... --help` exits 0 and prints a default and a variable for each flag."""
    done = subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parser = dict(ENTRY_POINTS)[" ".join(command)]
    assert " ".join(done.stdout.split()).count("; env: ") == len(_options(parser))
