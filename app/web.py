"""HTML pages: the home page (what the service does, live health) and the API docs."""
from __future__ import annotations

import json
from itertools import groupby

from flask import Blueprint, Flask, render_template, request

from app import openapi
from app.config import VERSION
from app.openapi.view import operations, resolve, schema_fields

bp = Blueprint("web", __name__)


@bp.get("/")
def home():
    return render_template("home.html", version=VERSION)


@bp.get("/docs")
def docs():
    doc = openapi.document()
    ops = operations(doc)
    groups = [(tag, list(items)) for tag, items in groupby(sorted(ops, key=lambda op: op["tag"] == "Operations"),
                                                          key=lambda op: op["tag"])]
    error = resolve(doc, {"$ref": "#/components/responses/InvalidSignature"})
    example = next(iter(error["content"]["application/json"]["examples"].values()))["value"]
    return render_template("docs.html", info=doc["info"], groups=groups, webhook_ops=operations(doc, "webhooks"),
                           lot_fields=schema_fields(doc, "LotInput"), base_url=request.host_url.rstrip("/"),
                           error_example=json.dumps(example, indent=2))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    openapi.init_app(app)

    @app.after_request
    def security_headers(response):
        if response.mimetype == "text/html":
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                        "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        return response
