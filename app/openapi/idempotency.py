"""The ``Idempotency-Key`` header on every signed POST of the document, with the answers it adds.

Applied to the finished document (``build_document``) the way ``enforce`` applies the key to the routes
(app/policies.py): every POST with a security requirement gets the header parameter, the 400 for a
malformed key, the 409 for a key still in use and the 422 for a key reused with another request.
"""
from __future__ import annotations

import copy
from typing import Any

from app.config import Settings
from app.openapi.examples import error_example
from app.openapi.responses import error_response
from app.openapi.schemas import ref
from services.idempotency import HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


def parameter(s: Settings) -> dict[str, Any]:
    return {
        "name": HEADER, "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH + 2},
        "example": KEY,
        "description": (
            f"Makes a retry safe: the same key with the same request (method, path, query and body) within "
            f"{s.idempotency_ttl_hours:g} hours answers the first request's status and body again, with "
            f"`{REPLAYED_HEADER}: true`, and does nothing again (no second job, no second OpenAI call). 1-"
            f"{MAX_KEY_LENGTH} printable ASCII characters, bare or as a quoted string; a UUID v4 is a good key. "
            "Keys belong to the client that signs. Answers 2xx and 4xx are kept for the key; 5xx and 429 are "
            "not, so the retry of one of those runs for real."),
    }


def answers() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(status, description, example name, example) of the answers the header adds."""
    details = {"header": HEADER, "idempotency_key": KEY}
    return [
        ("400", "The Idempotency-Key header is malformed.", "invalid_idempotency_key", error_example(
            "INVALID_IDEMPOTENCY_KEY", f"Invalid {HEADER} header: the key is empty. Send 1-{MAX_KEY_LENGTH} printable "
            "ASCII characters, bare or as a quoted string (\"...\"); a UUID v4 is a good key", "Invalid request",
            {"header": HEADER})),
        ("409", "A request with the same Idempotency-Key is still being handled (retry after Retry-After).",
         "idempotency_key_in_use", error_example(
             "IDEMPOTENCY_KEY_IN_USE", f"A request with this {HEADER} is still being handled; retry after the "
             "time in Retry-After to get its answer", "Conflict", details)),
        ("422", "The Idempotency-Key was sent before with another request.", "idempotency_key_reused",
         error_example("IDEMPOTENCY_KEY_REUSED", f"This {HEADER} was sent before with another request (method, "
                       "path, query or body differ); use a new key for a new request", "Validation failed",
                       details)),
    ]


def _resolved(doc: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """An operation's own copy of a response (a shared one is copied, so other operations keep theirs)."""
    if "$ref" in answer:
        return copy.deepcopy(doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]])
    return answer


def _error_or(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema that admits the plain error body beside ``schema`` (e.g. DeliveryPending, which adds a status)."""
    name = schema.get("$ref", "").rsplit("/", 1)[-1]
    if name == "Error":
        return schema
    combined = f"{name}OrError"
    doc["components"]["schemas"].setdefault(combined, {"allOf": [ref("Error")], "anyOf": [schema, ref("Error")]})
    return ref(combined)


def _add(doc: dict[str, Any], responses: dict[str, Any], status: str, description: str, name: str,
         example: dict[str, Any]) -> None:
    if status not in responses:
        answer = error_response(description, **{name: example})
        if status == "409":
            answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        responses[status] = answer
        return
    answer = responses[status] = _resolved(doc, responses[status])
    answer["description"] = f"{answer['description']} Or: {description[0].lower()}{description[1:]}"
    media = answer["content"]["application/json"]
    media["schema"] = _error_or(doc, media["schema"])
    media.setdefault("examples", {})[name] = {"value": example}


def document_idempotency(doc: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Add the header and its answers to every signed POST of ``doc``; returns ``doc``."""
    doc["components"]["parameters"]["IdempotencyKey"] = parameter(s)
    doc["components"]["headers"][REPLAYED_HEADER] = {
        "description": f"`true` on an answer replayed for a repeated {HEADER}.", "schema": {"const": "true"}}
    for item in doc["paths"].values():
        operation = item.get("post")
        if operation is None or not any(operation.get("security") or []):
            continue
        operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/IdempotencyKey"})
        for status, description, name, example in answers():
            _add(doc, operation["responses"], status, description, name, example)
    return doc
