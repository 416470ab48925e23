"""The job dashboard: jobs with live progress and one page per job, behind an ADMIN_TOKEN login.

Off (404) unless ADMIN_TOKEN is set. Signing in stores a fingerprint of the token in Flask's
signed session cookie, so changing ADMIN_TOKEN signs everyone out; the login and logout forms
carry a CSRF token kept in the same cookie. Data comes from services.dashboard. Its routes declare
no request signature (``Signature.NONE``): the sign-in above guards them; sign-in attempts have
their own rate limit (``Limit.LOGIN``).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from flask import (Blueprint, Flask, abort, current_app, jsonify, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup

from app.errors import error_response
from app.policies import Limit, Signature, enforce, policy
from services import dashboard as views
from services.sanitize import sanitize_html

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

PUBLIC_ENDPOINTS = frozenset({"dashboard.login", "dashboard.login_submit"})
SESSION_LIFETIME = timedelta(hours=12)


class SessionInterface(SecureCookieSessionInterface):
    """Marks the cookie Secure whenever the request came over HTTPS (ProxyFix sets the scheme)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


# ---- session and tokens --------------------------------------------------------------------------

def admin_token() -> str | None:
    return current_app.extensions["genservice"].settings.admin_token


def fingerprint(token: str) -> str:
    """What the session keeps instead of the token: keyed, so a copied cookie reveals nothing to guess it from."""
    key = str(current_app.secret_key).encode()
    return hmac.new(key, b"genservice-dashboard\0" + token.encode(), hashlib.sha256).hexdigest()


def same(given: object, expected: str) -> bool:
    """Constant-time comparison that also accepts junk input (None, non-strings)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def signed_in() -> bool:
    token = admin_token()
    return bool(token) and same(session.get("admin"), fingerprint(token))


def csrf_token() -> str:
    if not isinstance(session.get("csrf"), str):
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_valid() -> bool:
    expected = session.get("csrf")
    return isinstance(expected, str) and same(request.form.get("csrf_token"), expected)


def safe_next(target: str | None) -> str:
    """Only a path inside the dashboard may follow a login; anything else goes to the job list."""
    inside = target == "/dashboard" or (target or "").startswith(("/dashboard/", "/dashboard?"))
    if inside and "//" not in target and "\\" not in target:
        return target
    return url_for("dashboard.index")


# ---- guards and pages -----------------------------------------------------------------------

@bp.before_request
def require_login():
    if not admin_token():
        abort(404)
    if request.endpoint in PUBLIC_ENDPOINTS or signed_in():
        return None
    if request.path.startswith("/dashboard/api/"):
        return error_response(401, "LOGIN_REQUIRED", "Sign in to the dashboard first")
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def login_page(message: str | None = None, status: int = 200):
    return render_template("login.html", error=message, next=safe_next(request.values.get("next")),
                           csrf_token=csrf_token(), active="dashboard"), status


# the sign-in (require_login) guards every page, not a request signature
PAGE = policy(signature=Signature.NONE, limit=Limit.NONE)


@bp.get("/login")
@PAGE
def login():
    if signed_in():
        return redirect(safe_next(request.args.get("next")))
    return login_page()


@bp.post("/login")
@policy(signature=Signature.NONE, limit=Limit.LOGIN)
def login_submit():
    if not csrf_valid():
        return login_page("The form had expired; please sign in again.", 400)
    if not same(request.form.get("token"), admin_token()):
        log.warning("dashboard sign-in refused for %s", request.remote_addr)
        return login_page("That token is not valid.", 401)
    session.clear()
    session.permanent = True
    session["admin"] = fingerprint(admin_token())
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(safe_next(request.form.get("next")))


@bp.errorhandler(429)
def too_many_attempts(_error):
    return login_page("Too many sign-in attempts; wait a minute and try again.", 429)


@bp.post("/logout")
@PAGE
def logout():
    if not csrf_valid():
        abort(400)
    session.clear()
    return redirect(url_for("dashboard.login"))


def db():
    return current_app.extensions["genservice"].db


@bp.get("/")
@bp.get("")
@PAGE
def index():
    data = views.jobs_overview(db(), request.args.get("page", 1), request.args.get("status"))
    return render_template("dashboard.html", data=data, statuses=views.JOB_STATUSES, csrf_token=csrf_token(),
                           active="dashboard")


@bp.get("/clients")
@PAGE
def clients_page():
    data = views.clients_overview(db(), current_app.extensions["genservice"].settings)
    return render_template("dashboard_clients.html", data=data, csrf_token=csrf_token(), active="clients")


@bp.get("/api/clients")
@PAGE
def api_clients():
    return jsonify(views.clients_overview(db(), current_app.extensions["genservice"].settings))


@bp.get("/jobs/<job_id>")
@PAGE
def job_page(job_id: str):
    job = views.job_detail(db(), job_id)
    if job is None:
        abort(404)
    lots = views.lots_page(db(), job_id, request.args.get("page", 1), request.args.get("lots", "all"))
    return render_template("dashboard_job.html", job=job, lots=lots, filters=views.LOT_FILTERS,
                           csrf_token=csrf_token(), active="dashboard")


@bp.get("/api/jobs")
@PAGE
def api_jobs():
    return jsonify(views.jobs_overview(db(), request.args.get("page", 1), request.args.get("status")))


@bp.get("/api/jobs/<job_id>")
@PAGE
def api_job(job_id: str):
    job = views.job_detail(db(), job_id)
    if job is None:
        return error_response(404, "JOB_NOT_FOUND", f"Job {job_id} not found")
    return jsonify(job)


# ---- wiring ------------------------------------------------------------------------------------

def clean_html(html: str | None) -> Markup:
    """Descriptions are sanitized when stored; they are sanitized again here before being trusted."""
    return Markup(sanitize_html(html))


def _configure_sessions(app: Flask) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48)
        log.warning("SESSION_SECRET is not set: dashboard sessions are signed with a random per-process key, so "
                    "they end when the process restarts and are not shared between processes")
    app.config.update(SESSION_COOKIE_NAME="genservice_dashboard", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
    app.session_interface = SessionInterface()


def init_app(app: Flask) -> None:
    """Register the dashboard; call after limits.init_app, which enforces the policies its routes declare."""
    enabled = bool(app.extensions["genservice"].settings.admin_token)
    app.register_blueprint(bp)
    enforce(app)
    app.add_template_filter(clean_html, "clean_html")
    app.context_processor(lambda: {"dashboard_enabled": enabled})
    if enabled:
        _configure_sessions(app)
