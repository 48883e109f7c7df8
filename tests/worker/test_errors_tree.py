"""The worker's exception tree: one base, every class with its own protocol ErrorCode."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from proto import smartrouting_pb2 as pb
from tests.support import ROOT
from worker import errors
from worker.cache import CacheFullError, ModelCache
from worker.connection import DispatcherConnection


def test_every_class_declares_a_protocol_code() -> None:
    """Each class sets its own `code`, a value the proto's ErrorCode enum defines."""
    classes = errors.all_error_classes()
    assert len(classes) >= 13
    valid = set(pb.ErrorCode.values()) - {pb.ERROR_CODE_UNSPECIFIED}
    for cls in classes:
        assert "code" in vars(cls), f"{cls.__name__} inherits its code"
        assert cls.code in valid, cls


def test_the_docstring_draws_every_class_with_its_code() -> None:
    """The tree in the module docstring names every class next to its ErrorCode."""
    lines = (errors.__doc__ or "").splitlines()
    for cls in errors.all_error_classes():
        drawn = [line for line in lines if f" {cls.__name__} " in f" {line.strip(' │├└─')} "]
        assert drawn, f"{cls.__name__} is not drawn"
        assert pb.ErrorCode.Name(cls.code) in drawn[0], cls.__name__


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.ModelNotFoundError("m"), pb.MODEL_NOT_FOUND),
        (errors.ShuttingDownError("bye"), pb.WORKER_SHUTTING_DOWN),
        (errors.DeadlineExceededError("late"), pb.DEADLINE_EXCEEDED),
        (errors.EngineUnavailableError("down"), pb.ENGINE_UNAVAILABLE),
        (errors.ConfigError("bad"), pb.INTERNAL),
        (KeyError("a bug"), pb.INTERNAL),
    ],
)
def test_error_code_maps_exceptions(exc: BaseException, code: int) -> None:
    """error_code() gives the class's code, and INTERNAL for exceptions outside the tree."""
    assert errors.error_code(exc) == code


def test_cache_errors_belong_to_the_tree() -> None:
    """The cache raises tree classes: CacheFullError and ConfigError (still a ValueError)."""
    assert CacheFullError is errors.CacheFullError
    with pytest.raises(errors.ConfigError, match="capacity must be >= 1"):
        ModelCache(capacity=0)
    assert issubclass(errors.ConfigError, ValueError)


async def test_invalid_dispatcher_url_is_a_config_error() -> None:
    """A URL websockets cannot parse is wrapped as ConfigError, its cause kept."""
    link = DispatcherConnection(
        url="not a websocket url", worker_id="w", hello=lambda: pb.Hello(), on_message=print
    )
    with pytest.raises(errors.ConfigError, match="invalid dispatcher URL") as raised:
        await link.run()
    assert raised.value.__cause__ is not None


_ALLOWED_FOREIGN = {"SystemExit"}  # the CLI's exit


def test_worker_raises_only_classes_of_the_tree() -> None:
    """Every `raise X(...)` under worker/ names a WorkerError class (bare re-raises aside)."""
    tree_names = {cls.__name__ for cls in errors.all_error_classes()}
    offenders = []
    for path in sorted((ROOT / "worker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            # `self._wrap(...)` (engines/triton.py) returns a tree error for a foreign one.
            if name in tree_names or name in _ALLOWED_FOREIGN or name == "_wrap":
                continue
            offenders.append(f"{Path(path).relative_to(ROOT)}:{node.lineno} raises {name}")
    assert offenders == []
