"""Request signatures: HMAC-SHA256 with the shared key(s), checked before any work is done.

Missing signature -> 401, wrong signature -> 403, both as JSON. Which message a route's signature
covers is declared on the route (app/policies.py); ``signed`` wraps its view with that check.
"""
from __future__ import annotations

import functools
from typing import Callable

from flask import current_app, request

from app.policies import Signature
from services import signing
from services.errors import ServiceError


def _keys() -> tuple[str, ...]:
    return current_app.extensions["genservice"].settings.shared_keys


def missing() -> ServiceError:
    return ServiceError(401, "MISSING_SIGNATURE", "Request signature is required (X-Signature header)")


def invalid() -> ServiceError:
    return ServiceError(403, "INVALID_SIGNATURE", "Invalid HMAC signature")


def malformed() -> ServiceError:
    return ServiceError(403, "INVALID_SIGNATURE", "Invalid HMAC signature: expected sha256=<64 hex digits>")


def require_shape(signature: object) -> None:
    """401 when no signature is given, 403 when it is not ``sha256=`` + 64 hex digits (or the digits)."""
    if signature is None or (isinstance(signature, str) and not signature.strip()):
        raise missing()
    if signing.parse_signature(signature) is None:
        raise malformed()


def check(message: bytes | str, signature: object) -> None:
    """The shape first (401/403), then the HMAC under every current key (403)."""
    require_shape(signature)
    if not signing.verify(_keys(), message, signature):
        raise invalid()


def require_header_signature(message: bytes | str) -> None:
    """Job endpoints sign the job id; list endpoints their raw query string; others their raw body."""
    check(message, request.headers.get("X-Signature"))


def require_lots_signature(body: dict, lots: list) -> None:
    """Generate requests sign the canonical JSON of ``lots``, in the body field or the X-Signature header."""
    signature = body.get("signature")
    if signature is None or signature == "":
        signature = request.headers.get("X-Signature")
    require_shape(signature)  # before the lots are serialized
    try:
        message = signing.canonical_lots(lots)
    except (RecursionError, ValueError):
        # nesting the parser accepted but the encoder cannot repeat; such lots can never be valid
        raise invalid() from None
    check(message, signature)


#: kinds signed over a variable of the route's path, and its name
PATH_VARIABLES = {Signature.JOB_ID: "job_id", Signature.DELIVERY_ID: "delivery_id"}


def require(kind: Signature, view_args: dict) -> None:
    """Check the request's signature of the given kind; ``view_args`` are the route's path variables."""
    if kind is Signature.LOTS:
        from app.api import read_json_object
        from app.schemas import require_lots_list

        body = read_json_object()  # bounded and parsed once; the view reads the same result
        require_lots_signature(body, require_lots_list(body))
    elif kind in PATH_VARIABLES:
        require_header_signature(view_args[PATH_VARIABLES[kind]])
    elif kind is Signature.QUERY:
        require_header_signature(request.query_string)
    elif kind is Signature.BODY:
        require_header_signature(request.get_data(cache=True))
    elif kind is not Signature.NONE:
        raise ValueError(f"no check for signature kind {kind}")


def signed(kind: Signature, view: Callable) -> Callable:
    """``view``, checking the signature of ``kind`` before it runs (``view`` itself for Signature.NONE)."""
    if kind is Signature.NONE:
        return view

    @functools.wraps(view)
    def checked(*args, **kwargs):
        require(kind, kwargs)
        return view(*args, **kwargs)
    return checked
