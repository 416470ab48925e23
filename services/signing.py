"""HMAC-SHA256 signatures: what the client signs, what the service signs, compared in constant time."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any, Iterable

import orjson

# ``sha256=`` (any case) and 64 hex digits, or the digits alone; ASCII only. Spelled out rather than
# re.IGNORECASE, which would let non-ASCII look-alikes (U+017F for "s", U+212A for "k") through.
_SIGNATURE = re.compile(r"(?:[sS][hH][aA]256=)?([0-9a-fA-F]{64})", re.ASCII)


def canonical_lots(lots: Any, *, floats: bool = True) -> bytes:
    """The exact bytes a client signs for a generate request: the lots, compact and key-sorted.

    The published Python recipe is ``json.dumps(lots, separators=(",", ":"), sort_keys=True)`` with
    ``ensure_ascii`` at its default. When the caller knows the lots hold no float (``floats=False``: no
    fraction, exponent, NaN or Infinity came out of the parser), orjson writes them first, seven times as
    fast on 50,000 lots, and its bytes are kept when they are provably the recipe's; else the recipe runs.
    """
    if not floats:
        fast = _orjson_canonical(lots)
        if fast is not None:
            return fast
    return json.dumps(lots, separators=(",", ":"), sort_keys=True).encode()


def _orjson_canonical(lots: Any) -> bytes | None:
    """orjson's compact, key-sorted bytes of float-free ``lots`` when they equal the recipe's, else None.

    The two encoders write containers, integers, true, false and null alike, and sort keys alike when
    they are ASCII. They differ on floats (the caller rules those out), on integers past 64 bits and
    nesting past 254 levels (orjson refuses them), and on strings: json escapes everything outside
    printable ASCII (non-ASCII as \\uXXXX, DEL too) where orjson writes UTF-8. So the bytes are kept only
    when they are ASCII with no DEL and no escape at all: every string then is printable ASCII without
    a quote or a backslash, which both write as it is.
    """
    try:
        out = orjson.dumps(lots, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a big integer, deep nesting, a key that is not a string
        return None
    if out.isascii() and b"\\" not in out and b"\x7f" not in out:
        return out
    return None


def hex_hmac(key: str, message: bytes | str) -> str:
    if isinstance(message, str):
        message = message.encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, message: bytes | str) -> str:
    """``sha256=<hex>``, the form of the X-Signature header and of the v2 body field."""
    return "sha256=" + hex_hmac(key, message)


def parse_signature(signature: Any) -> str | None:
    """The 64 lower-case hex digits of a well-formed signature, or None for anything else.

    Checked before any comparison: ``hmac.compare_digest`` raises TypeError on non-ASCII text,
    and a value of the wrong shape cannot match anyway.
    """
    if not isinstance(signature, str) or len(signature) > 200:
        return None
    match = _SIGNATURE.fullmatch(signature.strip())
    return match.group(1).lower() if match else None


def verify(keys: Iterable[str], message: bytes | str, signature: Any) -> bool:
    """True when ``signature`` (with or without the ``sha256=`` prefix) matches any current key."""
    return matching_key(keys, message, signature) is not None


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = (24, 64)  # Standard Webhooks: at least 192 bits; 512 at most


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the bytes of the base64 after ``whsec_``.

    ValueError for anything else (a bare API key, bad base64, too short or too long), so an API key
    can never be used as a webhook secret by mistake.
    """
    if not isinstance(secret, str) or not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("must start with whsec_ (a webhook secret, never an API key)")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    except (ValueError, TypeError):
        raise ValueError("must be whsec_ followed by base64") from None
    low, high = WEBHOOK_SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"must hold {low} to {high} random bytes (the base64 after whsec_)")
    return key


def standard_webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the bytes the
    ``whsec_`` secret encodes, as the Standard Webhooks libraries verify it."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# ---- GS2: the replay-safe scheme -----------------------------------------------------------------
