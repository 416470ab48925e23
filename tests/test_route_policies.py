"""Every route declares its signature kind and rate limit, and the OpenAPI document agrees with them."""
from __future__ import annotations

import re

import pytest
import requests
from flask import Blueprint

from app import openapi, policies
from app.policies import Limit, Signature, policy

from tests.support.client import TEST_KEY, header_signature, lot

# routes for browsers, documented on their pages rather than in the API document
PAGE_BLUEPRINTS = ("web", "dashboard")
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def documented_operations(app) -> set[tuple[str, str]]:
    with app.app_context():
        paths = openapi.document()["paths"]
    return {(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
            for path, item in paths.items() for method in item}


def route_operations(app) -> dict[tuple[str, str], str]:
    """(path, method) -> endpoint, with Flask's <converter:name> written as <name>."""
    found = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"<\1>", rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            found[(path, method)] = rule.endpoint
    return found


def test_every_documented_route_declares_a_signature_and_a_limit(make_app):
    app = make_app(ADMIN_TOKEN="t" * 24)
    routes = route_operations(app)
    enforced = policies.enforced(app)
    documented = documented_operations(app)
    assert documented, "the document lists no routes"
    for operation in sorted(documented):
        assert operation in routes, f"{operation} is documented but no route serves it"
        endpoint = routes[operation]
        assert endpoint in enforced, f"{operation} ({endpoint}) has no declared policy"
        declared = enforced[endpoint]
        assert isinstance(declared.signature, Signature) and isinstance(declared.limit, Limit)


def test_every_api_route_is_in_the_document(make_app):
    app = make_app(ADMIN_TOKEN="t" * 24)
    documented = documented_operations(app)
    missing = [(operation, endpoint) for operation, endpoint in sorted(route_operations(app).items())
               if endpoint.split(".")[0] not in PAGE_BLUEPRINTS and endpoint != "static"
               and operation not in documented]
    assert missing == []


def test_every_registered_endpoint_is_enforced(make_app):
    """Including those registered after limits.init_app (the dashboard)."""
    for token in ("", "t" * 24):
        app = make_app(ADMIN_TOKEN=token)
        assert set(app.view_functions) == set(policies.enforced(app))


def test_the_document_says_what_each_route_declares(make_app):
    """Signed routes carry a security requirement (optional in the body for lots); limited ones a 429."""
    app = make_app()
    routes = route_operations(app)
    enforced = policies.enforced(app)
    with app.app_context():
        paths = openapi.document()["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            declared = enforced[routes[(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())]]
            where = f"{method.upper()} {path}"
            security = operation.get("security") or []
            assert any(security) == (declared.signature is not Signature.NONE), where
            assert ({} in security) == (declared.signature is Signature.LOTS), where
            assert ("429" in operation["responses"]) == (declared.limit is not Limit.NONE), where


def test_a_route_without_a_policy_stops_the_app(make_app):
    app = make_app()
    extra = Blueprint("extra", __name__)

    @extra.get("/undeclared")
    def undeclared():
        return "no policy"

    app.register_blueprint(extra)
    with pytest.raises(RuntimeError, match="extra.undeclared"):
        policies.enforce(app)


def test_a_signature_over_a_missing_path_variable_stops_the_app(make_app):
    app = make_app()
    extra = Blueprint("extra", __name__)

    @extra.get("/jobs-without-id")
    @policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
    def no_job_id():
        return "never served"

    app.register_blueprint(extra)
    with pytest.raises(RuntimeError, match="job_id"):
        policies.enforce(app)


def test_policy_takes_only_declared_kinds():
    with pytest.raises(TypeError):
        policy(signature="job_id", limit=Limit.POLLING)
    with pytest.raises(TypeError):
        policy(signature=Signature.NONE, limit=None)


def test_image_validation_is_limited_apart_from_generate(make_live, image_server):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_SYNC="3/minute")
    url = f"{live.url}/api/v1/test-image-validation"
    body = b'{"urls": ["%s"]}' % image_server.url("/img/a.jpg").encode()
    signed = {"Content-Type": "application/json", "X-Signature": header_signature(body)}
    assert requests.post(url, data=body, headers=signed, timeout=10).status_code == 200
    codes = [requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).status_code
             for _ in range(4)]
    assert codes == [401, 401, 401, 429]  # the address's failed checks have a count of their own
    # once they are used up, the address is refused before any signature is looked at, even a valid one
    refused = requests.post(url, data=body, headers=signed, timeout=10)
    assert refused.status_code == 429 and refused.headers["Content-Type"].startswith("application/json")
    assert refused.json()["code"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) > 0 and refused.headers["X-RateLimit-Remaining"] == "0"
    # one-lot generate requests keep their own RATE_LIMIT_SYNC budget
    lots = [lot("pol-1", ["ftp://not-an-image"])]
    assert requests.post(f"{live.url}/api/v1/generate-descriptions", timeout=10,
                         json={"signature": "sha256=" + "0" * 64, "lots": lots}).status_code == 403


def test_image_validation_is_not_limited_with_rate_limits_off(make_live):
    live = make_live(RATELIMIT_ENABLED="false", RATE_LIMIT_SYNC="1/minute")
    codes = [requests.post(f"{live.url}/api/v1/test-image-validation", json={"urls": []}, timeout=10).status_code
             for _ in range(3)]
    assert codes == [401, 401, 401]


def test_disabled_dashboard_does_not_count_sign_ins(make_app):
    """With no ADMIN_TOKEN the dashboard does not exist: every attempt is 404, never 429."""
    app = make_app(RATELIMIT_ENABLED="true", ADMIN_TOKEN="")
    client = app.test_client()
    codes = {client.post("/dashboard/login", data={"token": TEST_KEY}).status_code for _ in range(12)}
    assert codes == {404}


def test_enforcing_twice_wraps_each_view_once(make_app):
    app = make_app()
    views = dict(app.view_functions)
    policies.enforce(app)
    assert app.view_functions == views
