"""Model ids and model names: validation and the id → name mapping (pure, no I/O).

A model id is what a model author sends (`sentence-transformers/all-MiniLM-L6-v2`): one
or two segments of `[A-Za-z0-9._-]` joined by one `/`. The model name is the directory
and Triton label it is published under: the id with `/` replaced by `--`. Nothing that
passes these checks can name a path outside the repository.
"""

from __future__ import annotations

import re

from uploader.errors import InvalidModelId

#: Longest model id or model name accepted.
MAX_LENGTH = 200

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def _check_segment(segment: str, whole: str) -> None:
    if not segment:
        raise InvalidModelId(f"model id {whole!r} has an empty path segment")
    if not _SEGMENT.fullmatch(segment):
        raise InvalidModelId(
            f"model id {whole!r} has characters outside [A-Za-z0-9._-] in {segment!r}"
        )
    if segment.startswith("."):
        raise InvalidModelId(f"model id {whole!r} has a segment starting with '.'")


def validate_model_id(model_id: object) -> str:
    """Return `model_id` if it is a safe `owner/name` or `name` id, else raise InvalidModelId."""
    if not isinstance(model_id, str):
        raise InvalidModelId(f"model id must be a string, not {type(model_id).__name__}")
    if not model_id:
        raise InvalidModelId("model id is empty")
    if len(model_id) > MAX_LENGTH:
        raise InvalidModelId(f"model id is {len(model_id)} characters long; at most {MAX_LENGTH}")
    if "\\" in model_id:
        raise InvalidModelId(f"model id {model_id!r} contains a backslash")
    if model_id.startswith("/"):
        raise InvalidModelId(f"model id {model_id!r} is an absolute path")
    if ".." in model_id:
        raise InvalidModelId(f"model id {model_id!r} contains '..'")
    segments = model_id.split("/")
    if len(segments) > 2:
        raise InvalidModelId(f"model id {model_id!r} has more than one '/'")
    for segment in segments:
        _check_segment(segment, model_id)
    return model_id


def validate_model_name(model_name: object) -> str:
    """Return `model_name` if it is a safe single directory name, else raise InvalidModelId."""
    if not isinstance(model_name, str):
        raise InvalidModelId(f"model name must be a string, not {type(model_name).__name__}")
    if "/" in model_name:
        raise InvalidModelId(f"model name {model_name!r} contains '/'")
    validate_model_id(model_name)
    return model_name


def model_name_for(model_id: str) -> str:
    """The model name (directory, Triton label) for a valid model id: `/` becomes `--`."""
    return validate_model_name(validate_model_id(model_id).replace("/", "--"))
