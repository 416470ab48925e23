"""workers.shards: cutting a stage into Batch API files by request count and bytes, on SQLite."""
from __future__ import annotations

from sqlalchemy import select, update

from database.models import BatchJob, BatchLot, OpenAIBatch
from services.batches import ShardCutter, request_line
from tests.unit.conftest import EchoStage, job_with_lots, lots_of
from workers import leases
from workers.leases import Lease
from workers.shards import ShardManager


def test_the_cutter_ends_a_shard_at_the_count_or_the_bytes():
    cutter = ShardCutter(max_requests=3, max_bytes=100)
    assert cutter.fits(500)  # an empty shard takes any line, however long
    cutter.add(500)
    assert not cutter.fits(1)
    cutter.reset()
    for _ in range(3):
        assert cutter.fits(10)
        cutter.add(10)
    assert not cutter.fits(10)  # a fourth request


def planned(db, job, max_requests, max_bytes, notes=None):
    if notes:
        with db.transaction() as session:
            for seq, note in notes.items():
                session.execute(update(BatchLot).where(BatchLot.job_id == job.id, BatchLot.seq == seq)
                                .values(additional_info=note))
    with db.session() as session:
        assert leases.claim(session, BatchJob, BatchJob.id == job.id, BatchJob.id, 1, "worker-1", 30) == [job.id]
    lease = Lease(db, BatchJob, job.id, "worker-1", 30)
    manager = ShardManager(db, None, EchoStage(None, job, 2), max_requests, max_bytes, lease,
                           lambda session, usage: None)
    created = manager.plan()
    with db.session() as session:
        shards = session.execute(select(OpenAIBatch.shard, OpenAIBatch.request_count, OpenAIBatch.status)
                                 .where(OpenAIBatch.job_id == job.id).order_by(OpenAIBatch.shard)).all()
    return created, [tuple(row) for row in shards], [lot.vision_shard for lot in lots_of(db, job.id)]


def test_plan_cuts_by_request_count(db):
    job = job_with_lots(db, 7)
    created, shards, assigned = planned(db, job, max_requests=3, max_bytes=10**6)
    assert created == 3
    assert shards == [(0, 3, "building"), (1, 3, "building"), (2, 1, "building")]
    assert assigned == [0, 0, 0, 1, 1, 1, 2]


def test_plan_cuts_by_bytes(db):
    job = job_with_lots(db, 4)
    line = len(request_line(0, {"note": ""}))
    long_note = "x" * 200
    # two short lines fit under the limit; the long one needs a shard of its own
    created, shards, assigned = planned(db, job, max_requests=100, max_bytes=2 * line + 5, notes={2: long_note})
    assert (created, assigned) == (3, [0, 0, 1, 2])
    assert [count for _, count, _ in shards] == [2, 1, 1]


def test_plan_only_takes_waiting_unassigned_lots_and_numbers_shards_on(db):
    job = job_with_lots(db, 4)
    planned(db, job, max_requests=2, max_bytes=10**6)
    with db.transaction() as session:  # lot 1 failed its line and waits for a later shard
        session.execute(update(BatchLot).where(BatchLot.job_id == job.id, BatchLot.seq == 1)
                        .values(vision_shard=None, vision_attempts=1))
        session.execute(update(BatchLot).where(BatchLot.job_id == job.id, BatchLot.seq == 3).values(status="failed"))
    lease = Lease(db, BatchJob, job.id, "worker-1", 30)
    manager = ShardManager(db, None, EchoStage(None, job, 2), 2, 10**6, lease, lambda session, usage: None)
    assert manager.plan() == 1
    with db.session() as session:
        retry = session.scalars(select(OpenAIBatch).where(OpenAIBatch.shard == 2)).one()
    assert (retry.request_count, retry.attempt) == (1, 1)
    assert [lot.vision_shard for lot in lots_of(db, job.id)] == [0, 2, 1, 1]


def test_open_shards_are_looked_at_again_after_a_tenth_of_the_youngest_ones_age(db):
    from datetime import timedelta

    from services.clock import utcnow

    job = job_with_lots(db, 4)
    created, _, _ = planned(db, job, max_requests=2, max_bytes=10**6)
    assert created == 2
    lease = Lease(db, BatchJob, job.id, "worker-1", 30)
    manager = ShardManager(db, None, EchoStage(None, job, 2), 2, 10**6, lease, lambda session, usage: None)

    def aged(first: float, second: float) -> None:
        with db.transaction() as session:
            for shard, age in ((0, first), (1, second)):
                session.execute(update(OpenAIBatch).where(OpenAIBatch.job_id == job.id, OpenAIBatch.shard == shard)
                                .values(created_at=utcnow() - timedelta(seconds=age)))

    aged(2, 600)
    assert manager.poll_delay(30.0) == 1.0  # a batch two seconds old: within a second (never sooner)
    aged(120, 600)
    assert 11.9 < manager.poll_delay(30.0) < 12.5  # the youngest is two minutes old: after 12 s
    assert manager.poll_delay(5.0) == 5.0  # never later than the poll interval
    assert manager.poll_delay(0.5) == 0.5  # nor, with a shorter interval, later than it
    aged(3600, 7200)
    assert manager.poll_delay(30.0) == 30.0
    with db.transaction() as session:
        session.execute(update(OpenAIBatch).where(OpenAIBatch.job_id == job.id).values(status="collected"))
    assert manager.poll_delay(30.0) == 30.0  # nothing open: the interval


def test_full_shards_only_leave_the_rest_unread_and_unassigned(db):
    from tests.unit.conftest import EchoStage as Echo

    read: list[int] = []

    class Counting(Echo):
        def request_body(self, lot):
            read.append(lot.seq)
            return super().request_body(lot)

    for count, shards, assigned in ((5, 2, [0, 0, 1, 1, None]), (4, 2, [0, 0, 1, 1]), (1, 0, [None])):
        job = job_with_lots(db, count)
        with db.session() as session:
            assert leases.claim(session, BatchJob, BatchJob.id == job.id, BatchJob.id, 1, "worker-1", 30) == [job.id]
        lease = Lease(db, BatchJob, job.id, "worker-1", 30)
        manager = ShardManager(db, None, Counting(None, job, 2), 2, 10**6, lease, lambda session, usage: None)
        read.clear()
        assert manager.plan(full_only=True) == shards
        assert [lot.vision_shard for lot in lots_of(db, job.id)] == assigned
        assert len(read) <= 2 * shards + 1  # the lots of the full shards and at most the one after them
