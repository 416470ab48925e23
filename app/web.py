"""HTML pages: the home page (what the service does, live health) and the API docs."""
from __future__ import annotations

from flask import Blueprint, Flask, render_template, request

from app import openapi
from app.config import VERSION
from app.openapi.view import docs_page
from app.policies import Limit, Signature, policy

bp = Blueprint("web", __name__)


@bp.get("/")
@policy(signature=Signature.NONE, limit=Limit.NONE)
def home():
    return render_template("home.html", version=VERSION)


@bp.get("/docs")
@policy(signature=Signature.NONE, limit=Limit.NONE)
def docs():
    return render_template("docs.html", **docs_page(openapi.document()), base_url=request.host_url.rstrip("/"))


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
