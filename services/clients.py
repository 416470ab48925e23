"""Clients: who is calling, with which keys, under which limits, and where its webhooks are signed.

A deployment with only ``SHARED_KEY`` (and ``SHARED_KEYS``) has one implicit client, ``default``, made
from the settings; it has no row. Every other client lives in the ``clients`` table with its keys in
``client_keys`` (several at once, so a key is rotated without downtime: the old one keeps working
until its ``expires_at``). A job belongs to the client whose key created it.

Secrets are kept as given: HMAC needs the secret itself on both sides, so the database must be
protected like the keys it holds.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from database import Database
from database.models import BatchJob, Client, ClientKey, RequestNonce, WebhookDelivery
from database.upsert import insert_if_absent
from services import signing
from services.clock import utcnow
from services.errors import ServiceError

IMPLICIT = "default"
CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)


@dataclass(frozen=True)
class ClientLimits:
    """A client's own limits; None: the deployment's setting applies."""
    rate_limit_sync: str | None = None
    rate_limit_batch: str | None = None
    rate_limit_polling: str | None = None
    max_queued_lots: int | None = None
    max_daily_cost_usd: float | None = None


@dataclass(frozen=True)
class ClientIdentity:
    id: str
    name: str
    enabled: bool
    reference_scheme: bool
    webhook_secret: str
    limits: ClientLimits
    implicit: bool = False


# ---- the implicit client -------------------------------------------------------------------------

def implicit_key_id(secret: str) -> str:
    """The key id of a SHARED_KEY in GS2 signatures: a fingerprint, so it reveals nothing of the key."""
    return "sk_" + hashlib.sha256(b"genservice key id\n" + secret.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=16)  # asked for on every request the implicit client signs
def derived_webhook_secret(shared_key: str) -> str:
    """The implicit client's webhook secret when WEBHOOK_SECRET is unset: derived one way from
    SHARED_KEY, so a receiver that holds it cannot sign API requests."""
    raw = hmac.new(shared_key.encode(), b"genservice webhook secret", hashlib.sha256).digest()[:24]
    return "whsec_" + base64.b64encode(raw).decode()


def implicit_client(settings) -> ClientIdentity:
    secret = settings.webhook_secret or (derived_webhook_secret(settings.shared_key) if settings.shared_keys else "")
    return ClientIdentity(IMPLICIT, "SHARED_KEY", bool(settings.shared_keys), settings.reference_signatures,
                          secret, ClientLimits(), implicit=True)


# ---- lookups (every request) ---------------------------------------------------------------------

_LIMIT_FIELDS = tuple(ClientLimits.__dataclass_fields__)
#: what a request's identity is read from, in one statement without an ORM session
IDENTITY_COLUMNS = (Client.id, Client.name, Client.enabled, Client.reference_scheme, Client.webhook_secret,
                    *(getattr(Client, field) for field in _LIMIT_FIELDS))


def _identity(row) -> ClientIdentity:
    """From a Client, or from a row of IDENTITY_COLUMNS."""
    if isinstance(row, Client):
        row = tuple(getattr(row, column.key) for column in IDENTITY_COLUMNS)
    return ClientIdentity(row[0], row[1], row[2], row[3], row[4], ClientLimits(*row[5:5 + len(_LIMIT_FIELDS)]))


def _active(now: datetime):
    return or_(ClientKey.expires_at.is_(None), ClientKey.expires_at > now)


def find_key(db: Database, settings, client_id: str, key_id: str, now: datetime | None = None
             ) -> tuple[ClientIdentity, str] | None:
    """The client and secret a GS2 credential names, when that key exists and has not expired."""
    if client_id == IMPLICIT:
        for secret in settings.shared_keys:
            if hmac.compare_digest(implicit_key_id(secret), key_id):
                return implicit_client(settings), secret
        return None
    now = now or utcnow()
    with db.read() as connection:
        row = connection.execute(
            select(*IDENTITY_COLUMNS, ClientKey.secret).join(ClientKey, ClientKey.client_id == Client.id)
            .where(Client.id == client_id, ClientKey.id == key_id, _active(now))).first()
    return (_identity(row[:-1]), row[-1]) if row else None


def reference_candidates(db: Database, settings, now: datetime | None = None) -> list[tuple[ClientIdentity, str]]:
    """Every (client, secret) a reference-scheme signature may be made with: the implicit client's keys
    when it accepts the scheme, and the active keys of clients set to accept it."""
    implicit = implicit_client(settings)
    found = [(implicit, key) for key in settings.shared_keys] if implicit.reference_scheme else []
    return found + named_reference_candidates(db, now)


def named_reference_candidates(db: Database, now: datetime | None = None) -> list[tuple[ClientIdentity, str]]:
    """The active keys of the clients (not the implicit one) set to accept the reference's scheme."""
    now = now or utcnow()
    with db.read() as connection:
        rows = connection.execute(
            select(*IDENTITY_COLUMNS, ClientKey.secret).join(ClientKey, ClientKey.client_id == Client.id)
            .where(Client.reference_scheme.is_(True), _active(now))).all()
    return [(_identity(row[:-1]), row[-1]) for row in rows]


