"""Bad input always gets a JSON error with the spec's status code, never HTML and never a 500."""
from __future__ import annotations

import pytest
import requests

from tests.support.client import Api, body_signature, header_signature, lot


def post_raw(module_live, data: bytes, content_type: str = "application/json"):
    return requests.post(f"{module_live.url}/api/v1/generate-descriptions", data=data,
                         headers={"Content-Type": content_type}, timeout=30)


def signed(lots, **fields):
    return {"signature": body_signature(lots), "version": "1.0.0", "languages": ["en"], "lots": lots, **fields}


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null"])
def test_malformed_body_is_400_invalid_json(module_live, data):
    answer = post_raw(module_live, data)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["code"] == "INVALID_JSON"


def test_missing_lots_is_400(module_live):
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json={"languages": ["en"]}, timeout=30)
    assert answer.status_code == 400 and answer.json()["code"] == "MISSING_FIELD"


URL = "http://127.0.0.1:9/img.jpg"


@pytest.mark.parametrize("mutate,status,code", [
    (lambda l: l.pop("lot_id"), 400, "MISSING_FIELD"),
    (lambda l: l.update(lot_id=""), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(lot_id="x" * 129), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(lot_id=42), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(images=[]), 400, "VALIDATION_ERROR"),
    (lambda l: l.pop("images"), 400, "MISSING_FIELD"),
    (lambda l: l.update(images=[{"url": URL}] * 21), 422, "TOO_MANY_IMAGES"),
    (lambda l: l.update(images=[{"url": "ftp://example.com/car.jpg"}]), 422, "INVALID_IMAGE_URLS"),
    (lambda l: l.update(images=[{"url": "javascript:alert(1)"}]), 422, "INVALID_IMAGE_URLS"),
    (lambda l: l.update(images=[{"nourl": 1}]), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(additional_info=["a"]), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(webhook="ftp://x/y"), 422, "INVALID_WEBHOOK_URL"),
])
def test_lot_field_errors(module_live, mutate, status, code):
    item = lot("v-1", [URL])
    mutate(item)
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed([item]), timeout=30)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and body["error"] and body["message"]


def test_invalid_urls_are_listed(module_live):
    item = lot("v-2", [URL, "ftp://example.com/car.jpg", "not a url"])
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed([item]), timeout=30)
    assert answer.status_code == 422
    assert answer.json()["details"]["invalid_urls"] == ["ftp://example.com/car.jpg", "not a url"]


@pytest.mark.parametrize("languages,status,code", [
    (["en", "xx"], 422, "UNSUPPORTED_LANGUAGE"),
    (["english"], 422, "UNSUPPORTED_LANGUAGE"),
    ([], 400, "VALIDATION_ERROR"),
    ("en", 400, "VALIDATION_ERROR"),
    (["en", "ru", "de", "fr", "es", "it", "pt", "pl", "nl", "sv", "fi"], 400, "TOO_MANY_LANGUAGES"),
])
def test_language_errors(module_live, languages, status, code):
    item = lot("v-3", [URL])
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed([item], languages=languages),
                           timeout=30)
    assert answer.status_code == status and answer.json()["code"] == code


def test_duplicate_lot_id_is_409(module_live):
    lots = [lot("dup", [URL]), lot("dup", [URL])]
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed(lots), timeout=30)
    assert answer.status_code == 409
    assert answer.json()["details"]["duplicate_lot_ids"] == ["dup"]


def test_signature_is_checked_before_validation(module_live):
    lots = [lot("v-4", ["ftp://bad"])]
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions",
                           json={"signature": "sha256=" + "0" * 64, "lots": lots}, timeout=30)
    assert answer.status_code == 403


def test_body_over_limit_is_413_json(make_live):
    module_live = make_live(MAX_CONTENT_LENGTH=2048)
    answer = post_raw(module_live, b'{"lots": "' + b"x" * 4096 + b'"}')
    assert answer.status_code == 413
    assert answer.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_route_and_method_are_json(module_live):
    missing = requests.get(f"{module_live.url}/api/v1/nothing-here", timeout=30)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong = requests.get(f"{module_live.url}/api/v1/generate-descriptions", timeout=30)
    assert wrong.status_code == 405 and wrong.json()["code"] == "METHOD_NOT_ALLOWED"


