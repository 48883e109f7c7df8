"""The error tree: every class maps to an HTTP status and a code, rendered by one handler."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tests.support import run_server
from tests.uploader.fixtures import fake_builder
from uploader import errors
from uploader.service import create_app, handle_error


def _request(method: str = "POST", path: str = "/upload-model") -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "scheme": "http",
        "server": ("testserver", 80),
        "query_string": b"",
        "headers": [],
    }
    return Request(scope)


def _body(response: Response) -> object:
    return json.loads(bytes(response.body))


def test_every_error_class_has_a_status_and_code() -> None:
    """Each UploaderError subclass declares its own 4xx/5xx status and a unique code."""
    classes = errors.all_error_classes()
    assert len(classes) >= 14
    codes = set()
    for cls in classes:
        assert 400 <= cls.status < 600, cls
        assert cls.code and cls.code not in codes, cls
        codes.add(cls.code)
        if cls is not errors.UploaderError:
            assert "status" in vars(cls), f"{cls.__name__} inherits its status"
            assert "code" in vars(cls), f"{cls.__name__} inherits its code"


def test_the_docstring_draws_every_class() -> None:
    """The tree in the module docstring names every class with its status and code."""
    doc = errors.__doc__ or ""
    for cls in errors.all_error_classes():
        assert f'{cls.__name__} ({cls.status}, "{cls.code}")' in doc, cls.__name__


def test_error_json_shape() -> None:
    """to_json gives the project's {"error", "detail"} body."""
    exc = errors.ModelExists("model m already exists")
    assert exc.to_json() == {"error": "model_exists", "detail": "model m already exists"}
    assert exc.status == 409 and exc.detail == "model m already exists"
    assert errors.ModelNotFound("x").status == 404
    assert errors.NotASentenceTransformer("x").status == 422


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
async def test_every_class_renders_through_the_handler(cls: type[errors.UploaderError]) -> None:
    """The app's one handler answers each class with its status, code, detail and headers."""
    response = await handle_error(_request(), cls(f"detail of {cls.__name__}"))
    assert response.status_code == cls.status
    assert _body(response) == {"error": cls.code, "detail": f"detail of {cls.__name__}"}
    for name, value in cls.default_headers.items():
        assert response.headers[name] == value


async def test_unauthorized_carries_www_authenticate() -> None:
    """The 401 comes from the Unauthorized class, with its Bearer challenge."""
    response = await handle_error(_request(), errors.Unauthorized("admin key required"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="smart-routing"'


@pytest.mark.parametrize(
    ("exc", "status", "code", "detail"),
    [
        (HTTPException(404), 404, "not_found", "no route /upload-model"),
        (
            HTTPException(405, headers={"Allow": "POST"}),
            405,
            "method_not_allowed",
            "POST not allowed on /upload-model",
        ),
        (RuntimeError("boom"), 500, "internal_error", "RuntimeError: boom"),
    ],
)
async def test_foreign_exceptions_map_into_the_tree(
    exc: Exception, status: int, code: str, detail: str
) -> None:
    """Starlette's 404/405 and any stray exception come out in the same JSON shape."""
    response = await handle_error(_request(), exc)
    assert response.status_code == status
    assert _body(response) == {"error": code, "detail": detail}
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_routing_errors_over_http(tmp_path: Path) -> None:
    """A real server answers unknown paths and methods through the handler, Allow included."""
    with run_server(create_app(tmp_path / "repo", builder=fake_builder())) as server:
        missing = httpx.get(f"{server.base_url}/nope")
        wrong = httpx.get(f"{server.base_url}/upload-model")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "no route /nope"}
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json() == {
        "error": "method_not_allowed",
        "detail": "GET not allowed on /upload-model",
    }


def test_admin_key_refusal_over_http(tmp_path: Path) -> None:
    """Without the admin key, and with another one, /upload-model is 401 with a challenge."""
    app = create_app(tmp_path / "repo", builder=fake_builder(), admin_key="secret")
    with run_server(app) as server:
        url = f"{server.base_url}/upload-model"
        none = httpx.post(url, json={"model_id": "acme/tiny"})
        other = httpx.post(url, json={"model_id": "acme/tiny"}, headers={"X-API-Key": "nope"})
    assert none.status_code == 401 and other.status_code == 401
    assert none.json() == {"error": "unauthorized", "detail": "admin key required"}
    assert other.json() == {"error": "unauthorized", "detail": "invalid admin key"}
    assert none.headers["www-authenticate"].startswith("Bearer")


def test_unexpected_conversion_failure_is_a_json_500(tmp_path: Path, models_dir: Path) -> None:
    """A builder failing with a foreign exception is wrapped as internal_error, nothing kept."""
    repo = tmp_path / "repo"
    broken = fake_builder(fail=RuntimeError("disk on fire"))
    with run_server(create_app(repo, local_roots=[models_dir], builder=broken)) as server:
        response = httpx.post(f"{server.base_url}/upload-model", json={"model_id": "acme/tiny"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "RuntimeError: disk on fire"}
    assert not (repo / "acme--tiny").exists()
