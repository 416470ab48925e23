"""workers.leases: claiming, renewing, fencing and expiry, on SQLite (serialised writers)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from database.models import BatchJob, BatchLot
from services.clock import utcnow
from tests.unit.conftest import add_job, job_row, lots_of
from workers import leases
from workers.leases import Lease, LeaseLost


def claim(db, condition, owner, limit=10, seconds=30.0, order=BatchJob.next_run_at, model=BatchJob):
    with db.session() as session:
        return leases.claim(session, model, condition, order, limit, owner, seconds)


def test_a_claim_is_exclusive_ordered_and_limited(db):
    now = utcnow()
    first = add_job(db, next_run_at=now - timedelta(seconds=3))
    second = add_job(db, next_run_at=now - timedelta(seconds=2))
    third = add_job(db, next_run_at=now - timedelta(seconds=1))
    assert set(claim(db, BatchJob.status == "pending", "a", limit=2)) == {first, second}  # the earliest due
    assert claim(db, BatchJob.status == "pending", "b") == [third]
    assert claim(db, BatchJob.status == "pending", "c") == []
    assert job_row(db, first).lease_owner == "a" and job_row(db, third).lease_owner == "b"


def test_only_rows_meeting_the_condition_are_claimed(db):
    add_job(db, status="completed")
    wanted = add_job(db)
    assert claim(db, BatchJob.status == "pending", "a") == [wanted]


def test_an_expired_lease_can_be_claimed_by_another(db):
    job_id = add_job(db)
    assert claim(db, BatchJob.id == job_id, "a", seconds=-1) == [job_id]  # lapsed at once
    assert claim(db, BatchJob.id == job_id, "b") == [job_id]
    assert job_row(db, job_id).lease_owner == "b"
    assert claim(db, BatchJob.id == job_id, "a") == []


def test_renew_extends_only_our_leases(db):
    mine, theirs = add_job(db), add_job(db)
    claim(db, BatchJob.id == mine, "a", seconds=5)
    claim(db, BatchJob.id == theirs, "b", seconds=5)
    before = job_row(db, mine).lease_expires_at
    with db.session() as session:
        assert leases.renew(session, BatchJob, [mine, theirs], "a", 60) == 1
    assert job_row(db, mine).lease_expires_at > before + timedelta(seconds=30)
    assert job_row(db, theirs).lease_owner == "b"


def test_release_frees_the_row_and_writes_beside_it_only_for_the_owner(db):
    job_id = add_job(db)
    claim(db, BatchJob.id == job_id, "a")
    later = utcnow() + timedelta(minutes=5)
    with db.session() as session:
        leases.release(session, BatchJob, [job_id], "b", next_run_at=later)
    assert job_row(db, job_id).lease_owner == "a"
    with db.session() as session:
        leases.release(session, BatchJob, [job_id], "a", next_run_at=later)
    job = job_row(db, job_id)
    assert (job.lease_owner, job.lease_expires_at) == (None, None) and job.next_run_at == later


def test_fence_proves_ownership_in_the_writing_transaction(db):
    job_id = add_job(db)
    claim(db, BatchJob.id == job_id, "a", seconds=-1)
    lease = Lease(db, BatchJob, job_id, "a", 30, active=BatchJob.status.in_(("pending", "processing")))
    with db.transaction() as session:
        lease.fence(session)  # our lease, even lapsed, is extended while nobody took it
    assert job_row(db, job_id).lease_expires_at > utcnow()
    with db.transaction() as session:
        session.execute(update(BatchJob).where(BatchJob.id == job_id).values(lease_owner="b"))
    with pytest.raises(LeaseLost):
        with db.transaction() as session:
            lease.fence(session)
            session.execute(update(BatchJob).where(BatchJob.id == job_id).values(error_message="stale write"))
    assert job_row(db, job_id).error_message is None


def test_check_active_refuses_paid_work_for_an_ended_job(db):
    job_id = add_job(db)
    claim(db, BatchJob.id == job_id, "a")
    lease = Lease(db, BatchJob, job_id, "a", 30, active=BatchJob.status.in_(("pending", "processing")))
    lease.check_active()
    with db.transaction() as session:
        session.execute(update(BatchJob).where(BatchJob.id == job_id).values(status="cancelled"))
    with pytest.raises(LeaseLost):
        lease.check_active()


def test_renew_writes_only_once_a_third_of_the_lease_has_passed(db):
    job_id = add_job(db)
    claim(db, BatchJob.id == job_id, "a", seconds=30)
    lease = Lease(db, BatchJob, job_id, "a", 30)
    with db.transaction() as session:
        session.execute(update(BatchJob).where(BatchJob.id == job_id).values(lease_owner="b"))
    lease.renew()  # too soon to ask: nothing is read or written
    lease._renewed -= 11
    with pytest.raises(LeaseLost):
        lease.renew()


def test_rows_kept_given_back_and_freed_in_bulk(db):
    job_id = add_job(db, lots=2)
    ids = claim(db, BatchLot.job_id == job_id, "a", model=BatchLot, order=BatchLot.seq)
    assert len(ids) == 2
    with db.transaction() as session:
        first, second = session.scalars(select(BatchLot).where(BatchLot.id.in_(ids)).order_by(BatchLot.seq))
        leases.keep(first, "b", 60)
        leases.give_back(second)
    first, second = lots_of(db, job_id)
    assert first.lease_owner == "b" and first.lease_expires_at > utcnow() + timedelta(seconds=50)
    assert (second.lease_owner, second.lease_expires_at) == (None, None)
    with db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.id == first.id).values(status="ready", **leases.freed()))
    assert lots_of(db, job_id)[0].lease_owner is None
