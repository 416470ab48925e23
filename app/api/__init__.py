"""The JSON API under /api/v1: one blueprint, one module per group of routes."""
from __future__ import annotations

import json

from flask import Blueprint, Flask, current_app, g, request

from services.errors import ServiceError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def runtime():
    return current_app.extensions["genservice"]


def read_json_object() -> dict:
    """The body as a JSON object, or 400 INVALID_JSON; parsed once per request."""
    if "json_body" in g:
        return g.json_body
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ServiceError(400, "INVALID_JSON", "Request body must be valid JSON", error="Invalid request format") from None
    if not isinstance(body, dict):
        raise ServiceError(400, "INVALID_JSON", "Request body must be a JSON object", error="Invalid request format")
    g.json_body = body
    return body


def init_app(app: Flask) -> None:
    from app.api import deliveries, estimate, generate, jobs  # noqa: F401  (routes register on import)

    app.register_blueprint(bp)
