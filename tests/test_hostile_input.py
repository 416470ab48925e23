"""Hostile input without a key: every route of the OpenAPI document answers a 4xx JSON error (or its
normal answer), never a 5xx, and the log never carries a traceback.

Bodies: deep nesting (bare and padded past the container count), bytes that are not UTF-8, other
encodings, scalars, arrays, wrong types, huge strings, far too many lots. Headers: signatures that
are not ASCII, not hex, too short, too long, look-alike letters. Everything goes over real HTTP to a
live server on 127.0.0.1; nothing is signed with the key.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import re
from urllib.parse import urlsplit

import pytest

from app import create_app, logs
from app.config import Settings
from app.openapi import build_document
from tests.conftest import base_config, truncate_pg
from tests.support.client import TEST_KEY, body_signature, lot
from tests.support.live import LiveServer

JOB_ID = "6f1c2a9e-3d4b-4c5a-9e8f-0a1b2c3d4e5f"
HEX = "0123456789abcdef" * 4

BODIES = {
    "nested arrays": b"[" * 100_000,
    "nested lots": b'{"lots":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested objects, padded past the container count": b'{"lots":[' + b'{"a":           ' * 50_000 + b"1"
                                                       + b"}" * 50_000 + b"]}",
    "not UTF-8": b'{"lots":"\xff\xfe\xc3("}',
    "UTF-16": '{"lots":[{"lot_id":"é"}]}'.encode("utf-16"),
    "Latin-1": '{"lots":[{"lot_id":"café"}]}'.encode("latin-1"),
    "UTF-8 byte order mark": b'\xef\xbb\xbf{"lots":[]}',
    "a number": b"42",
    "a huge number": b"9" * 100_000,
    "an array": b'[{"lots":[]}]',
    "a string": b'"lots"',
    "null": b"null",
    "empty": b"",
    "truncated": b'{"lots":[{"lot_id":"a"',
    "trailing garbage": b'{"lots":[]} {"lots":[]}',
    "lots a number": b'{"lots":5}',
    "lots of scalars": b'{"lots":[1,"x",null,true,1.5e308]}',
    "lots of arrays": b'{"lots":[[1],[2]]}',
    "signature a number": b'{"signature":123,"lots":[{"lot_id":"a","images":["http://127.0.0.1:9/a.jpg"]}]}',
    "signature an object": b'{"signature":{"sha256":"x"},"lots":[{"lot_id":"a"}]}',
    "signature not ASCII": '{"signature":"sha256=é","lots":[{"lot_id":"a"}]}'.encode(),
    "signature 63 digits": b'{"signature":"sha256=' + HEX[:63].encode() + b'","lots":[{"lot_id":"a"}]}',
    "huge string": b'{"lots":[{"lot_id":"' + b"A" * 5_000_000 + b'"}]}',
    "huge key": b'{"' + b"k" * 2_000_000 + b'":1}',
    "too many lots": b'{"signature":"sha256=' + HEX.encode() + b'","lots":[' + b"{}," * 300_000 + b"{}]}",
    "too many padded lots": b'{"lots":[' + b"{}          ," * 60_000 + b"{}]}",
    "too many languages": b'{"languages":[' + b'"en",' * 60_000 + b'"en"],"lots":[{}]}',
    "NaN and Infinity": b'{"lots":[{"lot_id":NaN,"images":[Infinity]}]}',
    "lone surrogate": b'{"lots":[{"lot_id":"\\ud800"}]}',
    "control characters": b'{"lots":[{"lot_id":"a\x00\x1b\n"}]}',
}

SIGNATURES = {
    "non-ASCII (Latin-1 byte)": "sha256=é".encode("latin-1"),
    "non-ASCII (UTF-8 bytes)": "sha256=é".encode(),
    "non-ASCII digits": ("sha256=" + "０" * 64).encode(),
    "look-alike long s": ("ſha256=" + HEX).encode(),
    "not hex": b"sha256=" + b"g" * 64,
    "63 digits": b"sha256=" + HEX[:63].encode(),
    "65 digits": b"sha256=" + HEX.encode() + b"0",
    "very long": b"sha256=" + b"0" * 8000,
    "prefix only": b"sha256=",
    "well-formed but wrong": b"sha256=" + HEX.encode(),
    "bare digits, wrong": HEX.encode(),
    "control characters": b"sha256=\x1b[2J" + HEX[:56].encode(),
}


NOW = str(int(__import__("time").time()))
GS2 = "GS2-HMAC-SHA256"
AUTHORIZATIONS = {
    "scheme only": GS2.encode(),
    "empty credential": f"{GS2} Credential=, Timestamp={NOW}, Nonce=abcdefghijklmnop, Signature={HEX}".encode(),
    "credential without key": f"{GS2} Credential=default, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                              f"Signature={HEX}".encode(),
    "unknown client": f"{GS2} Credential=nobody/sk_nothing, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                      f"Signature={HEX}".encode(),
    "no signature": f"{GS2} Credential=default/sk_x, Timestamp={NOW}, Nonce=abcdefghijklmnop".encode(),
    "fields twice": f"{GS2} Credential=a/b, Credential=c/d, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                    f"Signature={HEX}".encode(),
    "timestamp 1e999": f"{GS2} Credential=a/b, Timestamp=1e999, Nonce=abcdefghijklmnop, Signature={HEX}".encode(),
    "timestamp of 400 digits": f"{GS2} Credential=a/b, Timestamp={'9' * 400}, Nonce=abcdefghijklmnop, "
                               f"Signature={HEX}".encode(),
    "negative timestamp": f"{GS2} Credential=a/b, Timestamp=-5, Nonce=abcdefghijklmnop, Signature={HEX}".encode(),
    "nonce too short": f"{GS2} Credential=a/b, Timestamp={NOW}, Nonce=abc, Signature={HEX}".encode(),
    "nonce of 4,000 characters": f"{GS2} Credential=a/b, Timestamp={NOW}, Nonce={'n' * 4000}, "
                                 f"Signature={HEX}".encode(),
    "nonce with spaces and quotes": f'{GS2} Credential=a/b, Timestamp={NOW}, Nonce="abc def ghi jkl", '
                                    f"Signature={HEX}".encode(),
    "signature not hex": f"{GS2} Credential=a/b, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                         f"Signature={'z' * 64}".encode(),
    "non-ASCII credential (Latin-1)": f"{GS2} Credential=café/clé, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                                      f"Signature={HEX}".encode("latin-1"),
    "non-ASCII credential (UTF-8)": f"{GS2} Credential=café/clé, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                                    f"Signature={HEX}".encode(),
    "full-width digits": f"{GS2} Credential=a/b, Timestamp={'１' * 10}, Nonce=abcdefghijklmnop, "
                         f"Signature={HEX}".encode(),
    "commas only": f"{GS2} ,,,,,,".encode(),
    "control characters": f"{GS2} Credential=a/b\x1b[2J, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                          f"Signature={HEX}".encode(),
    "lower-case scheme": f"gs2-hmac-sha256 Credential=a/b, Timestamp={NOW}, Nonce=abcdefghijklmnop, "
                         f"Signature={HEX}".encode(),
    "another scheme": b"Bearer sk-" + b"x" * 40,
    "8,000 characters": f"{GS2} Credential=".encode() + b"a" * 8000,
}


def operations() -> list[tuple[str, str]]:
    document = build_document(Settings.from_env({"SHARED_KEY": TEST_KEY, "TESTING": "true", "OPENAI_SANDBOX": "true"}))
    found = []
    for path, item in document["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), re.sub(r"\{[^}]+\}", JOB_ID, path)))
    return found


OPERATIONS = operations()
SIGNED_ROUTES = [(m, p) for m, p in OPERATIONS if p.startswith("/api/v1/") and not p.endswith("openapi.json")]


@pytest.fixture(scope="module")
def hostile_live(pg_url, sandbox_server, tmp_path_factory):
    """A live server on PostgreSQL whose log (INFO, text) is captured to look for tracebacks."""
    truncate_pg(pg_url)
    tmp = tmp_path_factory.mktemp("hostile")
    config = base_config(pg_url, sandbox_server.url, tmp)
    config.update({"LOG_LEVEL": "INFO", "WORKER_ENABLED": "false"})
    app = create_app(config)
    logs.configure("INFO", "text")
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_genservice", False))
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    server = LiveServer(app).start()
    server.log = buffer
    yield server
    server.stop()
    handler.setStream(previous)
    app.extensions["genservice"].close()


def send(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest(method, path)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read()
    finally:
        connection.close()


def assert_json_error(status: int, content_type: str, raw: bytes, where: str) -> dict:
    assert status < 500, f"{where}: {status} {raw[:300]!r}"
    if status < 400:
        return {}
    assert content_type.startswith("application/json"), f"{where}: {content_type}"
    body = json.loads(raw)
    assert {"error", "message", "code"} <= set(body), f"{where}: {body}"
    return body


def assert_no_traceback(server) -> None:
    text = server.log.getvalue()
    assert "Traceback" not in text and "unhandled error" not in text, text[-3000:]


@pytest.mark.parametrize("name", list(BODIES))
def test_hostile_bodies_on_every_route_answer_4xx(hostile_live, name):
    for method, path in OPERATIONS:
        for content_type in ("application/json", "text/plain"):
            status, kind, raw = send(hostile_live, method, path, BODIES[name], {"Content-Type": content_type})
            body = assert_json_error(status, kind, raw, f"{method} {path} {name}")
            if method == "POST" and path.endswith("/generate-descriptions"):
                assert 400 <= status < 500 and status != 404, (name, status, body)
    assert_no_traceback(hostile_live)


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_malformed_signatures_are_403_on_every_signed_route(hostile_live, name):
    lots = [lot("hostile-1", ["http://127.0.0.1:9/a.jpg"])]
    body = json.dumps({"version": "1.0.0", "lots": lots}).encode()
    for method, path in SIGNED_ROUTES:
        headers = {"X-Signature": SIGNATURES[name], "Content-Type": "application/json"}
        status, kind, raw = send(hostile_live, method, path, body if method == "POST" else None, headers)
        answer = assert_json_error(status, kind, raw, f"{method} {path} {name}")
        assert status == 403 and answer["code"] == "INVALID_SIGNATURE", (method, path, status, answer)
    assert_no_traceback(hostile_live)


@pytest.mark.parametrize("name", list(AUTHORIZATIONS))
def test_malformed_gs2_authorizations_are_refused_on_every_signed_route(hostile_live, name):
    """A broken Authorization header is a 401 or 403 in the error shape, whatever its bytes: never a 5xx,
    never a traceback, and never a request let through."""
    lots = [lot("hostile-gs2", ["http://127.0.0.1:9/a.jpg"])]
    body = json.dumps({"version": "1.0.0", "lots": lots}).encode()
    for method, path in SIGNED_ROUTES:
        headers = {"Authorization": AUTHORIZATIONS[name], "Content-Type": "application/json"}
        status, kind, raw = send(hostile_live, method, path, body if method == "POST" else None, headers)
        answer = assert_json_error(status, kind, raw, f"{method} {path} {name}")
        assert status in (401, 403), (method, path, status, answer)
    assert_no_traceback(hostile_live)


@pytest.mark.parametrize("value", ["sha256=é", "sha256=" + "g" * 64, 12345, ["sha256=" + HEX], {"a": 1}, True])
def test_malformed_body_signature_is_403(hostile_live, value):
    lots = [lot("hostile-2", ["http://127.0.0.1:9/a.jpg"])]
    body = json.dumps({"signature": value, "lots": lots}).encode()
    status, kind, raw = send(hostile_live, "POST", "/api/v1/generate-descriptions", body,
                             {"Content-Type": "application/json"})
    answer = assert_json_error(status, kind, raw, repr(value))
    assert status == 403 and answer["code"] == "INVALID_SIGNATURE"


@pytest.mark.parametrize("method,path", SIGNED_ROUTES)
def test_missing_signature_is_401(hostile_live, method, path):
    body = json.dumps({"lots": [lot("hostile-3", ["http://127.0.0.1:9/a.jpg"])], "urls": ["http://127.0.0.1:9/a"]})
    for headers in ({}, {"X-Signature": ""}, {"X-Signature": "   "}):
        status, kind, raw = send(hostile_live, method, path, body.encode() if method == "POST" else None,
                                 {"Content-Type": "application/json", **headers})
        answer = assert_json_error(status, kind, raw, f"{method} {path} {headers}")
        assert status == 401 and answer["code"] == "MISSING_SIGNATURE", (method, path, answer)


def test_too_many_lots_stop_at_the_limit_plus_one(make_live):
    server = make_live(MAX_BATCH_SIZE=10)
    body = b'{"signature":"sha256=' + HEX.encode() + b'","lots":[' + b'{"lot_id":"x"},' * 5_000 + b'{}]}'
    status, kind, raw = send(server, "POST", "/api/v1/generate-descriptions", body,
                             {"Content-Type": "application/json"})
    answer = assert_json_error(status, kind, raw, "too many lots")
    assert status == 413 and answer["code"] == "BATCH_SIZE_EXCEEDED"
    assert answer["details"] == {"provided_lots": 11, "max_allowed": 10}


def test_a_correct_signature_still_works_with_a_header_or_uppercase_hex(make_live, image_server):
    server = make_live()
    variants = (lambda s: s, lambda s: s.upper().replace("SHA256=", "sha256="), lambda s: s.removeprefix("sha256="),
                lambda s: " " + s.upper() + " ")
    for number, variant in enumerate(variants):
        lots = [lot(f"ok-{number}-{i}", [image_server.url(f"/img/{i}.jpg")]) for i in range(2)]
        status, kind, raw = send(server, "POST", "/api/v1/generate-descriptions",
                                 json.dumps({"lots": lots, "languages": ["en"]}).encode(),
                                 {"Content-Type": "application/json", "X-Signature": variant(body_signature(lots))})
        assert status == 201, raw[:300]


@pytest.mark.parametrize("payload,status", [
    (b'{"signature":"sha256=' + HEX.encode() + b'","lots":[{"lot_id":"a"},{"lot_id":"b"}]}', 403),
    (b'{"lots":' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400),
    (b'{"lots":[' + b"{}            ," * 20 + b"{}]}", 413),
])
def test_the_rate_limiter_and_the_view_share_one_parse(make_live, monkeypatch, payload, status):
    """The sync/batch limit is chosen from the body; it must not be parsed a second time by the view,
    whether the parse succeeded or was refused."""
    import app.api as api_module

    calls = []
    parse = api_module.load_object

    def counting(raw, **kwargs):
        calls.append(len(raw))
        return parse(raw, **kwargs)

    monkeypatch.setattr(api_module, "load_object", counting)
    server = make_live(RATELIMIT_ENABLED="true", MAX_BATCH_SIZE=10)
    answer = send(server, "POST", "/api/v1/generate-descriptions", payload, {"Content-Type": "application/json"})
    assert answer[0] == status, answer
    assert calls == [len(payload)]
