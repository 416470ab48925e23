"""Webhooks: which deliveries a finished job owes, their signed payloads, and one attempt at sending.

Deliveries are recorded in the same transaction that ends the job (so none is lost), one per
distinct URL and chunk of at most WEBHOOK_MAX_LOTS_PER_DELIVERY lots. The payload is rebuilt
from the database at each attempt; it does not change once the job has ended.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from database import Database
from database.models import BatchJob, BatchLot, WebhookAttempt, WebhookDelivery
from services import signing
from services.clock import iso, utcnow
from services.netguard import blocked_reason
from services.results import iter_lot_views, summary

USER_AGENT = "Generation-Service/2.0"
SUCCESS_CODES = (200, 201, 202)
EXCERPT_BYTES = 1024
EVENTS = {"completed": "batch_job_completed", "failed": "batch_job_failed", "cancelled": "batch_job_cancelled"}


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
                batch_job_id=job.id, webhook_url=url, event=event, message_id=f"msg_{uuid.uuid4().hex}",
                chunk_index=index, chunk_count=chunks, status="pending", attempt_count=0,
                max_attempts=max_attempts, next_attempt_at=now, created_at=now, updated_at=now))
            created += 1
    return created


def final_hook(settings) -> Callable[[Session, BatchJob], None]:
    """What to do inside the transaction that ends a job: record its webhook deliveries."""
    def hook(session: Session, job: BatchJob) -> None:
        enqueue_deliveries(session, job, settings.webhook_max_retries, settings.webhook_max_lots_per_delivery)
    return hook


def build_payload(db: Database, job: BatchJob, delivery: WebhookDelivery, max_lots: int) -> bytes:
    payload: dict[str, Any] = {
        "event": delivery.event,
        "job_id": job.id,
        "status": job.status,
        "completed_at": iso(job.completed_at),
        "processing_summary": summary(job),
        "lots": list(iter_lot_views(db, job, webhook_url=delivery.webhook_url,
                                    start=delivery.chunk_index * max_lots, limit=max_lots)),
    }
    if job.error_message and job.status != "completed":
        payload["error_message"] = job.error_message
    if delivery.chunk_count > 1:
        payload["chunk"] = {"index": delivery.chunk_index, "count": delivery.chunk_count}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(keys: tuple[str, ...], body: bytes, delivery: WebhookDelivery, attempt: int,
                   timestamp: int | None = None) -> dict[str, str]:
    """The spec's X-Signature plus the Standard Webhooks trio (one v1 signature per current key)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    standard = " ".join(signing.standard_webhook_signature(key, delivery.message_id, timestamp, body) for key in keys)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signature": signing.sign(keys[0], body),
        "X-Delivery-Attempt": str(attempt),
        "X-Job-ID": delivery.batch_job_id,
        "X-Delivery-ID": str(delivery.id),
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }


@dataclass
class AttemptOutcome:
    success: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    excerpt: str | None


def send(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout: float) -> AttemptOutcome:
    """POST once, redirects not followed; success is 200, 201 or 202 only."""
    started = time.monotonic()
    status_code = None
    excerpt = None
    try:
        with client.stream("POST", url, content=body, headers=headers, timeout=timeout,
                           follow_redirects=False) as response:
            status_code = response.status_code
            excerpt = _read_excerpt(response)
        if status_code in SUCCESS_CODES:
            error = None
        elif 300 <= status_code < 400:
            error = f"HTTP {status_code} redirect not followed"
        else:
            error = f"HTTP {status_code}"
    except httpx.TimeoutException:
        error = f"timeout after {timeout:g}s"
    except Exception as exc:  # network errors of every kind end this attempt, never the worker
        reason = blocked_reason(exc)
        error = f"blocked: {reason}" if reason else f"connection error: {type(exc).__name__}"
    duration = int((time.monotonic() - started) * 1000)
    return AttemptOutcome(success=error is None, status_code=status_code, error=error, duration_ms=duration,
                          excerpt=excerpt)


def _read_excerpt(response: httpx.Response) -> str:
    chunks = b""
    for chunk in response.iter_bytes():
        chunks += chunk
        if len(chunks) >= EXCERPT_BYTES:
            break
    return chunks[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def record_attempt(session: Session, delivery: WebhookDelivery, attempt: int, started_at: datetime,
                   outcome: AttemptOutcome, base_seconds: float) -> None:
    """Write the attempt and move the delivery on: delivered, retried later, or failed for good."""
    now = utcnow()
    session.add(WebhookAttempt(delivery_id=delivery.id, attempt_number=attempt, started_at=started_at,
                               duration_ms=outcome.duration_ms, status_code=outcome.status_code,
                               error=outcome.error, response_excerpt=outcome.excerpt))
    delivery.attempt_count = attempt
    delivery.last_attempt_at = started_at
    delivery.last_status_code = outcome.status_code
    delivery.lease_owner = None
    delivery.lease_expires_at = None
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
        delivery.next_attempt_at = started_at + retry_delay(attempt, base_seconds)
        delivery.error_message = outcome.error


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
        } for a in sorted(attempts, key=lambda a: a.attempt_number)],
    }
