"""`/docs`: the OpenAPI document rendered as one self-contained HTML page.

Rendered on the server from `openapi_document()`: no CDN, no JavaScript, no build step, so it
works on an air-gapped cluster. It lists each endpoint with its parameters, request and
response schemas and examples, then every schema with its fields and constraints.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from dispatcher.openapi import openapi_document

_METHODS = ("get", "post", "put", "patch", "delete")
#: JSON Schema keywords shown as a field's constraints, with how each reads.
_CONSTRAINTS = {
    "minLength": "length ≥ {}",
    "maxLength": "length ≤ {}",
    "pattern": "matches {}",
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "default": "default {}",
}
_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem;
       color: #1d2127; }
code, pre { font: 13px ui-monospace, monospace; background: #f3f4f6; border-radius: 4px; }
code { padding: 0 .25em; }
pre { padding: .6rem; overflow-x: auto; }
section.op { border: 1px solid #d0d4da; border-radius: 6px; padding: .2rem 1rem 1rem;
             margin: 1rem 0; }
.method { font-weight: bold; text-transform: uppercase; color: #fff; padding: 0 .4em;
          border-radius: 4px; background: #2f6fb3; }
.method.post { background: #3a8a4d; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid #e3e6ea;
         padding: .25rem .5rem; }
h3 { margin-bottom: .2rem; }
"""


async def docs_page(request: Request) -> HTMLResponse:
    """GET /docs: the API description as a browsable page."""
    return HTMLResponse(_page())


@functools.cache
def _page() -> str:
    # The document is fixed for the life of the process: render it once.
    return render_docs_html(openapi_document())


def render_docs_html(document: dict[str, Any]) -> str:
    """The HTML page describing `document` (an OpenAPI 3.1 document)."""
    info = document.get("info", {})
    title = _e(info.get("title", "API"))
    operations = [
        (path, method, operation)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if method in _METHODS
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title} <small>{_e(info.get('version', ''))}</small></h1>",
        f"<p><strong>{_text(info.get('summary', ''))}</strong></p>",
        f"<p>{_text(info.get('description', ''))}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> '
        f"(OpenAPI {_e(document.get('openapi', ''))}).</p>",
        "<h2>Endpoints</h2><ul>",
        *(
            f'<li><a href="#{_anchor(m, p)}"><span class="method {m}">{m}</span> '
            f"<code>{_e(p)}</code></a> {_text(o.get('summary', ''))}</li>"
            for p, m, o in operations
        ),
        "</ul>",
        *(_operation(p, m, o) for p, m, o in operations),
        "<h2>Schemas</h2>",
        *(
            _component(name, schema)
            for name, schema in document.get("components", {}).get("schemas", {}).items()
        ),
        "</body></html>",
    ]
    return "\n".join(parts)


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    out = [
        f'<section class="op" id="{_anchor(method, path)}">',
        f'<h3><span class="method {method}">{method}</span> <code>{_e(path)}</code></h3>',
        f"<p><strong>{_text(op.get('summary', ''))}</strong>. "
        f"{_text(op.get('description', ''))}</p>",
    ]
    if op.get("security"):
        schemes = sorted({name for req in op["security"] for name in req})
        out.append(f"<p>Authentication (when keys are configured): {_e(', '.join(schemes))}.</p>")
    if op.get("parameters"):
        out.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>")
        out.append("<th>required</th><th>description</th></tr>")
        for p in op["parameters"]:
            out.append(
                f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                f"<td>{_type(p.get('schema', {}))}</td><td>{'yes' if p.get('required') else 'no'}"
                f"</td><td>{_text(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        out.append("<h4>Request body</h4>")
        out.extend(_media(body.get("content", {})))
    out.append("<h4>Responses</h4><table><tr><th>status</th><th>description</th>")
    out.append("<th>body</th></tr>")
    examples: list[str] = []
    for status, answer in op.get("responses", {}).items():
        content = answer.get("content", {})
        kinds = ", ".join(
            f"{_e(media)}: {_type(m['schema'])}" if "schema" in m else _e(media)
            for media, m in content.items()
        )
        out.append(
            f"<tr><td><code>{_e(status)}</code></td><td>{_text(answer.get('description', ''))}"
            f"</td><td>{kinds}</td></tr>"
        )
        for m in content.values():
            examples.extend(_examples(m, f"{status} "))
    out.append("</table>")
    if examples:
        out.append("<details><summary>Response examples</summary>")
        out.extend(examples)
        out.append("</details>")
    out.append("</section>")
    return "\n".join(out)


def _media(content: dict[str, Any]) -> list[str]:
    out = []
    for media, m in content.items():
        kind = _type(m["schema"]) if "schema" in m else ""
        out.append(f"<p><code>{_e(media)}</code> {kind}</p>")
        out.extend(_examples(m, ""))
    return out


def _examples(media: dict[str, Any], prefix: str) -> list[str]:
    return [
        f"<p>Example {_e(prefix + name)}:</p><pre>{_e(json.dumps(ex['value'], indent=2))}</pre>"
        for name, ex in media.get("examples", {}).items()
    ]


def _component(name: str, schema: dict[str, Any]) -> str:
    out = [f'<section id="schema-{_e(name)}"><h3>{_e(name)}</h3>']
    if schema.get("description"):
        out.append(f"<p>{_text(schema['description'])}</p>")
    properties = schema.get("properties")
    if properties is None:
        out.append(f"<p>{_type(schema)}</p>")
    else:
        required = set(schema.get("required", ()))
        out.append("<table><tr><th>field</th><th>type</th><th>required</th>")
        out.append("<th>constraints</th><th>description</th></tr>")
        for field, prop in properties.items():
            out.append(
                f"<tr><td><code>{_e(field)}</code></td><td>{_type(prop)}</td>"
                f"<td>{'yes' if field in required else 'no'}</td><td>{_constraints(prop)}</td>"
                f"<td>{_text(_description(prop))}</td></tr>"
            )
        out.append("</table>")
        if schema.get("additionalProperties") is False:
            out.append("<p>Other fields are refused (422).</p>")
    if "not" in schema:
        refused = schema["not"].get("description") or f"`{json.dumps(schema['not'])}`"
        out.append(f"<p>Refused (422): {_text(refused)}.</p>")
    out.append("</section>")
    return "\n".join(out)


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short type expression, with links to named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    if "enum" in schema:
        return " | ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if isinstance(kind, list):
        return " | ".join(_e(k) for k in kind)
    return _e(kind) if kind else "any"


def _constraints(schema: dict[str, Any]) -> str:
    found: list[str] = []
    for option in [schema, *schema.get("anyOf", [])]:
        found.extend(
            fmt.format(f"<code>{_e(json.dumps(option[key]))}</code>")
            for key, fmt in _CONSTRAINTS.items()
            if key in option
        )
    return ", ".join(found)


def _description(schema: dict[str, Any]) -> str:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("description"):
            return str(option["description"])
    return ""


def _anchor(method: str, path: str) -> str:
    return method + "-" + re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _text(value: str) -> str:
    """Escaped prose, with `backticks` shown as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(value))