def remember_nonce(db: Database, client_id: str, nonce: str, expires_at: datetime) -> bool:
    """True the first time a (client, nonce) is seen inside the window, False for a replay. One row per
    nonce in the shared database, so every instance sees every other's."""
    with db.transaction() as session:
        return insert_if_absent(session, RequestNonce, {"client_id": client_id, "nonce": nonce,
                                                        "expires_at": expires_at})


def prune(db: Database, now: datetime | None = None) -> int:
    """Forget nonces whose window has passed; returns how many."""
    now = now or utcnow()
    with db.transaction() as session:
        return session.execute(delete(RequestNonce).where(RequestNonce.expires_at <= now)).rowcount or 0


# ---- management (genservice clients ...) ---------------------------------------------------------

def new_key_secret() -> str:
    return "gsk_" + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class IssuedKey:
    client_id: str
    key_id: str
    secret: str


def _require_id(client_id: str) -> None:
    if client_id == IMPLICIT or not isinstance(client_id, str) or CLIENT_ID.fullmatch(client_id) is None:
        raise ServiceError(400, "VALIDATION_ERROR", "A client id is 1-64 characters of a-z, 0-9, '.', '_' and '-', "
                           f"starting with a letter or digit, and not {IMPLICIT!r}", {"field": "client_id"})


def _get(session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise ServiceError(404, "CLIENT_NOT_FOUND", f"Client {client_id} not found", {"client_id": client_id})
    return client


def add_client(db: Database, client_id: str, name: str = "", *, reference_scheme: bool = False,
               limits: ClientLimits = ClientLimits(), webhook_secret: str | None = None) -> IssuedKey:
    _require_id(client_id)
    if webhook_secret is not None:
        _require_webhook_secret(webhook_secret)
    now = utcnow()
    issued = IssuedKey(client_id, new_key_id(), new_key_secret())
    with db.transaction() as session:
        if session.get(Client, client_id) is not None:
            raise ServiceError(409, "CLIENT_EXISTS", f"Client {client_id} exists already", {"client_id": client_id})
        session.add(Client(id=client_id, name=name, enabled=True, reference_scheme=reference_scheme,
                           webhook_secret=webhook_secret or new_webhook_secret(), created_at=now, updated_at=now,
                           **limits.__dict__))
        session.flush()
        session.add(ClientKey(id=issued.key_id, client_id=client_id, secret=issued.secret, created_at=now))
    return issued


def rotate_key(db: Database, client_id: str, grace: timedelta = timedelta(hours=24)) -> IssuedKey:
    """A new key, valid at once; the client's other keys keep working for ``grace`` (none: at once)."""
    now = utcnow()
    issued = IssuedKey(client_id, new_key_id(), new_key_secret())
    with db.transaction() as session:
        _get(session, client_id)
        ends = now + grace
        session.execute(update(ClientKey).where(ClientKey.client_id == client_id, _active(now),
                                                or_(ClientKey.expires_at.is_(None), ClientKey.expires_at > ends))
                        .values(expires_at=ends))
        session.add(ClientKey(id=issued.key_id, client_id=client_id, secret=issued.secret, created_at=now))
    return issued


def set_enabled(db: Database, client_id: str, enabled: bool) -> None:
    with db.transaction() as session:
        _get(session, client_id).enabled = enabled


def update_client(db: Database, client_id: str, **changes) -> ClientIdentity:
    """Change a client's limits, name or reference_scheme (only the given fields)."""
    allowed = {"name", "reference_scheme", *ClientLimits.__dataclass_fields__}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"unknown client fields: {sorted(unknown)}")
    with db.transaction() as session:
        client = _get(session, client_id)
        for field, value in changes.items():
            setattr(client, field, value)
        session.flush()
        return _identity(client)


