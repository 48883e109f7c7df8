"""The error tree: every class maps to an HTTP status and a code."""

from __future__ import annotations

from uploader import errors


def test_every_error_class_has_a_status_and_code() -> None:
    """Each UploaderError subclass declares its own 4xx/5xx status and a unique code."""
    classes = errors.all_error_classes()
    assert len(classes) >= 10
    codes = set()
    for cls in classes:
        assert 400 <= cls.status_code < 600, cls
        assert cls.code and cls.code not in codes, cls
        codes.add(cls.code)
        if cls is not errors.UploaderError:
            assert "status_code" in vars(cls), f"{cls.__name__} inherits its status"


def test_error_json_shape() -> None:
    """to_json gives the project's {"error", "detail"} body."""
    exc = errors.ModelExists("model m already exists")
    assert exc.to_json() == {"error": "model_exists", "detail": "model m already exists"}
    assert exc.status_code == 409
    assert errors.ModelNotFound("x").status_code == 404
    assert errors.NotASentenceTransformer("x").status_code == 422
