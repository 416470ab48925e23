"""Who is calling: the request's signature names (GS2) or finds (the reference's scheme) its client.

Two schemes are accepted on every signed route:

- GS2 (``Authorization: GS2-HMAC-SHA256 ...``, services/signing.py): method, path, query, timestamp,
  nonce and the body's hash under a client's key; refused outside the clock window and when its nonce
  was seen before (by any instance: the nonces are in the database).
- The reference's: HMAC-SHA256 of the job id, the query string, the body or the canonical lots, in
  ``X-Signature`` (or the body's ``signature``), under the implicit client's keys (``SHARED_KEY``,
  unless ``REFERENCE_SIGNATURES=false``) or those of a client set to accept it.

Missing signature -> 401, wrong, late, replayed or malformed -> 403, a disabled client -> 403, all as
JSON. Which message a route's reference signature covers is declared on the route (app/policies.py);
``signed`` wraps its view with the check and leaves the client in ``flask.g.client``.
"""
from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Callable

from flask import current_app, g, request

from app.policies import Signature
from services import clients, signing
from services.clients import ClientIdentity
from services.errors import ServiceError


def _runtime():
    return current_app.extensions["genservice"]


def missing() -> ServiceError:
    return ServiceError(401, "MISSING_SIGNATURE", "Request signature is required (an Authorization: "
                        "GS2-HMAC-SHA256 header, or X-Signature)")


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


def check(message: bytes | str, signature: object) -> ClientIdentity:
    """The shape first (401/403), then the HMAC under every key the reference's scheme may use (403).

    The implicit client's keys come from the settings and are tried first, without a database read;
    clients set to accept the scheme are read only when none of those matches.
    """
    require_shape(signature)
    rt = _runtime()
    implicit = clients.implicit_client(rt.settings)
    if implicit.reference_scheme:
        if signing.matching_key(rt.settings.shared_keys, message, signature) is not None:
            return implicit
    candidates = clients.named_reference_candidates(rt.db)
    if candidates:
        index = signing.matching_key([key for _client, key in candidates], message, signature)
        if index is not None:
            return candidates[index][0]
    raise invalid()


def require_header_signature(message: bytes | str) -> ClientIdentity:
    """Job endpoints sign the job id; list endpoints their raw query string; others their raw body."""
    return check(message, request.headers.get("X-Signature"))


def require_lots_signature(body: dict, lots: list) -> ClientIdentity:
    """Generate requests sign the canonical JSON of ``lots``, in the body field or the X-Signature header."""
    signature = body.get("signature")
    if signature is None or signature == "":
        signature = request.headers.get("X-Signature")
    require_shape(signature)  # before the lots are serialized
    try:
        # the body parser says whether any float came in (app/jsonbody.py); a body from elsewhere may hold one
        message = signing.canonical_lots(lots, floats=getattr(body, "has_floats", True))
    except (RecursionError, ValueError):
        # nesting the parser accepted but the encoder cannot repeat; such lots can never be valid
        raise invalid() from None
    return check(message, signature)


# ---- GS2 -----------------------------------------------------------------------------------------

def _gs2_malformed() -> ServiceError:
    return ServiceError(403, "INVALID_SIGNATURE", "Invalid GS2 signature: expected 'GS2-HMAC-SHA256 "
                        "Credential=<client>/<key>, Timestamp=<unix seconds>, Nonce=<16-128 of A-Z a-z 0-9 . _ ~ ->, "
                        "Signature=<64 hex digits>'")


def request_path() -> str:
    """The path as the client sent it (still percent-encoded), which is what it signed."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
        if path.startswith("/"):
            return path
    return request.script_root + request.path


def check_gs2(authorization: str) -> ClientIdentity:
    credentials = signing.parse_gs2(authorization)
    if credentials is None:
        raise _gs2_malformed()
    now = time.time()
    if abs(now - credentials.timestamp) > signing.GS2_WINDOW_SECONDS:
        raise ServiceError(403, "SIGNATURE_EXPIRED", f"The signature's timestamp is more than "
                           f"{signing.GS2_WINDOW_SECONDS} seconds from the server's clock; sign again",
                           {"server_time": int(now), "timestamp": credentials.timestamp})
    rt = _runtime()
    found = clients.find_key(rt.db, rt.settings, credentials.client_id, credentials.key_id)
    if found is None:
        raise invalid()
    client, secret = found
    if not signing.gs2_verify(secret, credentials, request.method, request_path(), request.query_string,
                              request.get_data(cache=True)):
        raise invalid()
    # only a valid signature is remembered, so nobody can fill the store without a key
    expires = datetime.fromtimestamp(credentials.timestamp + signing.GS2_WINDOW_SECONDS + 60, timezone.utc)
    if not clients.remember_nonce(rt.db, client.id, credentials.nonce, expires):
        raise ServiceError(403, "SIGNATURE_REPLAYED", "This signature's nonce was used before: every request "
                           "needs a new nonce and a new signature")
    return client


def disabled(client: ClientIdentity) -> ServiceError:
    return ServiceError(403, "CLIENT_DISABLED", f"Client {client.id} is disabled", {"client_id": client.id})


def current_client() -> ClientIdentity:
    """The client the request's signature identified (set before the view runs)."""
    return g.client


#: kinds signed over a variable of the route's path, and its name
PATH_VARIABLES = {Signature.JOB_ID: "job_id", Signature.DELIVERY_ID: "delivery_id"}


def _reference(kind: Signature, view_args: dict) -> ClientIdentity:
    if kind is Signature.LOTS:
        from app.api import read_json_object
        from app.schemas import require_lots_list

        body = read_json_object()  # bounded and parsed once; the view reads the same result
        return require_lots_signature(body, require_lots_list(body))
    if kind in PATH_VARIABLES:
        return require_header_signature(view_args[PATH_VARIABLES[kind]])
    if kind is Signature.QUERY:
        return require_header_signature(request.query_string)
    if kind is Signature.BODY:
        return require_header_signature(request.get_data(cache=True))
    raise ValueError(f"no check for signature kind {kind}")


def require(kind: Signature, view_args: dict) -> ClientIdentity | None:
    """Check the request's signature (GS2 when an Authorization header of that scheme is sent, else the
    reference's of the given kind) and keep its client in ``g.client``; ``view_args`` are the route's
    path variables."""
    if kind is Signature.NONE:
        return None
    authorization = request.headers.get("Authorization")
    client = check_gs2(authorization) if signing.is_gs2(authorization) else _reference(kind, view_args)
    if not client.enabled:
        raise disabled(client)
    g.client = client
    return client


def signed(kind: Signature, view: Callable) -> Callable:
    """``view``, checking the signature of ``kind`` before it runs (``view`` itself for Signature.NONE)."""
    if kind is Signature.NONE:
        return view

    @functools.wraps(view)
    def checked(*args, **kwargs):
        require(kind, kwargs)
        return view(*args, **kwargs)
    return checked
