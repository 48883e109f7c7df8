"""Typed configuration from flags and environment variables, for every entry point.

A program describes its settings once, as a dataclass whose fields are declared with
`setting(...)`. From that class this module derives the argparse flags (each help text ends in
`(default: X; env: NAME)`), the environment variables, and the conversion of strings to each
field's type, read with `typing.get_type_hints` (bool, int, float, str, Path, `Literal` choices,
`tuple[X, ...]` and `X | None`). Precedence: flag > environment > default. A bad value is a
`ConfigError` with a one-line message; `parse_args` prints it as `prog: error: ...` and exits 2.

    @dataclass(frozen=True)
    class Config:
        env_prefix: ClassVar[str] = "DISPATCHER_"
        port: int = setting(8080, "bind port")                       # --port, DISPATCHER_PORT
        api_keys: tuple[str, ...] = setting((), "caller keys", env="SMARTROUTING_API_KEYS",
                                            secret=True)

    config = parse_args(Config, build_parser(Config, prog="python -m dispatcher"))

Environment variables are `<env_prefix><FIELD>` unless a field names its own; an empty
variable counts as unset. Secrets never show their value in `--help` or `repr`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import (
    Any,
    Literal,
    NoReturn,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_KEY = "smartrouting.setting"


class ConfigError(ValueError):
    """A setting is missing or has a bad value; the message is one line for the user."""


class BadValue(ValueError):
    """A string that is not a value of the wanted type: `'abc' is not an int`."""

    def __init__(self, raw: str, expected: str) -> None:
        super().__init__(f"{raw!r} is not {expected}")
        self.expected = expected


@dataclass(frozen=True)
class Setting:
    """What `setting()` records on a dataclass field besides its default."""

    help: str
    env: tuple[str, ...] = ()  # empty: `<env_prefix><FIELD>`
    flag: str | None = None  # None: `--field-name`
    secret: bool = False
    repeat: bool = False  # tuple field given as a repeated flag rather than one joined value
    sep: str | None = ","  # separator of tuple items in one value; None: whitespace
    shown_default: str | None = None
    positional: bool = False


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    env: str | Sequence[str] = (),
    flag: str | None = None,
    secret: bool = False,
    repeat: bool = False,
    sep: str | None = ",",
    shown_default: str | None = None,
    positional: bool = False,
) -> Any:
    """A dataclass field that is also a flag and an environment variable.

    `default`: MISSING makes the setting required. `env`: variable name(s), the first set one
    wins. `secret`: hidden in `--help` and `repr`. `repeat`: a tuple filled by repeating the
    flag. `sep`: separator of tuple items (None: whitespace). `shown_default`: text shown
    instead of the default in `--help` (for defaults computed at start-up).
    """
    if not help:
        raise TypeError("every setting needs a help text")
    names = (env,) if isinstance(env, str) else tuple(env)
    meta = Setting(help, names, flag, secret, repeat, sep, shown_default, positional)
    return dataclasses.field(default=default, repr=not secret, metadata={_KEY: meta})


@dataclass(frozen=True)
class _Spec:
    """One field of a config class, resolved: its type, default, flag and variables."""

    name: str
    hint: Any
    default: Any
    meta: Setting
    env: tuple[str, ...]

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING


def _specs(cls: type) -> list[_Spec]:
    hints = get_type_hints(cls)
    prefix = getattr(cls, "env_prefix", "")
    specs = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = f.metadata.get(_KEY)
        if not isinstance(meta, Setting):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        env = meta.env or (f"{prefix}{f.name.upper()}",)
        specs.append(_Spec(f.name, hints[f.name], f.default, meta, env))
    return specs


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return hint


def convert(raw: str, hint: Any, sep: str | None = ",") -> Any:
    """`raw` as a value of type `hint`; BadValue ("'abc' is not an int") when it is not one."""
    hint = _strip_optional(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin is tuple:
        parts = raw.split(sep) if sep is not None else raw.split()
        return tuple(convert(p.strip(), args[0], sep) for p in parts if p.strip())
    if origin is Literal:
        if raw in args:
            return raw
        raise BadValue(raw, f"one of {', '.join(map(str, args))}")
    if hint is bool:
        word = raw.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise BadValue(raw, "a boolean (true or false)")
    if hint is int or hint is float:
        try:
            return hint(raw.strip())
        except ValueError:
            raise BadValue(raw, "an int" if hint is int else "a number") from None
    if hint is Path:
        return Path(raw)
    if hint is str:
        return raw
    raise TypeError(f"settings of type {hint!r} are not supported")


def env_values(cls: type, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of `cls` that `environ` sets, converted; ConfigError for a bad value."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in _specs(cls):
        name = next((n for n in spec.env if env.get(n)), None)
        if name is None:
            continue
        try:
            values[spec.name] = convert(env[name], spec.hint, spec.meta.sep)
        except BadValue as exc:
            shown = "(hidden)" if spec.meta.secret else repr(env[name])
            raise ConfigError(f"{name}={shown} is not {exc.expected}") from None
    return values


def load(
    cls: type[T],
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    env_hook: Callable[[Mapping[str, str]], Mapping[str, Any]] | None = None,
    invalid: tuple[type[Exception], ...] = (ValueError,),
) -> T:
    """An instance of `cls` from `flags` (parsed values by field name) over `environ`.

    `defaults` replace field defaults (values computed at start-up); `env_hook` maps legacy
    variables to values that override the regular ones; exceptions of the `invalid` kinds
    raised by the class itself (its `__post_init__` checks) become ConfigError.
    """
    env = os.environ if environ is None else environ
    specs = _specs(cls)
    start = defaults or {}
    values: dict[str, Any] = {s.name: start[s.name] for s in specs if s.name in start}
    values.update(env_values(cls, env))
    if env_hook is not None:
        values.update(env_hook(env))
    for spec in specs:
        if flags is not None and spec.name in flags:
            value = flags[spec.name]
            values[spec.name] = tuple(value) if isinstance(value, list) else value
    for spec in specs:
        if spec.required and spec.name not in values:
            where = spec.name.upper() if spec.meta.positional else spec.flag
            raise ConfigError(f"{where} is required (or set {spec.env[0]})")
    try:
        return cls(**values)
    except invalid as exc:
        raise ConfigError("; ".join(str(exc).splitlines())) from exc


def _shown(spec: _Spec, default: Any) -> str:
    if spec.meta.shown_default is not None:
        return spec.meta.shown_default
    if spec.meta.secret:
        return "set (hidden)" if default else "unset"
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return (spec.meta.sep or " ").join(map(str, default))
    return str(default) if default != "" else '""'


def _help_text(spec: _Spec, default: Any = MISSING) -> str:
    """The help of one flag: its text, then `(default: X; env: NAME)`."""
    default = spec.default if default is MISSING else default
    env = " or ".join(spec.env)
    tail = "required" if default is MISSING else f"default: {_shown(spec, default)}"
    return f"{spec.meta.help} ({tail}; env: {env})".replace("%", "%%")


def _arg_type(hint: Any, sep: str | None) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return convert(raw, hint, sep)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(_strip_optional(hint), "__name__", "value")
    return parse


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, defaults: Mapping[str, Any] | None = None
) -> argparse.ArgumentParser:
    """Add one flag per setting of `cls` to `parser`; absent flags leave no attribute."""
    for spec in _specs(cls):
        hint = _strip_optional(spec.hint)
        default = (defaults or {}).get(spec.name, MISSING)
        kwargs: dict[str, Any] = {"help": _help_text(spec, default)}
        if get_origin(hint) is Literal:
            kwargs["choices"] = get_args(hint)
        if spec.meta.positional:
            # Optional for argparse so that its variable can stand in; `load` checks it.
            kwargs.update(nargs="?", default=argparse.SUPPRESS, metavar=spec.name.upper())
            parser.add_argument(spec.name, type=_arg_type(hint, spec.meta.sep), **kwargs)
            continue
        kwargs.update(dest=spec.name, default=argparse.SUPPRESS)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.meta.repeat:
            item = get_args(hint)[0]
            kwargs.update(action="append", type=_arg_type(item, spec.meta.sep))
        else:
            kwargs["type"] = _arg_type(hint, spec.meta.sep)
        if hint is not bool and "choices" not in kwargs:
            kwargs["metavar"] = (
                "SECRET" if spec.meta.secret else spec.flag[2:].upper().replace("-", "_")
            )
        parser.add_argument(spec.flag, **kwargs)
    return parser


def build_parser(
    cls: type,
    *,
    prog: str,
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per setting of `cls`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return add_arguments(parser, cls, defaults=defaults)


def fail(parser: argparse.ArgumentParser, exc: Exception) -> NoReturn:
    """Print `prog: error: <one line>` to stderr and exit 2, as argparse does."""
    parser.exit(2, f"{parser.prog}: error: {exc}\n")


def parse_args(
    cls: type[T],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> T:
    """Parse `argv` (default: sys.argv) over `environ` into `cls`; exit 2 on a bad value.

    `options` go to `load` (defaults, env_hook, invalid).
    """
    flags = vars(parser.parse_args(argv))
    try:
        return load(cls, flags, environ, **options)
    except ConfigError as exc:
        fail(parser, exc)


def to_argv(config: Any) -> list[str]:
    """The flags that reproduce the settings of `config` that differ from their defaults.

    Values are written `--flag=value`, so that one starting with "-" stays a value.
    """
    argv: list[str] = []
    for spec in _specs(type(config)):
        value = getattr(config, spec.name)
        if value == spec.default or value is None:
            continue
        if isinstance(value, bool):
            argv.append(spec.flag if value else "--no-" + spec.flag[2:])
        elif isinstance(value, tuple) and spec.meta.repeat:
            argv += [f"{spec.flag}={item}" for item in value]
        elif spec.meta.positional:
            argv.append(str(value))
        else:
            shown = (
                (spec.meta.sep or " ").join(map(str, value)) if isinstance(value, tuple) else value
            )
            argv.append(f"{spec.flag}={shown}")
    return argv
