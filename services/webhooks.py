"""Webhooks: which deliveries a finished job owes, their signed payloads, one attempt at sending, and
the records a client reads back.

Deliveries are recorded in the same transaction that ends the job (so none is lost), one per
distinct URL and chunk of at most WEBHOOK_MAX_LOTS_PER_DELIVERY lots. The payload is rebuilt
from the database at each attempt; it does not change once the job has ended, so every attempt
of a delivery carries the same bytes under the same ``webhook-id``.

Schedule: attempt 1 at once, then attempt n ``base * 2^(n-2)`` seconds after attempt n-1 began, so a
receiver sees its requests 30, 60, 120, 240 s apart (after an attempt that timed out, the next one
follows as soon as it is due), up to the delivery's ``max_attempts``. A redelivery grants a fresh
budget and starts the schedule over; attempt numbers keep counting, so a delivery's history reads
in order.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from database import Database
from database.models import BatchJob, BatchLot, WebhookAttempt, WebhookDelivery
from services import signing
from services.clients import WebhookKeys
from services.clock import iso, utcnow
from services.errors import ServiceError
from services.jobs import get_job
from services.params import page_params
from services.netguard import blocked_reason, deadline, destination
from services.results import iter_lot_views, summary

USER_AGENT = "Generation-Service/2.0"
SUCCESS_CODES = (200, 201, 202)
EXCERPT_BYTES = 1024
EVENTS = {"completed": "batch_job_completed", "failed": "batch_job_failed", "cancelled": "batch_job_cancelled"}
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
MAX_DELIVERY_ID = 2**31 - 1


# ---- recording what a job owes ------------------------------------------------------------------

def retry_delay(attempts_made: int, base_seconds: float) -> timedelta:
    """Attempt n (n >= 2) follows attempt n-1 by base * 2^(n-2): 30, 60, 120, 240 s by default."""
    return timedelta(seconds=base_seconds * 2 ** (attempts_made - 1))


def enqueue_deliveries(session: Session, job: BatchJob, max_attempts: int, max_lots: int) -> int:
    """Record the deliveries a job that just ended owes; running it twice records nothing new."""
    event = EVENTS[job.status]
    if session.scalar(select(func.count()).select_from(WebhookDelivery)
                      .where(WebhookDelivery.batch_job_id == job.id, WebhookDelivery.event == event)):
        return 0
    counts = session.execute(select(BatchLot.webhook_url, func.count()).where(
        BatchLot.job_id == job.id, BatchLot.webhook_url.is_not(None)).group_by(BatchLot.webhook_url)).all()
    now = utcnow()
    created = 0
    for url, count in sorted(counts):
        chunks = max(1, math.ceil(count / max_lots))
        for index in range(chunks):
            session.add(WebhookDelivery(
                batch_job_id=job.id, webhook_url=url, destination=destination(url), event=event, message_id=f"msg_{uuid.uuid4().hex}",
                chunk_index=index, chunk_count=chunks, status="pending", attempt_count=0,
                max_attempts=max_attempts, next_attempt_at=now, created_at=now, updated_at=now))
            created += 1
    return created


def final_hook(settings) -> Callable[[Session, BatchJob], None]:
    """What to do inside the transaction that ends a job: record its webhook deliveries."""
    def hook(session: Session, job: BatchJob) -> None:
        enqueue_deliveries(session, job, settings.webhook_max_retries, settings.webhook_max_lots_per_delivery)
    return hook


# ---- the payload ------------------------------------------------------------------------------

def build_payload(db: Database, job: BatchJob, delivery: WebhookDelivery) -> bytes:
    """The exact bytes every attempt of ``delivery`` sends (and signs)."""
    payload: dict[str, Any] = {
        "event": delivery.event,
        "job_id": job.id,
        "status": job.status,
        "completed_at": iso(job.completed_at),
        "processing_summary": summary(job),
        "lots": list(chunk_lot_views(db, job, delivery)),
    }
    if job.error_message and job.status != "completed":
        payload["error_message"] = job.error_message
    if delivery.chunk_count > 1:
        payload["chunk"] = {"index": delivery.chunk_index, "count": delivery.chunk_count}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def chunk_lot_views(db: Database, job: BatchJob, delivery: WebhookDelivery) -> Iterator[dict[str, Any]]:
    """The lots of ``delivery``'s URL and chunk, in request order.

    The chunk size is derived from the recorded chunk count (not from the current setting), so the
    chunks of one delivery set always partition the URL's lots exactly, even across a config change.
    The chunk's first lot is found by an index seek, so chunk 49 of a 50,000-lot job does not read
    the 49,000 lots before it.
    """
    of_url = BatchLot.webhook_url == delivery.webhook_url
    if delivery.chunk_count <= 1:
        yield from iter_lot_views(db, job, of_url)
        return
    with db.session() as session:
        mine = (BatchLot.job_id == job.id) & of_url
        total = session.scalar(select(func.count()).select_from(BatchLot).where(mine)) or 0
        size = math.ceil(total / max(1, delivery.chunk_count))
        first = session.scalar(select(BatchLot.seq).where(mine).order_by(BatchLot.seq)
                               .offset(delivery.chunk_index * size).limit(1))
    if first is None:
        return
    yield from iter_lot_views(db, job, of_url, first, size)


def signed_headers(keys: WebhookKeys, body: bytes, delivery: WebhookDelivery, attempt: int,
                   timestamp: int | None = None) -> dict[str, str]:
    """The spec's X-Signature plus the Standard Webhooks trio, signed for the client that owns the job.

    X-Signature is ``sha256=`` + hex HMAC-SHA256 of the body under ``keys.x_signature_key`` (SHARED_KEY
    for the implicit client, as the reference documents it; a named client's webhook secret string);
    ``webhook-signature`` holds one ``v1,`` signature per webhook secret (the current one first, then
    any kept through a rotation), keyed by the bytes the ``whsec_`` secret encodes.
    """
    timestamp = int(time.time()) if timestamp is None else timestamp
    standard = " ".join(signing.standard_webhook_signature(secret, delivery.message_id, timestamp, body)
                        for secret in keys.secrets)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signature": signing.sign(keys.x_signature_key, body),
        "X-Delivery-Attempt": str(attempt),
        "X-Job-ID": delivery.batch_job_id,
        "X-Delivery-ID": str(delivery.id),
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }


# ---- one attempt ------------------------------------------------------------------------------

@dataclass
class AttemptOutcome:
    success: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    excerpt: str | None


def blocked_outcome(reason: str) -> AttemptOutcome:
    return AttemptOutcome(success=False, status_code=None, error=f"blocked: {reason}", duration_ms=0, excerpt=None)


def unsigned_outcome(job_id: str) -> AttemptOutcome:
    """Not sent: the job's client no longer exists, so there is no secret to sign its webhook with."""
    return AttemptOutcome(success=False, status_code=None, error=f"not sent: no webhook secret for the client of job "
                          f"{job_id}", duration_ms=0, excerpt=None)


def send(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout: float) -> AttemptOutcome:
    """POST once, redirects not followed; success is 200, 201 or 202 only.

    ``timeout`` bounds the whole attempt (connect, sending the body, the answer's headers and
    excerpt) by the wall clock, so a receiver that drips a byte a second is cut at it.
    """
    started = time.monotonic()
    status_code = None
    excerpt = None
    try:
        with deadline(timeout), client.stream("POST", url, content=body, timeout=timeout, follow_redirects=False,
                                              headers={**headers, "Accept-Encoding": "identity"}) as response:
            status_code = response.status_code
            excerpt = _read_excerpt(response)
        error = _status_error(status_code)
    except httpx.TimeoutException:
        error = f"timeout after {timeout:g}s"
    except Exception as exc:  # network errors of every kind end this attempt, never the worker
        reason = blocked_reason(exc)
        error = f"blocked: {reason}" if reason else f"connection error: {type(exc).__name__}"
    duration = int((time.monotonic() - started) * 1000)
    return AttemptOutcome(success=error is None, status_code=status_code, error=error, duration_ms=duration,
                          excerpt=excerpt)


def _status_error(status_code: int) -> str | None:
    if status_code in SUCCESS_CODES:
        return None
    if 300 <= status_code < 400:
        return f"HTTP {status_code} redirect not followed"
    return f"HTTP {status_code}"


def _read_excerpt(response: httpx.Response) -> str:
    """The first KB of the answer as sent: raw bytes, never decompressed (a small gzip answer
    cannot inflate here), and no NUL, which a PostgreSQL text column refuses."""
    chunks = b""
    for chunk in response.iter_raw(EXCERPT_BYTES):
        chunks += chunk
        if len(chunks) >= EXCERPT_BYTES:
            break
    return chunks[:EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def record_attempt(session: Session, delivery: WebhookDelivery, attempt: int, started_at: datetime,
                   outcome: AttemptOutcome, base_seconds: float, budget: int) -> None:
    """Write the attempt and move the delivery on: delivered, retried later, or failed for good.
    Its lease is the caller's to keep or give back (workers.leases), in the same transaction.

    ``budget`` is the number of attempts a round (the first, or one started by a redelivery) may
    make; the retry delay grows with the attempts made in the current round only.
    """
    now = utcnow()
    session.add(WebhookAttempt(delivery_id=delivery.id, attempt_number=attempt, started_at=started_at,
                               duration_ms=outcome.duration_ms, status_code=outcome.status_code,
                               error=outcome.error, response_excerpt=outcome.excerpt))
    delivery.attempt_count = attempt
    delivery.last_attempt_at = started_at
    delivery.last_status_code = outcome.status_code
    delivery.updated_at = now
    if outcome.success:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        delivery.error_message = None
    elif attempt >= delivery.max_attempts:
        delivery.status = "failed"
        delivery.next_attempt_at = None
        delivery.error_message = f"{outcome.error} (gave up after {attempt} attempts)"
    else:
        in_round = max(1, attempt - max(0, delivery.max_attempts - budget))
        delivery.next_attempt_at = started_at + retry_delay(in_round, base_seconds)
        delivery.error_message = outcome.error


# ---- what clients read and ask for ------------------------------------------------------------

def delivery_view(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "batch_job_id": delivery.batch_job_id,
        "webhook_url": delivery.webhook_url,
        "event": delivery.event,
        "webhook_id": delivery.message_id,
        "chunk": {"index": delivery.chunk_index, "count": delivery.chunk_count},
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "max_attempts": delivery.max_attempts,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_attempt_at": iso(delivery.last_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
        "last_status_code": delivery.last_status_code,
        "error_message": delivery.error_message,
        "attempts": [{
            "attempt": a.attempt_number, "started_at": iso(a.started_at), "duration_ms": a.duration_ms,
            "status_code": a.status_code, "error": a.error, "response_excerpt": a.response_excerpt,
        } for a in sorted(attempts, key=lambda a: (a.attempt_number, a.id))],
    }


def parse_page(args) -> dict[str, int]:
    """``limit`` and ``offset`` of a delivery listing."""
    return page_params(args, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)


def job_deliveries(db: Database, job_id: str, limit: int = LIST_LIMIT_DEFAULT, offset: int = 0,
                   client_id: str | None = None) -> dict[str, Any]:
    """A job's deliveries (oldest first) with every attempt; 404 JOB_NOT_FOUND for an unknown job (or, with
    ``client_id``, another client's)."""
    job = get_job(db, job_id, client_id)
    with db.session() as session:
        total = session.scalar(select(func.count()).select_from(WebhookDelivery)
                               .where(WebhookDelivery.batch_job_id == job.id)) or 0
        deliveries = session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_job_id == job.id)
                                     .order_by(WebhookDelivery.id).limit(limit).offset(offset)).all()
        attempts = _attempts_of(session, [d.id for d in deliveries])
    return {
        "job_id": job.id,
        "status": job.status,
        "deliveries": [delivery_view(d, attempts.get(d.id, [])) for d in deliveries],
        "pagination": {"limit": limit, "offset": offset, "total": total,
                       "has_more": offset + len(deliveries) < total},
    }


