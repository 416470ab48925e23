"""Idempotent POSTs: a client's ``Idempotency-Key`` makes a retried request answer what the first one did.

The semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header-07) and Stripe's idempotent requests, both checked on
2026-12-01:

- A key is scoped to one client: the same key from two clients is two requests.
- The first request with a key claims it (a record in ``processing`` state, locked for
  IDEMPOTENCY_LOCK_SECONDS) and, once answered, saves its status code and body for IDEMPOTENCY_TTL.
- A retry with the same key and the same request (its fingerprint: method, path as sent, raw query
  string and the SHA-256 of the raw body) gets the saved answer again; nothing runs twice.
- The same key with another request is a client bug: 422 IDEMPOTENCY_KEY_REUSED (the draft's answer).
- A retry while the first is still being handled: 409 IDEMPOTENCY_KEY_IN_USE with Retry-After.
- A request renews its lock while it runs, so a record whose lock ran out while still ``processing``
  belongs to a request that died (a killed process); the next retry takes it over and runs it again. Job creation is safe to run
  again: the job records its key (services/jobs.py), so the retry finds the job the dead request
  committed instead of making a second one.

Which answers are saved: the view's own 2xx and 4xx answers. A 4xx says the request itself is wrong
(or, for cancel, that the job could not be cancelled), and sending it again will not change that,
so the key keeps answering it. Not saved, so that a retry runs for real: 5xx (an upstream failure, a
timeout or a crash says nothing about the request, and the draft and Stripe both let clients retry
those), 429 (a rate limit or the daily budget refused the request before any work; later it may
pass) and 503 (the queue was full or the database away: the same). An unsaved answer releases the
key, as does any exception the view raises.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from database import Database
from database.models import IdempotencyRecord
from database.upsert import insert_if_absent
from services.clock import utcnow
from services.errors import ServiceError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
PROCESSING = "processing"
DONE = "done"
#: the longest Retry-After of a 409: the first request usually ends long before its lock does
MAX_RETRY_AFTER = 5


# ---- the header ----------------------------------------------------------------------------------

def invalid_key(reason: str) -> ServiceError:
    return ServiceError(400, "INVALID_IDEMPOTENCY_KEY", f"Invalid {HEADER} header: {reason}. Send 1-{MAX_KEY_LENGTH} "
                        "printable ASCII characters, bare or as a quoted string (\"...\"); a UUID v4 is a good key",
                        {"header": HEADER})


def _printable(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _unquote(value: str) -> str:
    """The content of a Structured Field String (RFC 8941 section 3.3.3): ``"..."`` with ``\\"`` and ``\\\\``."""
    if len(value) < 2 or not value.endswith('"'):
        raise invalid_key("a quoted key must end with '\"'")
    out = []
    chars = iter(value[1:-1])
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped not in ('"', "\\"):
                raise invalid_key("inside quotes, '\\' may only escape '\"' or '\\'")
            out.append(escaped)
        elif char == '"':
            raise invalid_key("an unescaped '\"' inside a quoted key")
        elif not _printable(char):
            raise invalid_key("a key holds printable ASCII only")
        else:
            out.append(char)
    return "".join(out)


