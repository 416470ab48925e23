"""Request signatures: HMAC-SHA256 with the shared key(s), checked before any work is done.

Missing signature -> 401, wrong signature -> 403, both as JSON.
"""
from __future__ import annotations

from flask import current_app, request

from services import signing
from services.errors import ServiceError


def _keys() -> tuple[str, ...]:
    return current_app.extensions["genservice"].settings.shared_keys


def missing() -> ServiceError:
    return ServiceError(401, "MISSING_SIGNATURE", "Request signature is required (X-Signature header)")


def invalid() -> ServiceError:
    return ServiceError(403, "INVALID_SIGNATURE", "Invalid HMAC signature")


def check(message: bytes | str, signature: str | None) -> None:
    if not signature or not signature.strip():
        raise missing()
    if not signing.verify(_keys(), message, signature):
        raise invalid()


def require_header_signature(message: bytes | str) -> None:
    """Job endpoints sign the job id; list endpoints their raw query string; others their raw body."""
    check(message, request.headers.get("X-Signature"))


def require_lots_signature(body: dict, lots: list) -> None:
    """Generate requests sign the canonical JSON of ``lots``, in the body field or the X-Signature header."""
    signature = body.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise ServiceError(400, "VALIDATION_ERROR", "Field 'signature' must be a string", {"field": "signature"})
    check(signing.canonical_lots(lots), signature or request.headers.get("X-Signature"))
