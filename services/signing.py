"""HMAC-SHA256 signatures: what the client signs, what the service signs, compared in constant time."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any, Iterable

# ``sha256=`` (any case) and 64 hex digits, or the digits alone; ASCII only. Spelled out rather than
# re.IGNORECASE, which would let non-ASCII look-alikes (U+017F for "s", U+212A for "k") through.
_SIGNATURE = re.compile(r"(?:[sS][hH][aA]256=)?([0-9a-fA-F]{64})", re.ASCII)


def canonical_lots(lots: Any) -> bytes:
    """The exact bytes a client signs for a generate request: the lots, compact and key-sorted.

    ``ensure_ascii`` stays at its default so the bytes match the published Python recipe.
    """
    return json.dumps(lots, separators=(",", ":"), sort_keys=True).encode()


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
    given = parse_signature(signature)
    if given is None:
        return False
    matched = False
    for key in keys:
        # every key is compared, so the time taken does not reveal which one matched
        matched |= hmac.compare_digest(hex_hmac(key, message), given)
    return matched


def standard_webhook_signature(key: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the raw key bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_webhook_secret(key: str) -> str:
    """The ``whsec_`` secret a receiver gives to a Standard Webhooks library for this key."""
    return "whsec_" + base64.b64encode(key.encode()).decode()
