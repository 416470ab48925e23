"""The OpenAPI document: valid 3.1, in step with the app's routes, and true to what the API answers."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from datetime import datetime

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi

from app.openapi import build_document
from app.openapi.view import operations
from app.config import Settings
from services import signing
from tests.support.client import TEST_KEY, Api, header_signature, lot

IGNORED_METHODS = {"HEAD", "OPTIONS"}
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


def documented_operations(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")}


def served_operations(app) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI-style path) for every rule under /api/v1, plus /health and /metrics."""
    served = set()
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/v1/") or rule.rule in ("/health", "/metrics")):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served.update((method, path) for method in rule.methods - IGNORED_METHODS)
    return served


def schema_validator(doc: dict, schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": doc["components"]}, format_checker=FORMATS)


def documented_response(doc: dict, method: str, path: str, status: int) -> dict:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, which the document does not list"
    answer = responses[str(status)]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer


def assert_documented(doc: dict, method: str, path: str, response: requests.Response) -> None:
    """The status is listed for the operation and the JSON body fits its schema."""
    answer = documented_response(doc, method, path, response.status_code)
    media = response.headers["Content-Type"].split(";")[0]
    assert media in answer.get("content", {}), f"{method} {path} {response.status_code}: undocumented {media}"
    if media == "application/json":
        errors = sorted(schema_validator(doc, answer["content"][media]["schema"]).iter_errors(response.json()),
                        key=str)
        assert not errors, f"{method} {path} {response.status_code}: {errors[0].message} at {list(errors[0].path)}"
    for header in answer.get("headers", {}):
        assert header in response.headers, f"{method} {path} {response.status_code} lacks header {header}"


@pytest.fixture(scope="module")
def served_doc(module_live) -> dict:
    answer = requests.get(f"{module_live.url}/api/v1/openapi.json", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    return answer.json()


# ---- the document itself ----------------------------------------------------------------------

def test_document_is_served_without_a_signature_and_is_valid_openapi_3_1(served_doc):
    assert served_doc["openapi"].startswith("3.1")
    validate_openapi(served_doc)


def test_every_route_of_the_app_is_documented(module_live, served_doc):
    missing = served_operations(module_live.app) - documented_operations(served_doc)
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"


def test_document_lists_no_route_the_app_does_not_serve(module_live, served_doc):
    extra = documented_operations(served_doc) - served_operations(module_live.app)
    assert not extra, f"documented but not served: {sorted(extra)}"


def test_route_comparison_notices_a_new_undocumented_route(make_app):
    app = make_app(WORKER_ENABLED="false")
    app.add_url_rule("/api/v1/batch-jobs/<job_id>/retry", "retry_probe", lambda job_id: "", methods=["POST"])
    doc = build_document(app.extensions["genservice"].settings)
    assert served_operations(app) - documented_operations(doc) == {("POST", "/api/v1/batch-jobs/{job_id}/retry")}


def test_path_parameters_are_declared_for_every_templated_path(served_doc):
    for path, item in served_doc["paths"].items():
        expected = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = set()
            for param in op.get("parameters", []):
                if "$ref" in param:
                    param = served_doc["components"]["parameters"][param["$ref"].rsplit("/", 1)[1]]
                if param["in"] == "path":
                    declared.add(param["name"])
            assert declared == expected, f"{method.upper()} {path}: path parameters {declared} != {expected}"


def test_every_example_fits_its_schema(served_doc):
    checked = 0
    for section in ("paths", "webhooks"):
        for path, item in served_doc[section].items():
            for method, op in item.items():
                bodies = [op["requestBody"]] if "requestBody" in op else []
                for answer in op["responses"].values():
                    if "$ref" in answer:
                        answer = served_doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
                    bodies.append(answer)
                for body in bodies:
                    media = body.get("content", {}).get("application/json")
                    if not media:
                        continue
                    validator = schema_validator(served_doc, media["schema"])
                    for name, example in media.get("examples", {}).items():
                        errors = list(validator.iter_errors(example["value"]))
                        assert not errors, f"{method} {path} example {name}: {errors[0].message}"
                        checked += 1
    assert checked >= 30


def test_signature_schema_accepts_the_prefixed_and_the_bare_form(served_doc):
    validator = schema_validator(served_doc, {"$ref": "#/components/schemas/Signature"})
    digest = "0123456789abcdef" * 4
    assert validator.is_valid(f"sha256={digest}") and validator.is_valid(digest)
    assert not validator.is_valid(f"md5={digest}") and not validator.is_valid("sha256=xyz")
    generate = served_doc["paths"]["/api/v1/generate-descriptions"]["post"]
    assert {"signature": []} in generate["security"] and {} in generate["security"]
    assert served_doc["components"]["securitySchemes"]["signature"] == {
        **served_doc["components"]["securitySchemes"]["signature"], "type": "apiKey", "in": "header",
        "name": "X-Signature"}


def test_every_error_response_uses_the_error_body(served_doc):
    for path, item in served_doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if not status.startswith(("4", "5")) or path == "/health":
                    continue
                if "$ref" in answer:
                    answer = served_doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
                schema = answer["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[1]
                resolved = served_doc["components"]["schemas"][name]
                assert name == "Error" or {"$ref": "#/components/schemas/Error"} in resolved.get("allOf", []), \
                    f"{method.upper()} {path} {status} uses {name}"
    required = served_doc["components"]["schemas"]["Error"]["required"]
    assert required == ["error", "message", "code"]


def test_limits_in_the_document_follow_the_settings():
    settings = Settings(testing=True, max_batch_size=7, max_languages=3, max_images_per_lot=4, max_sync_images=2)
    schemas = build_document(settings)["components"]["schemas"]
    assert schemas["GenerateRequest"]["properties"]["lots"]["maxItems"] == 7
    assert schemas["GenerateRequest"]["properties"]["languages"]["maxItems"] == 3
    assert schemas["LotInput"]["properties"]["images"]["maxItems"] == 4


def test_operations_view_lists_each_operation_once_with_its_examples():
    doc = build_document(Settings(testing=True))
    ops = operations(doc)
    assert len(ops) == len(documented_operations(doc)) == len({(op["method"], op["path"]) for op in ops})
    generate = next(op for op in ops if op["path"] == "/api/v1/generate-descriptions")
    assert [ex["name"] for ex in generate["request_examples"]] == ["single lot", "batch"]
    assert [r["status"] for r in generate["responses"]][:2] == ["200", "201"]


# ---- what the API really answers -----------------------------------------------------------------

def test_error_answers_match_the_document(module_live, served_doc, image_server):
    api = Api(module_live.url)
    base = module_live.url
    generate = "/api/v1/generate-descriptions"
    cases = [
        ("POST", generate, requests.post(f"{base}{generate}", data=b"{not json", timeout=10), 400),
        ("POST", generate, requests.post(f"{base}{generate}", json={"lots": [lot("x", ["http://a/b.jpg"])]},
                                         timeout=10), 401),
        ("POST", generate, api.generate([lot("x", ["http://a/b.jpg"])], key="another-key-" * 3), 403),
        ("POST", generate, api.generate([lot("d", [image_server.url("/img/1.jpg")])] * 2), 409),
        ("POST", generate, api.generate([lot("u", ["ftp://example.test/a.jpg"])]), 422),
        ("POST", generate, api.generate([lot("l", [image_server.url("/img/1.jpg")])], languages=["xx"]), 422),
        ("GET", "/api/v1/batch-status/{job_id}", api.status("no-such-job"), 404),
        ("GET", "/api/v1/batch-status/{job_id}", api.get("/api/v1/batch-status/no-such-job"), 401),
        ("GET", "/api/v1/batch-jobs", api.get("/api/v1/batch-jobs?limit=0", sign="limit=0"), 400),
        ("POST", "/api/v1/batch-jobs/{job_id}/cancel", api.cancel("no-such-job"), 404),
    ]
    for method, path, answer, status in cases:
        assert answer.status_code == status, (path, answer.text)
        assert_documented(served_doc, method, path, answer)


def test_sync_health_metrics_and_image_checks_match_the_document(module_live, served_doc, image_server):
    api = Api(module_live.url)
    described = api.generate([lot("sync-1", [image_server.url("/img/s1.jpg"), image_server.url("/img/s2.jpg")])],
                             languages=["en", "fr"])
    assert described.status_code == 200, described.text
    assert_documented(served_doc, "POST", "/api/v1/generate-descriptions", described)
    body = json.dumps({"urls": [image_server.url("/img/v.jpg"), image_server.url("/missing/v.jpg")]}).encode()
    checked = requests.post(f"{module_live.url}/api/v1/test-image-validation", data=body, timeout=30,
                            headers={"X-Signature": header_signature(body), "Content-Type": "application/json"})
    assert checked.status_code == 200, checked.text
    assert_documented(served_doc, "POST", "/api/v1/test-image-validation", checked)
    assert_documented(served_doc, "GET", "/health", requests.get(f"{module_live.url}/health", timeout=10))
    assert_documented(served_doc, "GET", "/metrics", requests.get(f"{module_live.url}/metrics", timeout=10))
    assert_documented(served_doc, "GET", "/api/v1/openapi.json",
                      requests.get(f"{module_live.url}/api/v1/openapi.json", timeout=10))


def test_job_lifecycle_answers_match_the_document(make_live, sandbox, image_server, receiver):
    sandbox.configure(batch_in_progress_seconds=30)
    live = make_live(WEBHOOK_RETRY_BASE_SECONDS=60)
    api = Api(live.url)
    doc = requests.get(f"{live.url}/api/v1/openapi.json", timeout=10).json()
    unreachable = "http://127.0.0.1:9/hook"
    lots = [lot(f"j-{i}", [image_server.url(f"/img/j{i}.jpg")], webhook=unreachable) for i in range(2)]

    accepted = api.generate(lots, languages=["en", "de"])
    assert accepted.status_code == 201, accepted.text
    assert_documented(doc, "POST", "/api/v1/generate-descriptions", accepted)
    running = accepted.json()["job_id"]
    api.wait_status(running, statuses=("processing",))
    assert_documented(doc, "GET", "/api/v1/batch-status/{job_id}", api.status(running))
    for path in ("/api/v1/batch-results/{job_id}", "/api/v1/batch-results/{job_id}/download"):
        answer = api.get(path.format(job_id=running), sign=running)
        assert answer.status_code == 202
        assert_documented(doc, "GET", path, answer)
    cancelled = api.cancel(running)
    assert cancelled.status_code == 200
    assert_documented(doc, "POST", "/api/v1/batch-jobs/{job_id}/cancel", cancelled)
    again = api.cancel(running)
    assert again.status_code == 400
    assert_documented(doc, "POST", "/api/v1/batch-jobs/{job_id}/cancel", again)
    ended = api.results(running)
    assert ended.status_code == 409
    assert_documented(doc, "GET", "/api/v1/batch-results/{job_id}", ended)
    pending = deliveries(api, running)[0]
    assert pending["status"] == "pending"
    conflict = redeliver(api, pending["id"])
    assert conflict.status_code == 409
    assert_documented(doc, "POST", REDELIVER, conflict)

    sandbox.configure(batch_in_progress_seconds=0)
    finished = api.generate([lot(f"k-{i}", [image_server.url(f"/img/k{i}.jpg")], webhook=receiver.url())
                             for i in range(2)]).json()["job_id"]
    assert api.wait_status(finished)["status"] == "completed"
    for path in ("/api/v1/batch-status/{job_id}", "/api/v1/batch-results/{job_id}",
                 "/api/v1/batch-results/{job_id}/download"):
        answer = api.get(path.format(job_id=finished), sign=finished)
        assert answer.status_code == 200
        assert_documented(doc, "GET", path, answer)
    query = "limit=5"
    listed = api.get(f"/api/v1/batch-jobs?{query}", sign=query)
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 2
    assert_documented(doc, "GET", "/api/v1/batch-jobs", listed)

    assert_webhook_documented(doc, receiver.wait_for(1)[0])
    deadline = time.monotonic() + 20
    while deliveries(api, finished)[0]["status"] != "delivered":
        assert time.monotonic() < deadline, "the webhook was not recorded as delivered"
        time.sleep(0.1)
    listing = api.get(f"/api/v1/batch-jobs/{finished}/webhook-deliveries", sign=finished)
    assert_documented(doc, "GET", DELIVERIES, listing)
    queued = redeliver(api, listing.json()["deliveries"][0]["id"])
    assert queued.status_code == 202
    assert_documented(doc, "POST", REDELIVER, queued)


def assert_webhook_documented(doc: dict, received) -> None:
    operation = doc["webhooks"]["batchJobFinished"]["post"]
    for header in operation["parameters"]:
        assert header["name"].lower() in received.headers, f"webhook lacks {header['name']}"
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    errors = list(schema_validator(doc, schema).iter_errors(received.json()))
    assert not errors, f"webhook payload: {errors[0].message} at {list(errors[0].path)}"


DELIVERIES = "/api/v1/batch-jobs/{job_id}/webhook-deliveries"
REDELIVER = "/api/v1/webhook-deliveries/{delivery_id}/redeliver"


def deliveries(api: Api, job_id: str) -> list[dict]:
    answer = api.get(f"/api/v1/batch-jobs/{job_id}/webhook-deliveries", sign=job_id)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


def redeliver(api: Api, delivery_id) -> requests.Response:
    return api.http.post(f"{api.base}/api/v1/webhook-deliveries/{delivery_id}/redeliver", timeout=10,
                         headers={"X-Signature": header_signature(str(delivery_id))})


def test_delivery_route_errors_match_the_document(module_live, served_doc):
    api = Api(module_live.url)
    cases = [
        (DELIVERIES, api.get("/api/v1/batch-jobs/no-such-job/webhook-deliveries", sign="no-such-job"), 404),
        (DELIVERIES, api.get("/api/v1/batch-jobs/x/webhook-deliveries?limit=0", sign="x"), 400),
        (DELIVERIES, api.get("/api/v1/batch-jobs/x/webhook-deliveries"), 401),
        (REDELIVER, redeliver(api, "999999"), 404),
    ]
    for path, answer, status in cases:
        assert answer.status_code == status, (path, answer.text)
        assert_documented(served_doc, "POST" if path == REDELIVER else "GET", path, answer)


def test_an_undocumented_status_fails_the_conformance_check(served_doc, module_live):
    answer = requests.get(f"{module_live.url}/health", timeout=10)
    answer.status_code = 418
    with pytest.raises(AssertionError, match="does not list"):
        assert_documented(served_doc, "GET", "/health", answer)


# ---- the docs page ------------------------------------------------------------------------------

def recipe(page: str, element_id: str) -> str:
    match = re.search(rf'<pre id="{element_id}"><code>(.*?)</code></pre>', page, re.S)
    assert match, f"no {element_id} on the docs page"
    return html.unescape(match.group(1))


SIGNED_LOTS = [{"lot_id": "Ж-1", "images": [{"url": "http://127.0.0.1/a.jpg"}], "additional_info": "Škoda — 🚗 «dent»",
                "webhook": None, "extra": {"10": 1, "2": [True, None, "x\u2028y\u007f"], "b": {"z": 1, "a": 2}}}]


@pytest.fixture(scope="module")
def docs_page(module_live) -> str:
    answer = requests.get(f"{module_live.url}/docs", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    return answer.text


def test_docs_page_shows_every_operation_with_its_responses(docs_page, served_doc):
    shown = set(re.findall(r'<section class="card op" id="op-\w+" data-method="(\w+)" data-path="([^"]+)"', docs_page))
    assert shown == documented_operations(served_doc) | {("POST", "batchJobFinished")}
    for path, item in served_doc["paths"].items():
        for method, op in item.items():
            section = docs_page.split(f'id="op-{op["operationId"]}"', 1)[1].split("</section>", 1)[0]
            statuses = re.findall(r'<tr class="response" data-status="(\d+)">', section)
            assert statuses == sorted(op["responses"]), f"{method} {path}"


def test_docs_page_loads_nothing_from_elsewhere(docs_page):
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', docs_page)
    assert "node_modules" not in docs_page and "cdn" not in docs_page.lower()


def test_docs_python_recipe_signs_what_the_service_verifies(docs_page):
    namespace: dict = {}
    exec(recipe(docs_page, "recipe-python"), namespace)
    key = "k" * 40
    assert namespace["sign_lots"](SIGNED_LOTS, key) == signing.sign(key, signing.canonical_lots(SIGNED_LOTS))
    assert namespace["sign"]("job-1", key) == signing.sign(key, "job-1")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_docs_node_recipe_signs_what_the_service_verifies(docs_page, tmp_path):
    module = tmp_path / "sign.js"
    module.write_text(recipe(docs_page, "recipe-node"))
    script = ("const {signLots, sign} = require(process.argv[1]);"
              "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify([signLots(input.lots, input.key), sign(input.job, input.key)]));")
    key = "k" * 40
    run = subprocess.run(["node", "-e", script, str(module)], input=json.dumps(
        {"lots": SIGNED_LOTS, "key": key, "job": "job-1"}), capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    lots_signature, job_signature = json.loads(run.stdout)
    assert lots_signature == signing.sign(key, signing.canonical_lots(SIGNED_LOTS))
    assert job_signature == signing.sign(key, "job-1")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_signed_request_is_accepted_by_the_service(docs_page, module_live, image_server, tmp_path):
    module = tmp_path / "sign.js"
    module.write_text(recipe(docs_page, "recipe-node"))
    lots = [{"lot_id": "node-ü-1", "additional_info": "Citroën C3 — hail", "images": [
        {"url": image_server.url("/img/n1.jpg")}]}]
    run = subprocess.run(["node", "-e", "const {signLots} = require(process.argv[1]);"
                          "console.log(signLots(JSON.parse(process.argv[2]), process.argv[3]));",
                          str(module), json.dumps(lots, ensure_ascii=False), TEST_KEY],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    body = {"signature": run.stdout.strip(), "languages": ["en"], "lots": lots}
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", timeout=60,
                           data=json.dumps(body, ensure_ascii=False).encode(),
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


def test_home_page_links_to_the_docs(module_live):
    page = requests.get(f"{module_live.url}/", timeout=10).text
    assert 'href="/docs"' in page and 'href="/api/v1/openapi.json"' in page


# ---- GS2 in the document and on the docs page ----------------------------------------------------

def test_gs2_is_a_security_scheme_beside_x_signature_on_every_signed_operation(served_doc):
    schemes = served_doc["components"]["securitySchemes"]
    assert schemes["gs2"]["type"] == "http" and schemes["gs2"]["scheme"] == "GS2-HMAC-SHA256"
    assert "SIGNATURE_REPLAYED" in schemes["gs2"]["description"] and "300" in schemes["gs2"]["description"]
    assert schemes["signature"]["name"] == "X-Signature"
    signed = 0
    for path, item in {**served_doc["paths"]}.items():
        for method, op in item.items():
            security = op.get("security")
            if not security or not any(security):
                continue
            signed += 1
            assert {"gs2": []} in security and {"signature": []} in security, f"{method} {path}"
    assert signed >= 9


def test_docs_page_names_the_authorization_header_on_every_signed_operation(docs_page, served_doc):
    for path, item in served_doc["paths"].items():
        for method, op in item.items():
            section = docs_page.split(f'id="op-{op["operationId"]}"', 1)[1].split("</section>", 1)[0]
            if any(op.get("security") or []):
                assert "Authorization: GS2-HMAC-SHA256" in section and "X-Signature" in section, f"{method} {path}"
            else:
                assert "GS2-HMAC-SHA256" not in section, f"{method} {path} is not signed"


GS2_CASES = [("GET", "/api/v1/batch-status/job-1", "", b""),
             ("POST", "/api/v1/generate-descriptions", "", json.dumps(SIGNED_LOTS, ensure_ascii=False).encode()),
             ("GET", "/api/v1/batch-jobs", "status=completed&created_after=2026-01-01T00%3A00%3A00Z", b"")]


def test_docs_python_gs2_recipe_signs_what_the_service_verifies(docs_page):
    namespace: dict = {}
    exec(recipe(docs_page, "recipe-gs2-python"), namespace)
    for method, path, query, body in GS2_CASES:
        made = namespace["gs2_authorization"]("gsk_" + "s" * 40, "auction-a", "key_1", method, path, query, body,
                                              timestamp=1796040000, nonce="n" * 24)
        assert made == signing.gs2_authorization("gsk_" + "s" * 40, "auction-a", "key_1", method, path, query, body,
                                                 timestamp=1796040000, nonce="n" * 24)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_docs_node_gs2_recipe_signs_what_the_service_verifies(docs_page, tmp_path):
    module = tmp_path / "gs2.js"
    module.write_text(recipe(docs_page, "recipe-gs2-node"))
    script = ("const {gs2Authorization} = require(process.argv[1]);"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(cases.map(([m, p, q, b]) => gs2Authorization("
              "'gsk_secret', 'auction-a', 'key_1', m, p, q, Buffer.from(b, 'base64'), 1796040000, 'n'.repeat(24)))));")
    import base64
    cases = [[m, p, q, base64.b64encode(b).decode()] for m, p, q, b in GS2_CASES]
    run = subprocess.run(["node", "-e", script, str(module)], input=json.dumps(cases), capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [signing.gs2_authorization("gsk_secret", "auction-a", "key_1", m, p, q, b,
                                                                timestamp=1796040000, nonce="n" * 24)
                                      for m, p, q, b in GS2_CASES]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_docs_shell_gs2_recipe_is_accepted_by_the_service(docs_page, module_live):
    from genclient import implicit_key_id

    script = recipe(docs_page, "recipe-gs2-shell")
    env = {"PATH": "/usr/bin:/bin", "SECRET": TEST_KEY, "CLIENT_ID": "default", "KEY_ID": implicit_key_id(TEST_KEY)}
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    # signed correctly and for this client: the made-up job is simply not found (a bad signature would be 403)
    assert json.loads(run.stdout)["code"] == "JOB_NOT_FOUND", run.stdout
    run = subprocess.run(["bash", "-c", script], env={**env, "SECRET": "another-secret-" * 3}, capture_output=True,
                         text=True, timeout=30)
    assert json.loads(run.stdout)["code"] == "INVALID_SIGNATURE"
