"""workers.dispatcher scheduling: retry times, each host's share of the pool, and who holds a delivery
after an attempt. No HTTP: a refused URL fails before any connection, and a success is the only
outcome made up here."""
from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from database.models import BatchJob, WebhookDelivery
from services import webhooks
from services.clock import utcnow
from tests.unit.conftest import add_job
from workers import leases
from workers.dispatcher import WebhookDispatcher

REFUSED_URL = "http://127.0.0.1:9/hook"  # a loopback literal: the default policy refuses it before connecting


@pytest.fixture
def dispatcher(runtime):
    dispatcher = WebhookDispatcher(runtime, "worker-1")
    yield dispatcher
    dispatcher.close()


def add_delivery(db, job_id, url=REFUSED_URL, due_in=-1.0, **values) -> int:
    now = utcnow()
    row = dict(batch_job_id=job_id, webhook_url=url, destination=webhooks.destination(url), event="batch_job_completed",
               message_id=f"msg_{uuid.uuid4().hex}", chunk_index=0, chunk_count=1, status="pending", attempt_count=0,
               max_attempts=5, next_attempt_at=now + timedelta(seconds=due_in), created_at=now, updated_at=now)
    row.update(values)
    with db.transaction() as session:
        delivery = WebhookDelivery(**row)
        session.add(delivery)
        session.flush()
        return delivery.id


def delivery(db, delivery_id) -> WebhookDelivery:
    with db.session() as session:
        return session.get(WebhookDelivery, delivery_id)


def failure() -> webhooks.AttemptOutcome:
    return webhooks.AttemptOutcome(success=False, status_code=503, error="HTTP 503", duration_ms=5, excerpt=None)


# ---- retry times -----------------------------------------------------------------------------------

def test_retries_double_from_the_base_then_give_up(db):
    job_id = add_job(db, status="completed", stage="done")
    delivery_id = add_delivery(db, job_id)
    started = utcnow()
    gaps = []
    for attempt in range(1, 6):
        with db.transaction() as session:
            row = session.get(WebhookDelivery, delivery_id)
            webhooks.record_attempt(session, row, attempt, started, failure(), 30.0, 5)
            gaps.append(None if row.next_attempt_at is None else (row.next_attempt_at - started).total_seconds())
    assert gaps == [30, 60, 120, 240, None]
    row = delivery(db, delivery_id)
    assert row.status == "failed" and "gave up after 5 attempts" in row.error_message


def test_a_redelivery_starts_the_schedule_over(db):
    job_id = add_job(db, status="completed", stage="done")
    delivery_id = add_delivery(db, job_id, status="failed", attempt_count=5, next_attempt_at=None)
    webhooks.redeliver(db, str(delivery_id), budget=3)
    started = utcnow()
    with db.transaction() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert (row.status, row.max_attempts) == ("pending", 8)
        webhooks.record_attempt(session, row, 6, started, failure(), 30.0, 3)
        assert (row.next_attempt_at - started).total_seconds() == 30


# ---- the pool's share per host ---------------------------------------------------------------------

def test_each_host_gets_a_share_before_one_host_gets_the_rest(db, dispatcher):
    job_id = add_job(db, status="completed", stage="done")
    for n in range(10):
        add_delivery(db, job_id, url=f"https://busy.test/hook?n={n}", due_in=-2)
    add_delivery(db, job_id, url="https://quiet.test/hook", due_in=-1)
    assert (dispatcher.size, dispatcher.per_host, dispatcher.host_limit) == (8, 2, 6)
    plan = dict(dispatcher._allot(8, Counter()))
    assert plan == {"https://busy.test:443": 6, "https://quiet.test:443": 1}
    # a host already at its limit here gets nothing more, whatever it is owed
    assert dict(dispatcher._allot(2, Counter({"https://busy.test:443": 6}))) == {"https://quiet.test:443": 1}


def test_claiming_follows_the_plan_and_next_due_looks_ahead(db, dispatcher, monkeypatch):
    job_id = add_job(db, status="completed", stage="done")
    ids = [add_delivery(db, job_id, url=f"https://busy.test/{n}") for n in range(3)]
    started = []
    monkeypatch.setattr(dispatcher, "_start", lambda delivery_id, host, keys: started.append((delivery_id, host, keys)))
    assert dispatcher.dispatch_due() == 3
    assert sorted(entry[:2] for entry in started) == [(i, "https://busy.test:443") for i in ids]
    # a job without a client of its own belongs to the implicit one: SHARED_KEY's derived secret signs it
    assert {keys.client_id for _, _, keys in started} == {"default"}
    assert {delivery(db, i).lease_owner for i in ids} == {"worker-1"}
    later = add_delivery(db, job_id, url="https://other.test/", due_in=60)
    due = dispatcher.next_due()
    assert due is not None and due < delivery(db, later).next_attempt_at


# ---- who holds a delivery after its attempt ----------------------------------------------------------

def one_attempt(db, dispatcher) -> tuple[WebhookDelivery | None, WebhookDelivery]:
    """A due delivery claimed by the dispatcher and attempted once: what _attempt returned, and the row after."""
    job_id = add_job(db, status="completed", stage="done")
    delivery_id = add_delivery(db, job_id)
    with db.session() as session:
        assert leases.claim(session, WebhookDelivery, WebhookDelivery.id == delivery_id, WebhookDelivery.id, 1,
                            dispatcher.owner, dispatcher.lease_seconds) == [delivery_id]
        job = session.get(BatchJob, job_id)
    keys = dispatcher._keys_of([delivery_id])[delivery_id]
    kept = dispatcher._attempt(delivery(db, delivery_id), job, b"{}", keys)
    return kept, delivery(db, delivery_id)


def test_a_refused_attempt_gives_the_lease_back_until_its_retry(db, dispatcher):
    kept, row = one_attempt(db, dispatcher)
    assert kept is None and row.attempt_count == 1 and row.error_message.startswith("blocked")
    assert (row.lease_owner, row.lease_expires_at) == (None, None)
    assert row.next_attempt_at > utcnow() + timedelta(seconds=20)


def test_an_attempt_whose_retry_is_due_at_once_stays_with_its_thread(db, dispatcher, runtime):
    runtime.settings.webhook_retry_base_seconds = 0.0
    kept, row = one_attempt(db, dispatcher)
    assert kept is not None and row.lease_owner == "worker-1" and row.lease_expires_at > utcnow()


def test_a_delivered_attempt_leaves_no_lease_and_can_be_redelivered(db, dispatcher, monkeypatch):
    monkeypatch.setattr(dispatcher, "_send", lambda url, body, headers: webhooks.AttemptOutcome(
        success=True, status_code=200, error=None, duration_ms=3, excerpt="ok"))
    kept, row = one_attempt(db, dispatcher)
    assert kept is None and row.status == "delivered" and (row.lease_owner, row.lease_expires_at) == (None, None)
    webhooks.redeliver(db, str(row.id), budget=2)
    with db.session() as session:
        due = session.scalars(select(WebhookDelivery.id).where(dispatcher.due(utcnow() + timedelta(seconds=1)))).all()
    assert due == [row.id] and delivery(db, row.id).lease_owner is None
