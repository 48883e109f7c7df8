"""Typed bodies: request decoding rules, the generated OpenAPI document, and its examples."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from starlette.routing import Route

from dispatcher.app import create_app
from dispatcher.auth import OPEN_PATHS
from dispatcher.config import Config
from dispatcher.errors import DispatcherError
from dispatcher.openapi import body_types, openapi_document
from dispatcher.operations import OPERATIONS
from dispatcher.schemas import (
    ErrorBody,
    Health,
    Labels,
    Stats,
    TaskAccepted,
    TaskCompleted,
    TaskRequest,
    TaskStatus,
    UploadModelRequest,
    WorkerDetails,
    WorkerIds,
    decode_body,
    parse_task_request,
    parse_upload_request,
)
from tests.dispatcher.conftest import RunningDispatcher
from tests.dispatcher.fake_worker import FakeWorker

pytestmark = pytest.mark.timeout(60)

CONFIG = Config()
OK = {"task_type": "t", "label": "a"}


def refusal(raw: bytes, parse: Any = None) -> tuple[int, str, Any]:
    """(status, error code, detail) of the error `raw` is refused with."""
    with pytest.raises(DispatcherError) as info:
        (parse or (lambda r: parse_task_request(r, CONFIG)))(raw)
    return info.value.http_status, info.value.code, info.value.detail


def body(**fields: Any) -> bytes:
    return json.dumps({**OK, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (body(priority=1), "priority"),
        (body(parameters={}, Label="a"), "Label"),
        (b'{"task_type": "t"}', "label"),
        (body(label=""), "label"),
        (body(label="   "), "label"),
        (body(label="x" * 257), "label"),
        (body(task_type=5), "task_type"),
        (body(task_id=""), "task_id"),
        (b'{"task_type": "t", "label": "x\\ud828"}', "label"),
        (b'{"task_type": "t", "label": "a", "parameters_json": "\\ud800"}', "parameters_json"),
        (body(timeout_s=0), "timeout_s"),
        (body(timeout_s=-1), "timeout_s"),
        (body(timeout_s=86_400.5), "timeout_s"),
        (body(timeout_s=True), "timeout_s"),
        (b'{"task_type": "t", "label": "a", "timeout_s": NaN}', "timeout_s"),
        (b'{"task_type": "t", "label": "a", "timeout_s": 1e999}', "timeout_s"),
        (b'{"task_type": "t", "label": "a", "timeout_s": ' + b"9" * 400 + b"}", "timeout_s"),
        (body(parameters=[1]), "parameters"),
        (body(parameters_json={}), "parameters_json"),
        (body(parameters_json="{x"), "parameters_json"),
        (body(parameters_json=""), "parameters_json"),
        (body(parameters_json="[1, 2]"), "parameters_json"),
        (body(parameters_json='{"a": ' + "9" * 5000 + "}"), "parameters_json"),
        (body(parameters_json="[" * 100_000 + "]" * 100_000), "parameters_json"),
        (b'{"task_type": "t", "label": "a", "parameters": {"n": ' + b"9" * 5000 + b"}}", None),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (body(parameters={"n": 1}, parameters_json="{}"), "parameters"),
        (body(task_type="embed_texts", parameters={"texts": []}), "parameters.texts"),
        (body(task_type="embed_texts", parameters={"texts": ["a"], "x": 1}), "parameters"),
        (body(task_type="embed_texts", parameters={"texts": ["a"] * 257}), "parameters.texts"),
        (body(parameters={"texts": ["a", "b" * 20_001]}), "parameters.texts[1]"),
    ],
)
def test_invalid_fields_get_422_naming_the_field(raw: bytes, field: str | None) -> None:
    """Each rule of the task body (unknown fields included) is a 422 naming its field."""
    status, code, detail = refusal(raw)
    assert (status, code) == (422, "validation_failed"), detail
    if field is not None:
        assert detail["field"] == field, detail
    else:  # a field too large to name exactly: the path starts at parameters
        assert detail["field"].startswith("parameters"), detail
    assert detail["message"]


def test_unknown_and_contradictory_fields_say_why() -> None:
    """An unknown field and parameters with parameters_json each get an explicit message."""
    assert refusal(body(priority=1))[2] == {"field": "priority", "message": "is not a known field"}
    message = refusal(body(parameters={}, parameters_json="{}"))[2]["message"]
    assert "contradictory" in message and "parameters_json" in message


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"", b'{"a": 1} x']
)
def test_non_objects_get_400(raw: bytes) -> None:
    """A body that is not JSON, or not a JSON object, is a 400 invalid_json."""
    assert refusal(raw)[:2] == (400, "invalid_json")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"parameters_json": "{}", "task_id": None, "timeout_s": None}),
        ({"parameters": {"n": 1}, "timeout_s": 5}, {"parameters_json": '{"n": 1}', "timeout_s": 5}),
        ({"parameters_json": '{"n":1}', "task_id": "t-1"}, {"parameters_json": '{"n":1}'}),
        ({"parameters": None, "parameters_json": "{}"}, {"parameters_json": "{}"}),
        ({"timeout_s": 86_400}, {"timeout_s": 86_400.0}),
        ({"label": "x" * 256, "task_id": "a._~-" + "9" * 123}, {"task_id": "a._~-" + "9" * 123}),
    ],
)
def test_valid_bodies_give_submit_arguments(fields: dict[str, Any], expected: Any) -> None:
    """Valid bodies (boundaries included) become `Dispatcher.submit` arguments."""
    args = parse_task_request(body(**fields), CONFIG).submit_args()
    assert set(args) == {"task_type", "label", "parameters_json", "task_id", "timeout_s"}
    assert {k: args[k] for k in expected} == expected


def test_parameters_limits_follow_the_config() -> None:
    """max_json_depth, max_texts and max_text_chars come from the dispatcher's Config."""
    tight = Config(max_json_depth=2, max_texts=1, max_text_chars=3)
    for fields, field in [
        ({"parameters": {"a": {"b": {}}}}, "parameters"),
        ({"parameters": {"texts": ["a", "b"]}}, "parameters.texts"),
        ({"parameters_json": '{"texts": ["abcd"]}'}, "parameters_json.texts[0]"),
    ]:
        with pytest.raises(DispatcherError) as info:
            parse_task_request(body(**fields), tight)
        assert info.value.detail["field"] == field
    parse_task_request(body(parameters={"texts": ["abc"]}), tight)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"model_id": "a/b", "model_nmae": "x"}', "model_nmae"),
        (b'{"max_batch_size": 8}', "model_id"),
        (b'{"model_id": 5}', "model_id"),
        (b'{"model_id": "a/b", "max_batch_size": 0}', "max_batch_size"),
        (b'{"model_id": "a/b", "max_batch_size": 1025}', "max_batch_size"),
        (b'{"model_id": "a/b", "max_batch_size": true}', "max_batch_size"),
        (b'{"model_id": "a/b", "overwrite": "yes"}', "overwrite"),
        (b'{"model_id": "a/b", "model_name": ""}', "model_name"),
    ],
)
def test_upload_request_rules(raw: bytes, field: str) -> None:
    """/upload-model bodies: unknown or mistyped fields are 422 before reaching the uploader."""
    status, code, detail = refusal(raw, parse_upload_request)
    assert (status, code, detail["field"]) == (422, "validation_failed", field)
    # The id's form is the uploader's to judge (it answers invalid_model_id itself).
    assert parse_upload_request(b'{"model_id": "../x"}').model_id == "../x"


