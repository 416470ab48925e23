"""The document flattened for a template: one plain dict per operation, examples included."""
from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup, escape

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


_CODE_SPAN = re.compile(r"`([^`]+)`")


def prose(text: str | None) -> Markup:
    """Document text as HTML: escaped, with `backtick` spans shown as code (the only markup it uses)."""
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", str(escape(text or ""))))


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local ``$ref`` (one level is all the document uses outside schemas)."""
    if isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return target
    return node


def _schema_label(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    kind = schema.get("type", "any")
    label = " | ".join(kind) if isinstance(kind, list) else kind
    if "enum" in schema:
        label += ": " + ", ".join(str(v) for v in schema["enum"])
    return label


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def _examples(content: dict[str, Any] | None) -> list[dict[str, str]]:
    """Every example of a content map, as text ready to show."""
    found = []
    for media, body in (content or {}).items():
        named = [(name, example["value"]) for name, example in (body.get("examples") or {}).items()]
        if "example" in body:
            named.append(("example", body["example"]))
        found.extend({"media": media, "name": name.replace("_", " "), "text": _text(value)} for name, value in named)
    return found


def _schema_of(doc: dict[str, Any], content: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The name and resolved schema of the first media type, or ("", {})."""
    for body in (content or {}).values():
        schema = body.get("schema", {})
        name = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else ""
        return name, resolve(doc, schema)
    return "", {}


def _fields(doc: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        described = resolve(doc, prop)
        label = _schema_label(prop)
        if prop.get("type") == "array" or (isinstance(prop.get("type"), list) and "array" in prop["type"]):
            label += " of " + _schema_label(prop.get("items", {}))
        fields.append({"name": name, "type": label, "required": name in required,
                       "description": prose(prop.get("description") or described.get("description"))})
    return fields


def schema_fields(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return _fields(doc, doc["components"]["schemas"][name])


def _operation_view(doc: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> dict[str, Any]:
    params = [resolve(doc, p) for p in op.get("parameters", [])]
    security = op.get("security") or []
    body = op.get("requestBody")
    return {
        "id": op["operationId"],
        "method": method.upper(),
        "path": path,
        "tag": (op.get("tags") or ["Other"])[0],
        "summary": op.get("summary", ""),
        "description": prose(op.get("description")),
        "signed": any(security),
        "gs2": any("gs2" in option for option in security),
        "signature_optional": {} in security,
        "parameters": [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                        "type": _schema_label(p.get("schema", {})), "description": prose(p.get("description"))}
                       for p in params],
        "request_schema": _schema_of(doc, body["content"])[0] if body else "",
        "request_fields": _fields(doc, _schema_of(doc, body["content"])[1]) if body else [],
        "request_examples": _examples(body["content"]) if body else [],
        "responses": [{"status": status, "description": prose(resolve(doc, answer)["description"]),
                       "schema": _schema_of(doc, resolve(doc, answer).get("content"))[0],
                       "examples": _examples(resolve(doc, answer).get("content")),
                       "headers": sorted((resolve(doc, answer).get("headers") or {}))}
                      for status, answer in sorted(op["responses"].items())],
    }


def operations(doc: dict[str, Any], section: str = "paths") -> list[dict[str, Any]]:
    """Every operation of ``paths`` (or ``webhooks``) flattened for a template, in document order."""
    return [_operation_view(doc, method, path, op)
            for path, item in doc.get(section, {}).items()
            for method, op in item.items() if method in HTTP_METHODS]


def docs_page(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything templates/docs.html shows, taken from the document."""
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for op in operations(doc):
        by_tag.setdefault(op["tag"], []).append(op)
    error = resolve(doc, {"$ref": "#/components/responses/InvalidSignature"})
    example = next(iter(error["content"]["application/json"]["examples"].values()))["value"]
    return {
        "info": {**doc["info"], "description": prose(doc["info"]["description"])},
        "groups": [(tag["name"], by_tag[tag["name"]]) for tag in doc["tags"] if tag["name"] in by_tag],
        "webhook_ops": operations(doc, "webhooks"),
        "lot_fields": schema_fields(doc, "LotInput"),
        "error_example": json.dumps(example, indent=2),
    }