def _attempts_of(session: Session, delivery_ids: list[int]) -> dict[int, list[WebhookAttempt]]:
    found: dict[int, list[WebhookAttempt]] = {}
    if delivery_ids:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))):
            found.setdefault(attempt.delivery_id, []).append(attempt)
    return found


def delivery_not_found(delivery_id: str) -> ServiceError:
    return ServiceError(404, "DELIVERY_NOT_FOUND", f"Webhook delivery {delivery_id} not found",
                        {"delivery_id": delivery_id})


def _delivery_key(delivery_id: str) -> int:
    """The id as the database holds it (a 32-bit integer); anything else cannot name a delivery."""
    digits = delivery_id.isascii() and delivery_id.isdigit() and len(delivery_id) <= len(str(MAX_DELIVERY_ID))
    if not digits or int(delivery_id) > MAX_DELIVERY_ID:
        raise delivery_not_found(delivery_id)
    return int(delivery_id)


def redeliver(db: Database, delivery_id: str, budget: int, client_id: str | None = None) -> dict[str, Any]:
    """Put a delivered or failed delivery back in the queue with ``budget`` more attempts.

    It keeps its webhook-id, so a receiver that deduplicates will see it as the same message;
    409 DELIVERY_PENDING while it is still queued (its own retries are not cut short), 404 if unknown
    (or, with ``client_id``, a delivery of another client's job).
    """
    key = _delivery_key(delivery_id)
    now = utcnow()
    with db.transaction() as session:
        delivery = session.get(WebhookDelivery, key, with_for_update=True)
        if delivery is not None and client_id is not None:
            owner = session.scalar(select(BatchJob.client_id).where(BatchJob.id == delivery.batch_job_id))
            if owner != client_id:
                delivery = None
        if delivery is None:
            raise delivery_not_found(delivery_id)
        if delivery.status == "pending":
            raise ServiceError(409, "DELIVERY_PENDING",
                               "This delivery is still queued: it will be sent again without being asked",
                               {"delivery_id": delivery.id, "next_attempt_at": iso(delivery.next_attempt_at)},
                               error="Delivery is pending", extra={"status": delivery.status})
        # a delivery that is not pending holds no lease: the attempt that ended it gave the lease back
        delivery.status = "pending"
        delivery.max_attempts = delivery.attempt_count + budget
        delivery.next_attempt_at = now
        delivery.delivered_at = None
        delivery.error_message = None
        delivery.updated_at = now
        attempts = _attempts_of(session, [delivery.id]).get(delivery.id, [])
    return delivery_view(delivery, attempts)