# --- the OpenAPI document -------------------------------------------------------------------


def test_document_is_openapi_3_1() -> None:
    """The document has OpenAPI 3.1's structure and each schema is valid JSON Schema 2020-12."""
    doc = openapi_document()
    try:  # the full validator when the environment has it
        from openapi_spec_validator import validate  # type: ignore[import-not-found]
    except ImportError:
        validate = None
    if validate is not None:
        validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert {"title", "version", "summary", "description"} <= set(doc["info"])
    components = doc["components"]["schemas"]
    for name, schema in components.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema.get("description") or schema.get("enum"), f"{name} has no description"
    refs = set(_refs(doc))
    assert refs <= {f"#/components/schemas/{name}" for name in components}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["description"] and op["responses"], (method, path)
            assert all(r["description"] for r in op["responses"].values())
            for param in op.get("parameters", []):
                assert param["in"] in ("query", "path") and "schema" in param
            if "{" in path:
                names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
                assert names == {path[path.index("{") + 1 : path.index("}")]}


def test_every_route_is_documented() -> None:
    """Every HTTP route of the app is in the document, with its methods (bar /docs itself and
    `/`, a redirect to /dashboard)."""
    doc = openapi_document()
    app = create_app(Config())
    for route in app.routes:
        if not isinstance(route, Route) or route.path in ("/docs", "/"):
            continue
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        assert methods == set(doc["paths"][route.path]), route.path


