"""genclient's GS2 signer and key fingerprint agree with the service's verifier, byte for byte; the
rotate-key grace parser reads what the README says it takes."""
from __future__ import annotations

from datetime import timedelta

import argparse
import pytest

from app.cli import grace_period
from genclient import gs2_authorization, implicit_key_id
from services import clients, signing

CASES = [
    ("GET", "/api/v1/batch-status/job-1", "", b""),
    ("get", "/api/v1/batch-jobs", "status=completed&created_after=2026-01-01T00%3A00%3A00%2B02%3A00", b""),
    ("POST", "/api/v1/generate-descriptions", "", '{"lots":[{"additional_info":"Лада \u007f 🚗"}]}'.encode()),
    ("POST", "/api/v1/webhook-deliveries/17/redeliver", "", b""),
]


@pytest.mark.parametrize("method, path, query, body", CASES)
def test_genclient_signatures_verify_on_the_service_and_nowhere_else(method, path, query, body):
    header = gs2_authorization("gsk_secret", "auction-a", "key_1", method, path, query, body)
    parsed = signing.parse_gs2(header)
    assert parsed is not None and (parsed.client_id, parsed.key_id) == ("auction-a", "key_1")
    assert signing.gs2_verify("gsk_secret", parsed, method, path, query, body)
    assert not signing.gs2_verify("gsk_other", parsed, method, path, query, body)
    assert not signing.gs2_verify("gsk_secret", parsed, method, path + "x", query, body)
    assert not signing.gs2_verify("gsk_secret", parsed, method, path, query + "&x=1", body)
    assert not signing.gs2_verify("gsk_secret", parsed, method, path, query, body + b" ")


def test_fixed_timestamp_and_nonce_give_the_services_header():
    for method, path, query, body in CASES:
        assert gs2_authorization("s", "c", "k", method, path, query, body, timestamp=1796040000, nonce="n" * 16) == \
            signing.gs2_authorization("s", "c", "k", method, path, query, body, timestamp=1796040000, nonce="n" * 16)


def test_every_signature_has_a_fresh_nonce_of_the_allowed_shape():
    nonces = {signing.parse_gs2(gs2_authorization("s", "c", "k", "GET", "/p")).nonce for _ in range(50)}
    assert len(nonces) == 50


@pytest.mark.parametrize("key", ["test-shared-key-0123456789-abcdefghijklmnop", "ключ " * 10, "x" * 32])
def test_the_implicit_key_id_matches_the_services(key):
    assert implicit_key_id(key) == clients.implicit_key_id(key)
    assert implicit_key_id(key).startswith("sk_") and len(implicit_key_id(key)) == 19


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("30m", 1800), ("90s", 90), ("2d", 172800), ("0", 0),
                                           ("1.5h", 5400), (" 45 ", 45), ("10M", 600)])
def test_grace_periods(text, seconds):
    assert grace_period(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1w", "h", "1h30m"])
def test_bad_grace_periods_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        grace_period(text)
