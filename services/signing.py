"""HMAC-SHA256 signatures: what the client signs, what the service signs, compared in constant time."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Iterable


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


def strip_prefix(signature: str) -> str:
    value = signature.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256="):]
    return value.lower()


def verify(keys: Iterable[str], message: bytes | str, signature: str) -> bool:
    """True when ``signature`` (with or without the ``sha256=`` prefix) matches any current key."""
    given = strip_prefix(signature)
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
