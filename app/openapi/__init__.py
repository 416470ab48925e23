"""The OpenAPI 3.1 description of the service, built in Python from the running settings.

It is served at GET /api/v1/openapi.json and rendered as the /docs page, so the document, the
docs and the limits this instance enforces cannot drift apart.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify

from app.config import VERSION, Settings
from app.openapi.idempotency import document_idempotency
from app.openapi.paths import DOCUMENT_PATH, all_paths
from app.openapi.responses import headers, parameters, security_schemes, shared_responses
from app.openapi.webhooks import webhooks
from app.openapi.schemas import all_schemas
from app.policies import Limit, Signature, policy

__all__ = ["DOCUMENT_PATH", "build_document", "document", "init_app"]


def build_document(s: Settings) -> dict[str, Any]:
    return document_idempotency({
        "openapi": "3.1.0",
        "info": {
            "title": "Generation Service API",
            "version": VERSION,
            "summary": "HTML descriptions of car damage from photos, in many languages.",
            "description": (
                "One lot is described synchronously; 2 or more become a batch job that is polled and announced "
                "by a signed webhook. Every error is JSON `{error, message, code, details?}`. Every response "
                "carries X-Request-ID (send your own to correlate logs)."),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "Generation", "description": "Submit lots."},
            {"name": "Jobs", "description": "Follow, read and cancel batch jobs."},
            {"name": "Webhooks", "description": "The notification sent when a job ends, and its delivery records."},
            {"name": "Operations", "description": "Health, metrics and this document."},
        ],
        "paths": all_paths(s),
        "webhooks": webhooks(s),
        "components": {
            "schemas": all_schemas(s),
            "responses": shared_responses(s),
            "parameters": parameters(),
            "headers": headers(),
            "securitySchemes": security_schemes(),
        },
    }, s)


def document() -> dict[str, Any]:
    """The document of the running app, built once per app."""
    cached = current_app.extensions.get("genservice_openapi")
    if cached is None:
        cached = build_document(current_app.extensions["genservice"].settings)
        current_app.extensions["genservice_openapi"] = cached
    return cached


@policy(signature=Signature.NONE, limit=Limit.NONE)
def serve_document():
    return jsonify(document())


def init_app(app: Flask) -> None:
    app.add_url_rule(DOCUMENT_PATH, "openapi", serve_document, methods=["GET"])
