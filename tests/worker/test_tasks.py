"""Task parameter validation: typed errors for bad input, normalised values for good."""

from __future__ import annotations

import json

import pytest

from proto import smartrouting_pb2 as pb
from worker.errors import InvalidParametersError, TaskError, UnknownTaskTypeError
from worker.tasks import EmbedTexts, Limits, SampleTask, parse_task

LIMITS = Limits(max_texts=4, max_text_chars=10, max_run_ms=1000)


@pytest.mark.parametrize(
    ("task_type", "params", "expected"),
    [
        ("embed_texts", {"texts": ["a"]}, EmbedTexts(["a"], True)),
        ("embed_texts", {"texts": ["a", "b"], "normalize": False}, EmbedTexts(["a", "b"], False)),
        ("embed_texts", {"texts": [""]}, EmbedTexts([""], True)),
        ("sample_task", {}, SampleTask(None)),
        ("sample_task", {"run_ms": 5}, SampleTask(5.0)),
        ("sample_task", {"run_ms": 0.5}, SampleTask(0.5)),
    ],
)
def test_valid_parameters(task_type: str, params: dict[str, object], expected: object) -> None:
    """Good parameters parse into their typed records, defaults filled in."""
    assert parse_task(task_type, json.dumps(params), LIMITS) == expected


def test_empty_parameters_json_means_empty_object() -> None:
    """An empty parameters_json is `{}` (sample_task needs nothing)."""
    assert parse_task("sample_task", "", LIMITS) == SampleTask(None)


@pytest.mark.parametrize(
    ("task_type", "raw", "match"),
    [
        ("embed_texts", "{not json", "not valid JSON"),
        ("embed_texts", "[1, 2]", "must be a JSON object"),
        ("embed_texts", "{}", "non-empty list of strings"),
        ("embed_texts", '{"texts": []}', "non-empty list of strings"),
        ("embed_texts", '{"texts": "abc"}', "non-empty list of strings"),
        ("embed_texts", '{"texts": ["a", 3]}', r"texts\[1\]' is int"),
        ("embed_texts", '{"texts": [null]}', r"texts\[0\]' is NoneType"),
        ("embed_texts", '{"texts": ["a","b","c","d","e"]}', "has 5 items; at most 4"),
        ("embed_texts", '{"texts": ["01234567890"]}', "has 11 characters; at most 10"),
        (
            "embed_texts",
            '{"texts": ["a"], "normalize": "yes"}',
            "'normalize' must be true or false",
        ),
        ("embed_texts", '{"texts": ["a"], "extra": 1}', r"unknown parameter\(s\): \['extra'\]"),
        ("sample_task", '{"run_ms": "fast"}', "'run_ms' must be a number"),
        ("sample_task", '{"run_ms": true}', "'run_ms' must be a number"),
        ("sample_task", '{"run_ms": -1}', "within"),
        ("sample_task", '{"run_ms": 1e9}', "within"),
        ("sample_task", '{"sleep": 1}', "unknown parameter"),
    ],
)
def test_invalid_parameters(task_type: str, raw: str, match: str) -> None:
    """Bad parameters raise INVALID_PARAMETERS with a message naming the problem."""
    with pytest.raises(InvalidParametersError, match=match) as info:
        parse_task(task_type, raw, LIMITS)
    assert info.value.code == pb.INVALID_PARAMETERS


@pytest.mark.parametrize("task_type", ["", "embed", "EMBED_TEXTS", "rm -rf"])
def test_unknown_task_type(task_type: str) -> None:
    """An unknown task type raises UNKNOWN_TASK_TYPE, whatever the parameters."""
    with pytest.raises(UnknownTaskTypeError) as info:
        parse_task(task_type, "{not even json", LIMITS)
    assert info.value.code == pb.UNKNOWN_TASK_TYPE
    assert isinstance(info.value, TaskError)