@dataclass(frozen=True)
class ClientSummary:
    identity: ClientIdentity
    created_at: datetime | None
    keys: tuple[tuple[str, datetime | None], ...]  # (key id, expires_at) of the active keys


def list_clients(db: Database, settings, now: datetime | None = None) -> list[ClientSummary]:
    """The implicit client (when SHARED_KEY is set) first, then every client by id."""
    now = now or utcnow()
    found: list[ClientSummary] = []
    if settings.shared_keys:
        found.append(ClientSummary(implicit_client(settings), None,
                                   tuple((implicit_key_id(k), None) for k in settings.shared_keys)))
    with db.session() as session:
        clients = session.scalars(select(Client).order_by(Client.id)).all()
        keys: dict[str, list] = {}
        for key in session.scalars(select(ClientKey).where(_active(now)).order_by(ClientKey.created_at)):
            keys.setdefault(key.client_id, []).append((key.id, key.expires_at))
        found += [ClientSummary(_identity(c), c.created_at, tuple(keys.get(c.id, ()))) for c in clients]
    return found


def get_client(db: Database, settings, client_id: str) -> ClientIdentity:
    if client_id == IMPLICIT:
        return implicit_client(settings)
    with db.session() as session:
        return _identity(_get(session, client_id))


# ---- webhook secrets (the dispatcher, for each batch of deliveries it claims) -----------------------

@dataclass(frozen=True)
class WebhookKeys:
    """What one client's webhooks are signed with: never an API key, except the implicit client's
    X-Signature, which stays the reference's HMAC under SHARED_KEY for its receivers' sake."""
    client_id: str
    x_signature_key: str       # HMAC key of X-Signature: SHARED_KEY (implicit client), else the webhook secret
    secrets: tuple[str, ...]   # whsec_ secrets, the current one first: one Standard Webhooks v1 signature each


def implicit_webhook_keys(settings) -> WebhookKeys | None:
    """WEBHOOK_SECRET (or the secret derived from SHARED_KEY), then WEBHOOK_SECRETS and, while the
    secret is derived, the secrets derived from the other SHARED_KEYS, so rotating either loses nothing.
    None when the deployment has neither a shared key nor a webhook secret."""
    current = implicit_client(settings).webhook_secret
    derived = () if settings.webhook_secret else tuple(derived_webhook_secret(k) for k in settings.shared_keys[1:])
    found = tuple(dict.fromkeys(s for s in (current, *settings.webhook_secrets, *derived) if s))
    if not found:
        return None
    return WebhookKeys(IMPLICIT, settings.shared_key or found[0], found)


def _named_webhook_keys(client_id: str, current: str, previous: str | None, previous_until: datetime | None,
                        now: datetime) -> WebhookKeys:
    kept = previous if previous and previous_until is not None and previous_until > now else None
    return WebhookKeys(client_id, current, tuple(dict.fromkeys(s for s in (current, kept) if s)))


