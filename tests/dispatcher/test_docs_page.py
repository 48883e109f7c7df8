"""/docs: the OpenAPI document as a self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Callable

import httpx
import pytest

from dispatcher.docs_page import render_docs_html
from dispatcher.openapi import openapi_document
from tests.dispatcher.conftest import RunningDispatcher

pytestmark = pytest.mark.timeout(60)


async def test_docs_page_lists_every_path(
    dispatcher_factory: Callable[..., RunningDispatcher],
) -> None:
    """GET /docs is HTML naming every documented path, open even when API keys are set."""
    d = dispatcher_factory(api_keys=("k1",))
    async with httpx.AsyncClient(base_url=d.base_url, timeout=30) as client:
        answer = await client.get("/docs")
        closed = await client.get("/stats")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert closed.status_code == 401  # keys are on: /docs is open on purpose
    page = answer.text
    for path, item in openapi_document()["paths"].items():
        assert f"<code>{html.escape(path)}</code>" in page, path
        for method in item:
            assert f'id="{method}-' in page


def test_page_shows_schemas_examples_and_constraints() -> None:
    """Each schema gets a section, fields with constraints, and examples are shown as JSON."""
    doc = openapi_document()
    page = render_docs_html(doc)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page, name
    assert '<a href="#schema-TaskRequest">TaskRequest</a>' in page
    assert "length ≤ <code>256</code>" in page  # a field's constraint
    assert "&quot;embed_texts&quot;" in page  # a request example
    assert "deadline_exceeded" in page  # an error example
    # Nothing is fetched from elsewhere: no scripts, no external styles.
    assert "<script" not in page and "<link" not in page and "src=" not in page


def test_page_escapes_the_document() -> None:
    """Text from the document is escaped, so it cannot inject markup."""
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "<b>x</b>", "version": "1"},
        "paths": {"/a": {"get": {"summary": "<script>", "description": "`<i>`", "responses": {}}}},
        "components": {"schemas": {}},
    }
    page = render_docs_html(doc)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>" not in page and "<code>&lt;i&gt;</code>" in page
