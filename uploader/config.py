"""Typed configuration of `python -m uploader` and its subcommands.

One dataclass per parser: `UploaderConfig` (options before the subcommand), `ConvertConfig`
(`convert`) and `ServeConfig` (`serve`). Every field is a flag and an environment variable
(`UPLOADER_<FIELD>` unless it names another: the repository is the shared `MODEL_REPOSITORY`,
the admin key `SMARTROUTING_ADMIN_KEY`); smartrouting.config derives the parsers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from smartrouting.config import setting
from smartrouting.logs import LogFormat

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


@dataclass(frozen=True)
class UploaderConfig:
    """Options shared by every subcommand."""

    env_prefix: ClassVar[str] = "UPLOADER_"

    log_level: LogLevel = setting("info", "log level")
    log_format: LogFormat = setting(
        "text", "log lines: text, or json (one object per line, for log collectors)"
    )


@dataclass(frozen=True)
class ConvertConfig:
    """`convert`: export one model to ONNX, validate it and publish it."""

    env_prefix: ClassVar[str] = "UPLOADER_"

    model_id: str = setting(help="model id (owner/name), alias or local directory", positional=True)
    repository: Path = setting(help="model repository to publish into", env="MODEL_REPOSITORY")
    max_batch_size: int = setting(32, "largest batch the published model accepts")
    dynamic_batching: bool = setting(True, "let Triton batch concurrent requests of the model")
    batch_delay_ms: float = setting(2.0, "dynamic batching: longest wait for a batch to fill, ms")
    overwrite: bool = setting(False, "replace a model that is published already")
    model_name: str | None = setting(
        None, "name to publish under", shown_default="derived from the model id"
    )


@dataclass(frozen=True)
class ServeConfig:
    """`serve`: the HTTP service (`/upload-model`, `/models`, `/health`)."""

    env_prefix: ClassVar[str] = "UPLOADER_"

    repository: Path = setting(help="model repository to publish into", env="MODEL_REPOSITORY")
    host: str = setting("127.0.0.1", "bind address")
    port: int = setting(8081, "bind port")
    models_dir: tuple[Path, ...] = setting(
        (),
        f"directory of local models offered by id (repeatable; the variable is "
        f"{os.pathsep!r}-separated)",
        repeat=True,
        sep=os.pathsep,
    )
    max_concurrent: int = setting(1, "conversions run at once")
    dynamic_batching: bool = setting(True, "let Triton batch concurrent requests of the model")
    batch_delay_ms: float = setting(2.0, "dynamic batching: longest wait for a batch to fill, ms")
    admin_key: str | None = setting(
        None, "key /upload-model asks for", env="SMARTROUTING_ADMIN_KEY", secret=True
    )


def batch_delay(config: ConvertConfig | ServeConfig) -> float | None:
    """The dynamic-batching delay `convert_model` takes: None when batching is off."""
    return config.batch_delay_ms if config.dynamic_batching else None
