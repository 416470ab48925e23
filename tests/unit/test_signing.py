"""services/signing.py: the GS2 header's shape, its string to sign, and which reference key matched."""
from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.jsonbody import load_object
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


# ---- the signed bytes of a generate request ---------------------------------------------------------

def _recipe(lots) -> bytes:
    return json.dumps(lots, separators=(",", ":"), sort_keys=True).encode()


_odd_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from('"\\\x7f\n\t\x00/é€😀'))
_scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
            | st.floats(allow_nan=True, allow_infinity=True) | _odd_text | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7f)))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_odd_text | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7f)), inner, max_size=4),
                       max_leaves=25)
# what the fast encoder is kept for, with DEL (which only json escapes) let in
_plain_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7f, exclude_characters='"\\'))
_plain_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2 ** 65, max_value=2 ** 65) | _plain_text,
                             lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_plain_text, inner, max_size=4),
                             max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(lots=st.lists(_values, max_size=5) | st.lists(_plain_values, max_size=5), indent=st.sampled_from([None, 2]))
def test_the_signed_bytes_are_the_recipes_whatever_the_lots_hold(lots, indent):
    """Floats, NaN, integers past 64 bits, non-ASCII, DEL, quotes, control characters: the bytes signed are
    always the published recipe's, whichever encoder wrote them (the flag comes from the real parser)."""
    raw = json.dumps({"lots": lots}, indent=indent, ensure_ascii=False).encode()
    body = load_object(raw, array_limits={"lots": 100}, default_array_limit=100)
    assert signing.canonical_lots(body["lots"], floats=body.has_floats) == _recipe(json.loads(raw)["lots"])


def test_plain_lots_are_written_by_the_fast_encoder_and_anything_else_by_the_recipe():
    plain = [{"lot_id": "a-1", "additional_info": "2019 Toyota Camry, front 'collision' <b>/x", "n": 7,
              "images": [{"url": "https://cdn.example.com/a/1.jpg?x=1&y=2"}, "http://x/2.jpg"], "webhook": None,
              "flags": [True, False, -2 ** 63, 2 ** 64 - 1]}]
    assert signing._orjson_canonical(plain) == _recipe(plain)
    for other in ([{"info": "Тойота"}], [{"info": 'a "quoted" word'}], [{"info": "tab\there"}], [{"info": "\x7f"}],
                  [{"n": 2 ** 64}], [json.loads("[" * 300 + "]" * 300)], [{1: "x"}],
                  [json.loads('{"info": "\\ud800"}')]):  # a lone surrogate, which json.loads lets through
        assert signing._orjson_canonical(other) is None, other
        assert signing.canonical_lots(other, floats=False) == _recipe(other)
    # told that floats may be there, the recipe runs whatever the lots hold
    assert signing.canonical_lots([{"x": 1.5}]) == b'[{"x":1.5}]'
    assert signing.canonical_lots([{"x": 1e16}]) == b'[{"x":1e+16}]'  # orjson would write 1e16