def test_signature_in_header_is_accepted_for_generate(module_live, image_server):
    lots = [lot("v-5", [image_server.url("/img/a.jpg")])]
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json={"languages": ["en"], "lots": lots},
                           headers={"X-Signature": body_signature(lots)}, timeout=30)
    assert answer.status_code == 200, answer.text


def test_non_ascii_lots_verify_with_the_spec_recipe(module_live, image_server):
    lots = [lot("v-6", [image_server.url("/img/a.jpg")], info="BMW X5, передний бампер — вмятина")]
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed(lots), timeout=30)
    assert answer.status_code == 200, answer.text


def test_key_rotation_accepts_every_configured_key(make_live, image_server):
    old = "old-shared-key-0123456789-abcdefghijklmnop"
    module_live = make_live(SHARED_KEYS=old)
    answer = Api(module_live.url, key=old).generate([lot("v-7", [image_server.url("/img/a.jpg")])])
    assert answer.status_code == 200, answer.text


def test_image_validation_endpoint(module_live, image_server):
    urls = [image_server.url("/img/a.jpg"), image_server.url("/missing/b.jpg"), image_server.url("/html/c.jpg")]
    raw = requests.models.complexjson.dumps({"urls": urls}).encode()
    answer = requests.post(f"{module_live.url}/api/v1/test-image-validation", data=raw,
                           headers={"Content-Type": "application/json", "X-Signature": header_signature(raw)},
                           timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["valid_urls"] == urls[:1]
    assert body["unreachable_urls"] == urls[1:]
    assert body["threshold_met"] is False
    unsigned = requests.post(f"{module_live.url}/api/v1/test-image-validation", data=raw, timeout=30)
    assert unsigned.status_code == 401


def test_every_error_carries_a_request_id(module_live):
    answer = requests.get(f"{module_live.url}/api/v1/batch-status/x", headers={"X-Request-ID": "trace-42"}, timeout=30)
    assert answer.status_code == 401
    assert answer.headers["X-Request-ID"] == "trace-42"


@pytest.mark.parametrize("url,ok", [
    ("http://a/b", True), ("HTTPS://cdn.example.com/a.jpg?x=1#f", True), ("http://h:8080", True),
    ("http://[::1]/x", True), ("ftp://x/y", False), ("http:///x", False), ("http://a b/c", False),
    ("http://[::1/x", False), ("http://user@/x", False), ("http://:80/x", False), ("javascript:alert(1)", False),
    ("not a url", False), ("http://a/b\n", False), (42, False), ("http://a]b/", False),
])
def test_http_url_check(url, ok):
    from app.schemas import is_http_url

    assert is_http_url(url) is ok


@pytest.mark.parametrize("mutate,status,code", [
    (lambda l: l.update(additional_info="front\x00bumper"), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(additional_info="front \ud800 bumper"), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(lot_id="v\x00-7"), 400, "VALIDATION_ERROR"),
    (lambda l: l.update(images=[{"url": "http://127.0.0.1:9/a\x00.jpg"}]), 422, "INVALID_IMAGE_URLS"),
    (lambda l: l.update(images=[{"url": "http://127.0.0.1:9/\udc00.jpg"}]), 422, "INVALID_IMAGE_URLS"),
    (lambda l: l.update(webhook="http://127.0.0.1:9/\x00"), 422, "INVALID_WEBHOOK_URL"),
    (lambda l: l.update(webhook="http://127.0.0.1:9/\udfff"), 422, "INVALID_WEBHOOK_URL"),
])
def test_text_that_cannot_be_stored_is_refused_not_a_500(module_live, mutate, status, code):
    """A NUL character or an unpaired surrogate (JSON may spell both as escapes) in a batch used to reach
    PostgreSQL and answer 500; it is refused with the field named (and an URL echoed in the error keeps
    its surrogate as a JSON escape: it has no UTF-8 form)."""
    lots = [lot("v-7", [URL]), lot("v-8", [URL])]
    mutate(lots[1])
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=signed(lots), timeout=30)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code
    if status == 400:
        assert body["details"]["field"].startswith("lots[1].")
