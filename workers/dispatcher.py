"""Sends due webhook deliveries through a bounded pool, one claimed attempt at a time.

A delivery is claimed (leased) before its attempt and the attempt is recorded after it, in
one transaction with the delivery's next state. While the attempt runs, its lease is renewed,
so a lease can stay short (WORKER_LEASE_SECONDS) and a dead process's deliveries are taken over
soon after it stops renewing them. A crash between sending and recording leaves the lease to
expire and the same attempt to be sent again with the same webhook-id: at least once, never lost.

Deliveries are claimed up to LEAD_SECONDS before they fall due and sent at their due time, and a
delivery whose next attempt is that close stays with the thread that made the last one, so the
database round trips of claiming and building the payload do not stretch the retry schedule.

The pool is shared fairly between destination hosts (scheme, host and port: every URL string
that points at one receiver counts as that receiver): when several have due deliveries, each is
first given a quarter of the pool (at least one slot), and only what is left goes to those with
more work; no host ever holds more than three quarters. So a receiver that is slow or times out,
however many deliveries or URL spellings it is owed, always leaves room for everyone else, and
one busy receiver alone still gets most of the pool. Every attempt ends by WEBHOOK_TIMEOUT on the
wall clock (see services.webhooks.send), so even a receiver that drips its answer frees its
slots on time.

Each delivery is signed for the client that owns its job (services.clients.WebhookKeys): the secrets of
every delivery of a claim are read together, in one statement, when the claim is made.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import func, select

from database.models import BatchJob, WebhookDelivery
from services import webhooks
from services.clients import WebhookKeys, delivery_webhook_keys
from services.clock import utcnow
from services.netguard import BlockedURL, guarded_client
from workers import leases

log = logging.getLogger(__name__)

HOST_SHARE = 4
LEAD_SECONDS = 0.5
# rows recorded before deliveries carried their destination fall back to their URL
_HOST = func.coalesce(WebhookDelivery.destination, WebhookDelivery.webhook_url)


class WebhookDispatcher:
    def __init__(self, runtime, owner: str, on_free_slot=None):
        self.rt = runtime
        self.db = runtime.db
        self.settings = runtime.settings
        self.owner = owner
        self.size = self.settings.webhook_concurrency
        self.per_host = max(1, self.size // HOST_SHARE)
        self.host_limit = max(self.per_host, self.size - self.per_host)
        self.pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="webhook")
        self.client = guarded_client(runtime.policy, timeout=self.settings.webhook_timeout, max_connections=self.size)
        self._inflight: dict[int, tuple[str, Future]] = {}  # delivery id -> (host, attempt)
        self._lock = threading.Lock()
        self._on_free_slot = on_free_slot or (lambda: None)
        self._closed = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def lease_seconds(self) -> float:
        return self.settings.worker_lease_seconds

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._inflight)

    def due(self, now):
        return (WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= now)

    # ---- claiming ----------------------------------------------------------------------------
    def dispatch_due(self) -> int:
        """Claim as many due deliveries as the pool has free slots (within each host's share) and start them."""
        with self._lock:
            free = self.size - len(self._inflight)
            per_host = Counter(host for host, _ in self._inflight.values())
        if free <= 0 or self._closed.is_set():
            return 0
        claimed: list[tuple[int, str]] = []
        for host, wanted in self._allot(free, per_host):
            of_host = self.due(self._horizon()) & (_HOST == host)
            with self.db.session() as session:
                ids = leases.claim(session, WebhookDelivery, of_host, WebhookDelivery.next_attempt_at, wanted,
                                   self.owner, self.lease_seconds)
            claimed += [(delivery_id, host) for delivery_id in ids]
        if not claimed:
            return 0
        keys = self._keys_of([delivery_id for delivery_id, _ in claimed])
        for delivery_id, host in claimed:
            self._start(delivery_id, host, keys.get(delivery_id))
        return len(claimed)

    def _keys_of(self, delivery_ids: list[int]) -> dict[int, WebhookKeys]:
        """What each claimed delivery is signed with: its job's client's secrets, read for the whole
        claim in one statement (never one client lookup per delivery)."""
        return delivery_webhook_keys(self.db, self.settings, delivery_ids)

    @staticmethod
    def _horizon() -> datetime:
        return utcnow() + timedelta(seconds=LEAD_SECONDS)

    def _allot(self, free: int, per_host: Counter) -> list[tuple[str, int]]:
        """How many due deliveries to claim for each destination host: first a fair share each, earliest
        due first, then what is left to hosts with more work, up to the limit any one host may hold.

        Hosts are counted as scheme, host and port (``destination``), however many URL strings point
        at them, so ``?n=1`` .. ``?n=32`` on one receiver share one host's share."""
        now = utcnow()
        with self.db.session() as session:
            rows = session.execute(
                select(_HOST, func.count())
                .where(self.due(self._horizon()), leases.lease_free(WebhookDelivery, now),
                       _HOST.not_in(self._full_hosts(per_host)))
                .group_by(_HOST)
                .order_by(func.min(WebhookDelivery.next_attempt_at))
                .limit(free)).all()
        plan: Counter = Counter()
        for cap in (self.per_host, self.host_limit):
            for host, count in rows:
                take = min(count - plan[host], cap - per_host[host] - plan[host], free)
                if take > 0:
                    plan[host] += take
                    free -= take
        return list(plan.items())

    def _start(self, delivery_id: int, host: str, keys: WebhookKeys | None) -> None:
        self._ensure_renewer()
        with self._lock:
            future = self.pool.submit(self._deliver_safely, delivery_id, keys)
            self._inflight[delivery_id] = (host, future)

    def _full_hosts(self, per_host: Counter | None = None) -> list[str]:
        if per_host is None:
            with self._lock:
                per_host = Counter(host for host, _ in self._inflight.values())
        return [host for host, count in per_host.items() if count >= self.host_limit]

    def next_due(self) -> datetime | None:
        """When a delivery next falls due here: the earliest free one whose host may take a slot here,
        or the end of another process's lease. A host at its limit wakes the loop when a slot frees."""
        now = utcnow()
        pending = WebhookDelivery.status == "pending"
        with self.db.session() as session:
            free = session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                                  .where(pending, leases.lease_free(WebhookDelivery, now),
                                         _HOST.not_in(self._full_hosts())))
            held = session.scalar(select(func.min(WebhookDelivery.lease_expires_at))
                                  .where(pending, WebhookDelivery.lease_expires_at >= now,
                                         WebhookDelivery.lease_owner != self.owner))
        if free is not None:
            free -= timedelta(seconds=LEAD_SECONDS)
        return min((t for t in (free, held) if t is not None), default=None)

    # ---- leases of attempts in flight ----------------------------------------------------------
    def _ensure_renewer(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="webhook-leases", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Every third of a lease, extend the leases of the attempts under way, until closed and idle."""
        while not (self._closed.is_set() and self.busy == 0):
            time.sleep(self.lease_seconds / 3)
            with self._lock:
                ids = list(self._inflight)
            if not ids:
                continue
            try:
                with self.db.session() as session:
                    leases.renew(session, WebhookDelivery, ids, self.owner, self.lease_seconds)
            except Exception:
                log.exception("could not renew the leases of %d webhook deliveries", len(ids))

    def close(self) -> None:
        """Stop: deliveries claimed but not started go back to the queue at once; attempts under way
        finish (and are recorded) before the HTTP client is closed under them."""
        self._closed.set()
        with self._lock:
            unstarted = [key for key, (_, future) in self._inflight.items() if future.cancel()]
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._release(unstarted)
        threading.Thread(target=self._close_client_when_idle, name="webhook-close", daemon=True).start()

    def _close_client_when_idle(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def _release(self, ids: list[int]) -> None:
        if not ids:
            return
        try:
            with self.db.session() as session:
                leases.release(session, WebhookDelivery, ids, self.owner)
        except Exception:
            log.warning("could not release %d webhook deliveries; their leases will expire", len(ids))

    # ---- one attempt ---------------------------------------------------------------------------
    def _deliver_safely(self, delivery_id: int, keys: WebhookKeys | None) -> None:
        try:
            self.deliver(delivery_id, keys)
        except Exception:
            log.exception("webhook delivery %s: attempt could not be made; it will be retried", delivery_id)
        finally:
            with self._lock:
                self._inflight.pop(delivery_id, None)
            self._on_free_slot()

    def deliver(self, delivery_id: int, keys: WebhookKeys | None) -> None:
        """Attempt a claimed delivery, signed with ``keys`` (None: its client has no secret any more)."""
        with self.db.session() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            job = session.get(BatchJob, delivery.batch_job_id) if delivery else None
        if delivery is None or job is None or delivery.lease_owner != self.owner or delivery.status != "pending":
            return
        body = webhooks.build_payload(self.db, job, delivery)
        while delivery is not None:
            delivery = self._attempt(delivery, job, body, keys)

    def _attempt(self, delivery: WebhookDelivery, job: BatchJob, body: bytes,
                 keys: WebhookKeys | None) -> WebhookDelivery | None:
        """Make the delivery's next attempt when it is due and record it.

        Returns the delivery if its following attempt is due within LEAD_SECONDS: it then stays
        claimed by this thread, so a short retry delay is not stretched by claiming it again.
        """
        if not self._wait_until(delivery.next_attempt_at):
            self._release([delivery.id])
            return None
        attempt = delivery.attempt_count + 1
        started = utcnow()
        if keys is None:
            outcome = webhooks.unsigned_outcome(job.id)
        else:
            outcome = self._send(delivery.webhook_url, body, webhooks.signed_headers(keys, body, delivery, attempt))
        with self.db.transaction() as session:
            current = session.get(WebhookDelivery, delivery.id, with_for_update=True)
            if current is None or current.lease_owner != self.owner or current.status != "pending":
                log.warning("webhook_delivery %s: lease lost during attempt %d; not recorded here",
                            delivery.id, attempt)
                return None
            webhooks.record_attempt(session, current, attempt, started, outcome,
                                    self.settings.webhook_retry_base_seconds, self.settings.webhook_max_retries)
            keep = (current.status == "pending" and current.next_attempt_at <= self._horizon()
                    and not self._closed.is_set())
            if keep:
                leases.keep(current, self.owner, self.lease_seconds)
            else:
                leases.give_back(current)
            final = current.status
        label = "success" if outcome.success else ("failed" if final == "failed" else "retry")
        self.rt.metrics.webhooks.labels(status=label).inc()
        log.info("webhook_delivery %s job %s attempt %d: %s", delivery.id, job.id, attempt,
                 "delivered" if outcome.success else outcome.error)
        return current if keep else None

    def _wait_until(self, due: datetime | None) -> bool:
        """Hold a delivery claimed ahead of time until it is due; False if the dispatcher closed meanwhile."""
        wait = (due - utcnow()).total_seconds() if due is not None else 0.0
        return not (wait > 0 and self._closed.wait(wait))

    def _send(self, url: str, body: bytes, headers: dict[str, str]) -> webhooks.AttemptOutcome:
        """The SSRF policy is checked at every attempt: a URL allowed when the job was accepted may not be now."""
        try:
            self.rt.policy.check_url(url)
        except BlockedURL as exc:
            return webhooks.blocked_outcome(exc.reason)
        return webhooks.send(self.client, url, body, headers, self.settings.webhook_timeout)