#
#   Authorization: GS2-HMAC-SHA256 Credential=<client id>/<key id>, Timestamp=<unix seconds>,
#                  Nonce=<16-128 of A-Z a-z 0-9 . _ ~ ->, Signature=<64 hex digits>
#
# The signature is HMAC-SHA256 under a key derived from the secret (so no signature of the reference's
# scheme, keyed with the secret itself, can ever be one of these, nor the other way round) over the
# lines of ``gs2_string_to_sign``: the scheme's name, the credential, timestamp, nonce, method, path,
# raw query string and the SHA-256 of the raw body. Method and path separate routes; the body hash
# covers every field (languages and version included) byte for byte, whatever the client's JSON encoder.

GS2 = "GS2-HMAC-SHA256"
GS2_WINDOW_SECONDS = 300

_TOKEN = r"[A-Za-z0-9._~-]"
_GS2_HEADER = re.compile(
    rf"{GS2} +Credential=({_TOKEN}{{1,64}})/({_TOKEN}{{1,40}}), *Timestamp=([0-9]{{1,12}}), *"
    rf"Nonce=({_TOKEN}{{16,128}}), *Signature=([0-9a-fA-F]{{64}})", re.ASCII)


class GS2Credentials:
    """The parts of a GS2 Authorization header, shape-checked."""
    __slots__ = ("client_id", "key_id", "timestamp", "nonce", "signature")

    def __init__(self, client_id: str, key_id: str, timestamp: int, nonce: str, signature: str):
        self.client_id, self.key_id, self.timestamp, self.nonce = client_id, key_id, timestamp, nonce
        self.signature = signature.lower()


def is_gs2(authorization: str | None) -> bool:
    return isinstance(authorization, str) and authorization.lstrip().startswith(GS2 + " ")


def parse_gs2(authorization: Any) -> GS2Credentials | None:
    """The header's parts, or None when it is not exactly the GS2 form (checked before any HMAC)."""
    if not isinstance(authorization, str) or len(authorization) > 600:
        return None
    match = _GS2_HEADER.fullmatch(authorization.strip())
    if match is None:
        return None
    client_id, key_id, timestamp, nonce, signature = match.groups()
    return GS2Credentials(client_id, key_id, int(timestamp), nonce, signature)


def gs2_signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"GS2-HMAC-SHA256 signing key", hashlib.sha256).digest()


def gs2_string_to_sign(client_id: str, key_id: str, timestamp: int, nonce: str, method: str, path: str,
                       query: bytes | str, body: bytes) -> bytes:
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    lines = (GS2, f"{client_id}/{key_id}", str(timestamp), nonce, method.upper(), path, query,
             hashlib.sha256(body).hexdigest())
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def gs2_signature(secret: str, client_id: str, key_id: str, timestamp: int, nonce: str, method: str, path: str,
                  query: bytes | str, body: bytes) -> str:
    message = gs2_string_to_sign(client_id, key_id, timestamp, nonce, method, path, query, body)
    return hmac.new(gs2_signing_key(secret), message, hashlib.sha256).hexdigest()


def gs2_authorization(secret: str, client_id: str, key_id: str, method: str, path: str, query: bytes | str = b"",
                      body: bytes = b"", *, timestamp: int | None = None, nonce: str | None = None) -> str:
    """The Authorization header for one request (what the tests and benches send; genclient has its own)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    signature = gs2_signature(secret, client_id, key_id, timestamp, nonce, method, path, query, body)
    return f"{GS2} Credential={client_id}/{key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"


def gs2_verify(secret: str, credentials: GS2Credentials, method: str, path: str, query: bytes | str,
               body: bytes) -> bool:
    expected = gs2_signature(secret, credentials.client_id, credentials.key_id, credentials.timestamp,
                             credentials.nonce, method, path, query, body)
    return hmac.compare_digest(expected, credentials.signature)


def matching_key(keys: Iterable[str], message: bytes | str, signature: Any) -> int | None:
    """The index of the key under which ``signature`` (reference scheme) is valid, or None. Every key is
    compared, so the time taken does not reveal which one matched."""
    given = parse_signature(signature)
    if given is None:
        return None
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(hex_hmac(key, message), given) and found is None:
            found = index
    return found
