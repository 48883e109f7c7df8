"""One logging set-up for every program: text or JSON lines, the same for uvicorn's loggers.

`configure_logging(level, fmt)` installs one handler on the root logger and routes uvicorn's
loggers (`uvicorn.error`, `uvicorn.access`) through it, so a program writes one format only:

- `text`: `2024-05-01 12:00:00,123 INFO dispatcher.events: task finished task_id=3f2a label=a`
- `json`: one object per line, `{"time", "level", "logger", "message", ...fields}`.

Structured fields are passed the standard way, `log.info("task finished", extra={...})`; both
formats show them (text as `key=value`, JSON as keys). uvicorn's access lines become fields too
(`client`, `method`, `path`, `status`). Frame dumps never reach the output: the `websockets`
library logs every frame at DEBUG (through its own loggers, and through `uvicorn.error` in
uvicorn's websocket protocol), and `NoFrameDumps` drops those records whatever the level.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
#: Libraries whose DEBUG output is noise for an operator (connection pools); kept at INFO+.
_QUIET = ("websockets", "httpcore", "hpack", "asyncio")
_WEBSOCKETS_SOURCE = f"{os.sep}websockets{os.sep}"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: its `extra=` values, and uvicorn's access fields."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    if record.name == "uvicorn.access" and isinstance(record.args, tuple):
        if len(record.args) == 5:  # uvicorn: client, method, path, HTTP version, status
            client, method, path, version, status = record.args
            fields.update(
                client=client, method=method, path=path, http_version=version, status=status
            )
    return fields


class NoFrameDumps(logging.Filter):
    """Drops the `websockets` library's DEBUG records (one per frame, payload in hex)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            return True
        return not (record.name.startswith("websockets") or _WEBSOCKETS_SOURCE in record.pathname)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = fields_of(record)
        if not fields:
            return text
        head, newline, tail = text.partition("\n")  # fields before a traceback, if any
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return f"{head} {pairs}{newline}{tail}"


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (int, bool)) or value is None:
        return json.dumps(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of a log format."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")


def configure_logging(
    level: str | int = "info", fmt: LogFormat = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger (the program's, uvicorn's, libraries') through one handler.

    Idempotent: a second call replaces the handler the first one installed. Returns it.
    """
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(NoFrameDumps())
    handler.set_name("smartrouting")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "smartrouting"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's loggers write through the root handler, not handlers of their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    return handler
