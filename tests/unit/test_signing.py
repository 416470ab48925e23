"""services/signing.py: the GS2 header's shape, its string to sign, and which reference key matched."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from services import signing

SECRET = "gsk_unit-test-secret-of-enough-length-000000"
GOOD = ("GS2-HMAC-SHA256 Credential=acme/key_0123456789abcdef, Timestamp=1764590400, "
        "Nonce=abcdefghijklmnop, Signature=" + "a" * 64)


def test_a_well_formed_header_is_parsed():
    parsed = signing.parse_gs2(GOOD)
    assert (parsed.client_id, parsed.key_id, parsed.timestamp, parsed.nonce) == \
        ("acme", "key_0123456789abcdef", 1764590400, "abcdefghijklmnop")
    assert signing.parse_gs2(GOOD.replace(", ", ",")) is not None  # spaces after the commas are optional


@pytest.mark.parametrize("header", [
    GOOD.replace("GS2-HMAC-SHA256", "GS2-HMAC-SHA1"),
    GOOD.replace("Nonce=abcdefghijklmnop", "Nonce=short"),              # under 16 characters
    GOOD.replace("Nonce=abcdefghijklmnop", "Nonce=" + "n" * 129),
    GOOD.replace("acme/", "ac me/"),
    GOOD.replace("acme/", "acmé/"),                                      # non-ASCII look-alikes are not letters
    GOOD.replace("Timestamp=1764590400", "Timestamp=-1"),
    GOOD.replace("a" * 64, "a" * 63),
    GOOD.replace("a" * 64, "g" * 64),
    GOOD + ", Extra=1",
    GOOD.replace("Credential=acme/key_0123456789abcdef, ", ""),
    "GS2-HMAC-SHA256 " + "x" * 700,
    None, 42, "",
])
def test_anything_else_is_refused_before_any_hmac(header):
    assert signing.parse_gs2(header) is None


def test_the_string_to_sign_has_every_part_on_its_own_line():
    text = signing.gs2_string_to_sign("acme", "k1", 1764590400, "n" * 16, "post", "/api/v1/x", b"a=1&b=2", b"{}")
    assert text.decode().split("\n") == ["GS2-HMAC-SHA256", "acme/k1", "1764590400", "n" * 16, "POST", "/api/v1/x",
                                         "a=1&b=2", hashlib.sha256(b"{}").hexdigest()]


def test_the_signing_key_is_derived_so_a_reference_hmac_of_the_same_text_differs():
    args = ("acme", "k1", 1764590400, "n" * 16, "GET", "/api/v1/batch-status/j", b"", b"")
    text = signing.gs2_string_to_sign(*args)
    assert signing.gs2_signature(SECRET, *args) != hmac.new(SECRET.encode(), text, hashlib.sha256).hexdigest()
    assert signing.gs2_signature(SECRET, *args) == hmac.new(signing.gs2_signing_key(SECRET), text,
                                                            hashlib.sha256).hexdigest()


def test_every_part_changes_the_signature():
    base = ["acme", "k1", 1764590400, "n" * 16, "GET", "/api/v1/batch-status/j", b"", b""]
    seen = {signing.gs2_signature(SECRET, *base)}
    for index, other in enumerate(["acme2", "k2", 1764590401, "m" * 16, "POST", "/api/v1/batch-results/j",
                                   b"limit=1", b"x"]):
        changed = list(base)
        changed[index] = other
        seen.add(signing.gs2_signature(SECRET, *changed))
    assert len(seen) == 9


def test_matching_key_names_the_key_that_signed():
    keys = ["first-key-of-at-least-32-characters!!", "second-key-of-at-least-32-characters!"]
    assert signing.matching_key(keys, b"job", signing.sign(keys[1], b"job")) == 1
    assert signing.matching_key(keys, b"job", signing.sign(keys[0], b"job")) == 0
    assert signing.matching_key(keys, b"job", signing.sign("another-key-of-at-least-32-characters", b"job")) is None
    assert signing.matching_key(keys, b"job", "not a signature") is None
