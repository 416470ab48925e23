"""The JSON API under /api/v1: one blueprint, one module per group of routes."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, request

from app.jsonbody import load_object
from app.schemas import batch_size_exceeded
from services.errors import ServiceError

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def runtime():
    return current_app.extensions["genservice"]


def read_json_object() -> dict:
    """The body as a JSON object, or its 4xx; parsed once per request (the rate limiter asks first).

    The parse is bounded (app/jsonbody.py): ``lots`` is held to MAX_BATCH_SIZE (413; counting stops at
    MAX_BATCH_SIZE + 1 when the body is large enough to matter), as is any other top-level array (400),
    since none of this work can be refused for its signature yet.
    A refusal is remembered as well as a result, so the view does not parse the body again.
    """
    if "json_body" in g:
        if isinstance(g.json_body, ServiceError):
            raise g.json_body
        return g.json_body
    limit = runtime().settings.max_batch_size
    try:
        body = load_object(request.get_data(cache=True), array_limits={"lots": limit}, default_array_limit=limit,
                           too_many={"lots": lambda _key, most, counted: batch_size_exceeded(counted, most)})
    except ServiceError as exc:
        g.json_body = exc
        raise
    g.json_body = body
    return body


def init_app(app: Flask) -> None:
    from app.api import deliveries, estimate, generate, jobs  # noqa: F401  (routes register on import)

    app.register_blueprint(bp)
