"""Property-based fuzzing of every operation of /api/v1/openapi.json on a live server.

Requests are generated from the document; most are signed the way a real client would sign
them (so validation is reached), some are left as generated (so authentication is). Every
answer must be free of 5xx and conform to the document: status code, content type, schema.
Invented image and webhook URLs never leave the machine: the server only lets outbound
traffic reach loopback names. `make test` runs a bounded number of examples per operation;
`make fuzz` runs it again and again with fresh random seeds for FUZZ_SECONDS (default 600).
"""
from __future__ import annotations

import hashlib
import os
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from app import create_app
from app.config import Settings
from app.openapi import build_document
from services import signing
from tests.conftest import base_config, truncate_pg
from tests.support.client import TEST_KEY
from tests.support.live import LiveServer

EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_live(pg_url, sandbox_server, tmp_path_factory):
    """One live server on PostgreSQL for the whole module (fuzzing needs no fresh database per case)."""
    truncate_pg(pg_url)
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(base_config(pg_url, sandbox_server.url, tmp))
    server = LiveServer(app).start()
    yield server
    server.stop()
    app.extensions["genservice"].close()


def document_schema():
    """The document as the app builds it; the same dict the live server serves."""
    return schemathesis.openapi.from_dict(build_document(Settings.from_env({"SHARED_KEY": TEST_KEY, "TESTING": "true", "OPENAI_SANDBOX": "true"})))


SCHEMA = document_schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def should_sign(seed: bytes) -> bool:
    """Nine requests in ten are signed correctly, decided by the request itself so runs repeat."""
    return hashlib.sha256(seed).digest()[0] % 10 != 0


def sign(prepared: requests.PreparedRequest, case) -> None:
    path = urlsplit(prepared.url).path
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    if not should_sign(prepared.method.encode() + prepared.url.encode() + body):
        return
    if path.endswith("/generate-descriptions") and isinstance(case.body, dict) and "lots" in case.body:
        signed = dict(case.body, signature=signing.sign(TEST_KEY, signing.canonical_lots(case.body["lots"])))
        prepared.prepare_body(data=None, files=None, json=signed)
    elif path.endswith("/test-image-validation"):
        prepared.headers["X-Signature"] = signing.sign(TEST_KEY, body)
    elif path.endswith("/batch-jobs"):
        prepared.headers["X-Signature"] = signing.sign(TEST_KEY, urlsplit(prepared.url).query)
    elif case.path_parameters:
        value = next(iter(case.path_parameters.values()))
        prepared.headers["X-Signature"] = signing.sign(TEST_KEY, str(value))


def call_and_check(case, base_url: str) -> None:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    kwargs.pop("timeout", None)
    prepared = requests.Request(**{k: v for k, v in kwargs.items()
                                   if k in ("method", "url", "headers", "params", "json", "data", "cookies")}
                                ).prepare()
    sign(prepared, case)
    with requests.Session() as session:
        response = session.send(prepared, timeout=60)
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_operation_conforms_and_never_fails(operation, fuzz_live):
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        call_and_check(case, fuzz_live.url)

    run()
