"""Model id validation and the id → name mapping."""

from __future__ import annotations

import pytest

from uploader.errors import InvalidModelId
from uploader.names import MAX_LENGTH, model_name_for, validate_model_id, validate_model_name


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers--all-MiniLM-L6-v2"),
        ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("acme/model_v1.2", "acme--model_v1.2"),
        ("a/b", "a--b"),
        ("x" * MAX_LENGTH, "x" * MAX_LENGTH),
    ],
)
def test_valid_ids_map_slash_to_double_dash(model_id: str, name: str) -> None:
    """Valid ids pass unchanged and their name replaces '/' with '--'."""
    assert validate_model_id(model_id) == model_id
    assert model_name_for(model_id) == name


@pytest.mark.parametrize(
    "model_id",
    [
        "",
        "../x",
        "..",
        "a/../../b",
        "a/..",
        "/abs",
        "/etc/passwd",
        "a\\b",
        "..\\x",
        "a/b/c",
        "a//b",
        "a/",
        "/",
        ".hidden",
        "a/.hidden",
        "a b",
        "a:b",
        "ä/b",
        "a/b\x00",
        "x" * (MAX_LENGTH + 1),
        "~/models",
        "$HOME",
    ],
)
def test_unsafe_ids_are_rejected(model_id: str) -> None:
    """Traversal, absolute paths, backslashes, odd characters and overlong ids raise."""
    with pytest.raises(InvalidModelId):
        validate_model_id(model_id)


@pytest.mark.parametrize("value", [None, 3, ["a"], {"a": 1}, b"a"])
def test_non_strings_are_rejected(value: object) -> None:
    """A model id must be a string."""
    with pytest.raises(InvalidModelId, match="must be a string"):
        validate_model_id(value)


@pytest.mark.parametrize("name", ["a/b", "../x", "", ".x"])
def test_model_names_are_single_safe_segments(name: str) -> None:
    """A model name is one path segment: no '/', no traversal, not hidden."""
    with pytest.raises(InvalidModelId):
        validate_model_name(name)
    assert validate_model_name("my-model.v2") == "my-model.v2"