def test_schemas_come_from_the_models() -> None:
    """Request schemas forbid unknown fields; /stats is fully described, not just 'object'."""
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    for name in ("TaskRequest", "UploadModelRequest", "Stats", "ErrorBody"):
        assert schemas[name]["additionalProperties"] is False
    assert set(schemas["Stats"]["required"]) == set(Stats.__struct_fields__)
    stats = doc["paths"]["/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    assert stats["schema"] == {"$ref": "#/components/schemas/Stats"}
    task = schemas["TaskRequest"]["properties"]
    assert task["label"]["maxLength"] == 256 and task["label"]["minLength"] == 1
    assert task["timeout_s"]["anyOf"][0] == {
        "type": "number", "exclusiveMinimum": 0, "maximum": 86_400.0,
        "description": "deadline in seconds (default: the server's)",
    }  # fmt: skip
    # The contradiction rule msgspec cannot state is in the JSON Schema too.
    both = {**OK, "parameters": {}, "parameters_json": "{}"}
    validator = _validator(doc, {"$ref": "#/components/schemas/TaskRequest"})
    assert not validator.is_valid(both)
    assert validator.is_valid({**OK, "parameters": {}, "parameters_json": None})
    protected = doc["paths"]["/upload-model"]["post"]["responses"]
    assert {"401", "403", "422"} <= set(protected)
    for path in OPEN_PATHS & set(doc["paths"]):
        assert "security" not in doc["paths"][path]["get"]


def test_every_operation_has_examples_that_decode_into_their_types() -> None:
    """Each example, request or answer, decodes into its model and matches its JSON Schema."""
    doc = openapi_document()
    checked = 0
    for op in OPERATIONS:
        for example in op.request_examples.values():
            assert op.request is not None
            raw = msgspec.json.encode(example)
            if op.request is TaskRequest:
                parse_task_request(raw, CONFIG)
            elif op.request is UploadModelRequest:
                parse_upload_request(raw)
            else:
                decode_body(raw, op.request)
            checked += 1
        assert op.request is None or op.request_examples, f"{op.path} has no request example"
        assert any(a.examples for a in op.answers if a.status.startswith("2")), op.path
        for answer in op.answers:
            if answer.body is None:  # not JSON (Prometheus text)
                continue
            types = answer.body if isinstance(answer.body, tuple) else (answer.body,)
            media = doc["paths"][op.path][op.method]["responses"][answer.status]["content"]
            for example in answer.examples.values():
                raw = msgspec.json.encode(example)
                assert any(_decodes(raw, t) for t in types), (op.path, answer.status, example)
                schema = media[answer.media_type]["schema"]
                assert _validator(doc, schema).is_valid(example), (op.path, answer.status)
                checked += 1
    assert checked > 30
    assert len(body_types()) == len({repr(t) for t in body_types()})


# --- real answers decode into the response models ------------------------------------------


@pytest.fixture
async def client(dispatcher: RunningDispatcher) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=30.0) as c:
        yield c


async def test_real_answers_match_the_models(
    dispatcher: RunningDispatcher, client: httpx.AsyncClient
) -> None:
    """Every JSON answer of a live dispatcher decodes strictly into its documented model."""
    worker = await FakeWorker(dispatcher.ws_url, "w-1", labels=["a"]).start()
    try:
        task = {"task_type": "sample_task", "label": "a", "parameters": {}}
        ran = await client.post("/run-task", json=task)
        queued = await client.post("/tasks", json={**task, "task_id": "t-1"})
        await worker.wait_for_tasks(2)
        answers: list[tuple[httpx.Response, Any]] = [
            (ran, TaskCompleted),
            (queued, TaskAccepted),
            (await client.get("/tasks/t-1"), TaskStatus),
            (await client.get("/health"), Health),
            (await client.get("/workers"), WorkerIds),
            (await client.get("/workers?detail=true"), WorkerDetails),
            (await client.get("/labels"), Labels),
            (await client.get("/stats"), Stats),
            (await client.get("/tasks/nope"), ErrorBody),
            (await client.post("/run-task", json={**task, "x": 1}), ErrorBody),
        ]
    finally:
        await worker.close()
    for answer, model in answers:
        assert answer.status_code < 500, answer.text
        msgspec.json.decode(answer.content, type=model)  # strict: unknown fields fail
    stats = msgspec.json.decode(answers[7][0].content, type=Stats)
    assert stats.per_label["a"].completed >= 1 and "w-1" in stats.per_worker
    assert answers[-1][0].json()["detail"] == {"field": "x", "message": "is not a known field"}


async def test_unknown_fields_refused_over_http(client: httpx.AsyncClient) -> None:
    """Over HTTP, unknown and contradictory fields are 422 on both task endpoints."""
    for path in ("/run-task", "/tasks"):
        unknown = await client.post(path, json={**OK, "lable": "a"})
        assert unknown.status_code == 422 and unknown.json()["detail"]["field"] == "lable"
        both = await client.post(path, json={**OK, "parameters": {}, "parameters_json": "{}"})
        assert both.status_code == 422 and "contradictory" in both.json()["detail"]["message"]


async def test_upload_model_refuses_unknown_fields_before_forwarding(
    dispatcher_factory: Any,
) -> None:
    """With an uploader configured, a bad body is a 422 and never reaches it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from tests.support import run_server

    seen: list[bytes] = []
    good_upload = b'{"model_id": "a/b",  "overwrite": false}'

    async def upload(request: Request) -> JSONResponse:
        seen.append(await request.body())
        return JSONResponse({"error": "stub", "detail": "reached"}, status_code=418)

    with run_server(Starlette(routes=[Route("/upload-model", upload, methods=["POST"])])) as up:
        d = dispatcher_factory(uploader_url=up.base_url)
        async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as c:
            bad = await c.post("/upload-model", json={"model_id": "a/b", "force": True})
            good = await c.post("/upload-model", content=good_upload)
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "force"
    assert good.status_code == 418
    assert seen == [good_upload]  # forwarded as the caller wrote it


def _decodes(raw: bytes, kind: Any) -> bool:
    try:
        msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError:
        return False
    return True


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # The components ride along so that `#/components/schemas/...` resolves.
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []
