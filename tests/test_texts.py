"""The shared parameter rules (smartrouting.texts), and both sides applying them alike."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.errors import ValidationFailed
from dispatcher.limits import check_parameters
from proto import smartrouting_pb2 as pb
from smartrouting.texts import (
    EMBED_TEXTS,
    Problem,
    TextLimits,
    depth_problem,
    embed_problem,
    json_depth,
    texts_problem,
)
from worker.errors import InvalidParametersError
from worker.tasks import EmbedTexts, Limits, parse_task

LIMITS = TextLimits(max_texts=3, max_text_chars=5, max_json_depth=4)

#: (parameters, the problem the rules find); None: acceptable.
CASES: list[tuple[dict[str, Any], Problem | None]] = [
    ({"texts": ["a"]}, None),
    ({"texts": ["", "abcde", "x"], "normalize": False}, None),
    ({}, Problem("texts", "must be a non-empty list of strings")),
    ({"texts": []}, Problem("texts", "must be a non-empty list of strings")),
    ({"texts": "abc"}, Problem("texts", "must be a non-empty list of strings")),
    ({"texts": ["a", 3]}, Problem("texts[1]", "is int, not a string")),
    ({"texts": [None]}, Problem("texts[0]", "is NoneType, not a string")),
    ({"texts": ["a"] * 4}, Problem("texts", "has 4 items; at most 3")),
    ({"texts": ["a", "abcdef"]}, Problem("texts[1]", "has 6 characters; at most 5")),
    ({"texts": ["a"], "normalize": "yes"}, Problem("normalize", "must be true or false")),
    ({"texts": ["a"], "extra": 1, "b": 2}, Problem("", "unknown parameter(s): ['b', 'extra']")),
]


@pytest.mark.parametrize(("params", "problem"), CASES)
def test_embed_rules(params: dict[str, Any], problem: Problem | None) -> None:
    """Each embed_texts rule finds its problem, with the path of the offending value."""
    assert embed_problem(params, LIMITS) == problem


@pytest.mark.parametrize(("params", "problem"), CASES)
def test_dispatcher_and_worker_refuse_alike(
    params: dict[str, Any], problem: Problem | None
) -> None:
    """The dispatcher (422 naming the field) and the worker (INVALID_PARAMETERS) agree."""
    worker_limits = Limits(LIMITS.max_texts, LIMITS.max_text_chars, max_json_depth=4)
    dispatcher_check = (params, 4, LIMITS.max_texts, LIMITS.max_text_chars, "parameters")
    if problem is None:
        check_parameters(*dispatcher_check, task_type=EMBED_TEXTS)
        assert isinstance(parse_task(EMBED_TEXTS, json.dumps(params), worker_limits), EmbedTexts)
        return
    with pytest.raises(ValidationFailed) as refused:
        check_parameters(*dispatcher_check, task_type=EMBED_TEXTS)
    assert refused.value.detail == {
        "field": problem.field("parameters"),
        "message": problem.message,
    }
    with pytest.raises(InvalidParametersError) as failed:
        parse_task(EMBED_TEXTS, json.dumps(params), worker_limits)
    assert str(failed.value) == str(problem) and failed.value.code == pb.INVALID_PARAMETERS


def test_depth_rule_on_both_sides() -> None:
    """Nesting past max_json_depth is refused by both sides; at the limit it is accepted."""
    assert [json_depth(v) for v in (1, "s", [], {}, [[1]], {"a": [{"b": 2}]})] == [0, 0, 1, 1, 2, 3]
    deep: Any = 1
    for _ in range(5):
        deep = {"a": deep}
    assert depth_problem(deep, 5) is None
    assert depth_problem(deep, 4) == Problem("", "nested 5 deep, more than 4")
    with pytest.raises(ValidationFailed) as refused:
        check_parameters(deep, 4, 10, 10, "parameters_json")
    assert refused.value.detail["field"] == "parameters_json"
    with pytest.raises(InvalidParametersError, match="nested 5 deep, more than 4"):
        parse_task("sample_task", json.dumps(deep), Limits(max_json_depth=4))
    # Past Python's own parser limit the worker still answers INVALID_PARAMETERS.
    with pytest.raises(InvalidParametersError, match="nested too deeply"):
        parse_task("sample_task", "[" * 100_000 + "]" * 100_000, Limits())


def test_texts_rule_and_problem_paths() -> None:
    """texts_problem alone; Problem renders its path for each side."""
    assert texts_problem(["abc"], LIMITS) is None
    assert texts_problem(["abcdef"], LIMITS) == Problem("texts[0]", "has 6 characters; at most 5")
    problem = Problem("texts[2]", "is int, not a string")
    assert problem.field("parameters_json") == "parameters_json.texts[2]"
    assert str(problem) == "'texts[2]' is int, not a string"
    assert Problem("", "too deep").field("parameters") == "parameters"


def test_dispatcher_checks_texts_of_other_task_types_only_when_a_list() -> None:
    """For a task type it does not know, the dispatcher judges only a `texts` list."""
    check_parameters({"texts": "not a list"}, 32, 1, 1, "p", task_type="custom")
    with pytest.raises(ValidationFailed) as refused:
        check_parameters({"texts": ["a", "b"]}, 32, 1, 10, "p", task_type="custom")
    assert refused.value.detail["field"] == "p.texts"