def parse_key(raw: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header value, None when the header is absent; 400 when malformed.

    The draft sends the key as a Structured Field String (``"8e03978e-..."``); Stripe's clients send it
    bare. Both are accepted and mean the same key.
    """
    if raw is None:
        return None
    value = raw.strip(" \t")
    if not _printable(value):
        raise invalid_key("a key holds printable ASCII only")
    key = _unquote(value) if value.startswith('"') else value
    if not key:
        raise invalid_key("the key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise invalid_key(f"the key is longer than {MAX_KEY_LENGTH} characters")
    return key


def fingerprint(method: str, path: str, query: bytes | str, body: bytes) -> str:
    """What makes two requests the same request: method, path as sent, raw query and the body's hash."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    text = "\n".join([method.upper(), path, query, hashlib.sha256(body).hexdigest()])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def should_save(status_code: int) -> bool:
    """2xx and 4xx answers are kept for the key; 5xx and 429 leave it free for a real retry."""
    return 200 <= status_code < 500 and status_code != 429


# ---- the records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """The key is this request's until it finishes or its lock runs out. ``since`` is when the key was
    first claimed (a job the key's first request created is at least that recent); ``taken_over`` says a
    dead request held it before."""
    client_id: str
    key: str
    since: datetime
    locked_until: datetime
    taken_over: bool = False


@dataclass(frozen=True)
class SavedAnswer:
    status_code: int
    content_type: str
    body: bytes


def reused(key: str) -> ServiceError:
    return ServiceError(422, "IDEMPOTENCY_KEY_REUSED", f"This {HEADER} was sent before with another request "
                        "(method, path, query or body differ); use a new key for a new request",
                        {"header": HEADER, "idempotency_key": key})


def in_use(key: str, wait_seconds: float) -> ServiceError:
    return ServiceError(409, "IDEMPOTENCY_KEY_IN_USE", f"A request with this {HEADER} is still being handled; "
                        "retry after the time in Retry-After to get its answer",
                        {"header": HEADER, "idempotency_key": key},
                        retry_after=max(1, min(MAX_RETRY_AFTER, math.ceil(wait_seconds))))


def _record(client_id: str, key: str):
    return (IdempotencyRecord.client_id == client_id, IdempotencyRecord.key == key)


def begin(db: Database, client_id: str, key: str, fingerprint: str, *, ttl_seconds: float, lock_seconds: float,
          now: datetime | None = None) -> Claim | SavedAnswer:
    """Claim ``key`` for this request, or answer what its first request answered.

    Raises 422 for the same key with another fingerprint and 409 while the first request holds the key.
    Every change is one conditional statement, so two instances racing for a key cannot both win it.
    """
    now = now or utcnow()
    lock = now + timedelta(seconds=lock_seconds)
    fresh = {"client_id": client_id, "key": key, "fingerprint": fingerprint, "state": PROCESSING,
             "locked_until": lock, "status_code": None, "content_type": None, "response_body": None,
             "created_at": now, "expires_at": now + timedelta(seconds=ttl_seconds)}
    for _attempt in range(5):  # each pass loses a race only to a request that changed the record meanwhile
        with db.transaction() as session:
            if insert_if_absent(session, IdempotencyRecord, fresh):
                return Claim(client_id, key, now, lock)
        with db.session() as session:
            found = session.scalars(select(IdempotencyRecord).where(*_record(client_id, key))).one_or_none()
            if found is not None:
                session.expunge(found)
        if found is None:
            continue  # released or pruned since the insert: insert again
        if found.expires_at <= now:
            # past its time to live: the key is free for a new request, whatever it is
            if _replace(db, client_id, key, {IdempotencyRecord.expires_at: found.expires_at}, fresh):
                return Claim(client_id, key, now, lock)
            continue
        if found.fingerprint != fingerprint:
            raise reused(key)
        if found.state == DONE:
            return SavedAnswer(found.status_code, found.content_type or "application/json", found.response_body or b"")
        if found.locked_until is not None and found.locked_until > now:
            raise in_use(key, (found.locked_until - now).total_seconds())
        # the request that claimed it died (its lock ran out): this one takes over, keeping ``since``
        if _replace(db, client_id, key, {IdempotencyRecord.state: PROCESSING,
                                         IdempotencyRecord.locked_until: found.locked_until},
                    {"locked_until": lock}):
            return Claim(client_id, key, found.created_at, lock, taken_over=True)
    raise in_use(key, 1)


def _replace(db: Database, client_id: str, key: str, expected: dict, values: dict) -> bool:
    """Update the record only if it still holds ``expected`` (column -> value); True when it did."""
    with db.transaction() as session:
        conditions = [*_record(client_id, key), *(column == value for column, value in expected.items())]
        changed = session.execute(update(IdempotencyRecord).where(*conditions).values(**values)
                                  .execution_options(synchronize_session=False))
        return changed.rowcount == 1


def _held(claim: Claim):
    return (*_record(claim.client_id, claim.key), IdempotencyRecord.state == PROCESSING,
            IdempotencyRecord.locked_until == claim.locked_until)


def renew(db: Database, claim: Claim, lock_seconds: float, now: datetime | None = None) -> Claim | None:
    """Extend the lock of a request that is still running (a slow single lot: photo checks and two OpenAI
    calls with their retries), so no retry takes its key over; None when the key is no longer its own."""
    lock = (now or utcnow()) + timedelta(seconds=lock_seconds)
    with db.transaction() as session:
        changed = session.execute(update(IdempotencyRecord).where(*_held(claim)).values(locked_until=lock)
                                  .execution_options(synchronize_session=False))
    return replace(claim, locked_until=lock) if changed.rowcount == 1 else None


def finish(db: Database, claim: Claim, status_code: int, content_type: str, body: bytes) -> bool:
    """Save the answer for the key; False when another request took the key over meanwhile (its own
    answer will be the one kept)."""
    with db.transaction() as session:
        changed = session.execute(update(IdempotencyRecord).where(*_held(claim)).values(
            state=DONE, locked_until=None, status_code=status_code, content_type=content_type,
            response_body=body).execution_options(synchronize_session=False))
        return changed.rowcount == 1


def release(db: Database, claim: Claim) -> None:
    """Forget the claim (an answer not worth keeping, or a failure): the next retry runs for real."""
    with db.transaction() as session:
        session.execute(delete(IdempotencyRecord).where(*_held(claim)).execution_options(synchronize_session=False))


def prune(db: Database, now: datetime | None = None) -> int:
    """Delete the records past their time to live (answered or not); returns how many."""
    now = now or utcnow()
    with db.transaction() as session:
        return session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
                               .execution_options(synchronize_session=False)).rowcount or 0
