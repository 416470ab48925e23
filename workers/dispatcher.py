"""Sends due webhook deliveries through a bounded pool, one claimed attempt at a time.

A delivery is claimed (leased) before its attempt and the attempt is recorded after it, in
one transaction with the delivery's next state. A crash in between leaves the lease to expire
and the same attempt to be sent again with the same webhook-id: at least once, never lost.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import func, select

from database.models import BatchJob, WebhookDelivery
from services import webhooks
from services.clock import utcnow
from services.netguard import BlockedURL, guarded_client
from workers import leases

log = logging.getLogger(__name__)


class WebhookDispatcher:
    def __init__(self, runtime, owner: str, on_free_slot=None):
        self.rt = runtime
        self.db = runtime.db
        self.settings = runtime.settings
        self.owner = owner
        self.size = self.settings.webhook_concurrency
        self.pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="webhook")
        self.client = guarded_client(runtime.policy, timeout=self.settings.webhook_timeout, max_connections=self.size)
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._on_free_slot = on_free_slot or (lambda: None)

    @property
    def lease_seconds(self) -> float:
        return self.settings.webhook_timeout + max(30.0, self.settings.worker_lease_seconds)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def due(self, now):
        return (WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= now)

    def dispatch_due(self) -> int:
        """Claim as many due deliveries as the pool has free slots and start them; returns how many."""
        with self._lock:
            free = self.size - len(self._inflight)
        if free <= 0:
            return 0
        with self.db.session() as session:
            ids = leases.claim(session, WebhookDelivery, self.due(utcnow()), WebhookDelivery.next_attempt_at, free,
                               self.owner, self.lease_seconds)
        for delivery_id in ids:
            with self._lock:
                self._inflight.add(delivery_id)
            self.pool.submit(self._deliver_safely, delivery_id)
        return len(ids)

    def next_due(self) -> datetime | None:
        with self.db.session() as session:
            return session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                                  .where(WebhookDelivery.status == "pending",
                                         leases.lease_free(WebhookDelivery, utcnow())))

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _deliver_safely(self, delivery_id: int) -> None:
        try:
            self.deliver(delivery_id)
        except Exception:
            log.exception("webhook delivery %s: attempt could not be made; it will be retried", delivery_id)
        finally:
            with self._lock:
                self._inflight.discard(delivery_id)
            self._on_free_slot()

    def deliver(self, delivery_id: int) -> None:
        with self.db.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            job = session.get(BatchJob, delivery.batch_job_id) if delivery else None
        if delivery is None or job is None or delivery.lease_owner != self.owner:
            return
        attempt = delivery.attempt_count + 1
        max_lots = self.settings.webhook_max_lots_per_delivery
        body = webhooks.build_payload(self.db, job, delivery, max_lots)
        headers = webhooks.signed_headers(self.settings.shared_keys, body, delivery, attempt)
        started = utcnow()
        try:
            self.rt.policy.check_url(delivery.webhook_url)
        except BlockedURL as exc:
            outcome = webhooks.AttemptOutcome(False, None, f"blocked: {exc.reason}", 0, None)
        else:
            outcome = webhooks.send(self.client, delivery.webhook_url, body, headers, self.settings.webhook_timeout)
        with self.db.transaction() as session:
            current = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if current is None or current.lease_owner != self.owner or current.status != "pending":
                return
            webhooks.record_attempt(session, current, attempt, started, outcome,
                                    self.settings.webhook_retry_base_seconds)
            final = current.status
        label = "success" if outcome.success else ("failed" if final == "failed" else "retry")
        self.rt.metrics.webhooks.labels(status=label).inc()
        log.info("webhook_delivery %s job %s attempt %d: %s", delivery_id, job.id, attempt,
                 "delivered" if outcome.success else outcome.error)