def delivery_webhook_keys(db: Database, settings, delivery_ids: Iterable[int], now: datetime | None = None
                          ) -> dict[int, WebhookKeys]:
    """The keys each delivery is signed with, read for a whole batch of deliveries in one statement
    (delivery -> its job's client -> that client's secrets). A delivery whose client no longer
    exists is left out: it cannot be signed."""
    ids = list(delivery_ids)
    if not ids:
        return {}
    now = now or utcnow()
    with db.read() as connection:
        rows = connection.execute(
            select(WebhookDelivery.id, BatchJob.client_id, Client.webhook_secret, Client.previous_webhook_secret,
                   Client.previous_webhook_secret_expires_at)
            .join(BatchJob, BatchJob.id == WebhookDelivery.batch_job_id)
            .outerjoin(Client, Client.id == BatchJob.client_id)
            .where(WebhookDelivery.id.in_(ids))).all()
    implicit = implicit_webhook_keys(settings)
    found: dict[int, WebhookKeys] = {}
    for delivery_id, client_id, current, previous, previous_until in rows:
        if client_id == IMPLICIT:
            keys = implicit
        elif current:
            keys = _named_webhook_keys(client_id, current, previous, previous_until, now)
        else:
            keys = None
        if keys is not None:
            found[delivery_id] = keys
    return found


def webhook_secrets(db: Database, settings, client_ids: Iterable[str], now: datetime | None = None
                    ) -> dict[str, WebhookKeys]:
    """The webhook keys of the given clients, by id (unknown clients left out)."""
    wanted = set(client_ids)
    found: dict[str, WebhookKeys] = {}
    if IMPLICIT in wanted and (implicit := implicit_webhook_keys(settings)) is not None:
        found[IMPLICIT] = implicit
    named = wanted - {IMPLICIT}
    if named:
        now = now or utcnow()
        with db.read() as connection:
            for row in connection.execute(select(Client.id, Client.webhook_secret, Client.previous_webhook_secret,
                                                 Client.previous_webhook_secret_expires_at)
                                          .where(Client.id.in_(named))):
                found[row[0]] = _named_webhook_keys(*row, now)
    return found


def _require_webhook_secret(secret: str) -> None:
    try:
        signing.webhook_secret_key(secret)
    except ValueError as error:
        raise ServiceError(400, "VALIDATION_ERROR", f"A webhook secret {error}", {"field": "webhook_secret"}) from None


def rotate_webhook_secret(db: Database, client_id: str, grace: timedelta = timedelta(hours=24),
                          secret: str | None = None) -> str:
    """A new webhook secret (``secret``, or a random one), used at once. For ``grace`` the previous one
    keeps signing too (every webhook then carries one v1 signature per secret), so receivers switch
    without losing a delivery; no grace: it stops at once. Only the secret in use before this
    rotation is kept: rotating again within the grace drops the one before it."""
    if client_id == IMPLICIT:
        raise ServiceError(400, "VALIDATION_ERROR", "The implicit client's webhook secret is WEBHOOK_SECRET; rotate it "
                           "by moving the old one to WEBHOOK_SECRETS", {"client_id": client_id})
    new = secret or new_webhook_secret()
    _require_webhook_secret(new)
    now = utcnow()
    with db.transaction() as session:
        client = _get(session, client_id)
        keep = grace > timedelta(0) and client.webhook_secret != new
        client.previous_webhook_secret = client.webhook_secret if keep else None
        client.previous_webhook_secret_expires_at = now + grace if keep else None
        client.webhook_secret = new
        client.updated_at = now
    return new


__all__ = ["IMPLICIT", "ClientIdentity", "ClientLimits", "IssuedKey", "ClientSummary", "implicit_client",
           "implicit_key_id", "find_key", "reference_candidates", "remember_nonce", "prune", "add_client",
           "rotate_key", "set_enabled", "update_client", "list_clients", "get_client", "webhook_secrets",
           "derived_webhook_secret", "WebhookKeys", "implicit_webhook_keys", "delivery_webhook_keys",
           "rotate_webhook_secret"]
