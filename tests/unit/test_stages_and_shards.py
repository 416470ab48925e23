"""workers.stages (what an answer writes back, retries, refusals) and workers.shards (cutting a stage
into Batch API files by request count and bytes), on SQLite. The stage used here is the real Stage
with its OpenAI parts (request body, reading an answer) written out, as those need a model."""
from __future__ import annotations

from sqlalchemy import select, update

from database.models import BatchJob, BatchLot, OpenAIBatch
from services.batches import ShardCutter, request_line
from services.errors import ServiceError
from services.openai_client import Usage
from tests.unit.conftest import add_job, lots_of
from workers import leases
from workers.leases import Lease
from workers.shards import ShardManager
from workers.stages import Outcome, Stage


class EchoStage(Stage):
    """The vision stage's columns and statuses; the request is the lot's note, the answer's text its description."""
    kind = "vision"
    waiting_status = "ready"
    done_status = "described"

    def request_body(self, lot):
        return {"note": lot.additional_info or ""}

    def success_values(self, lot, body):
        if not body.get("text"):
            raise ServiceError(502, "BAD_ANSWER", "empty answer")
        return {"status": "described", "description_en": body["text"]}, [], Usage(input_tokens=10, output_tokens=5)


def job_with_lots(db, count, status="ready"):
    job_id = add_job(db, lots=count, lot_status=status, status="processing", stage="vision")
    with db.session() as session:
        job = session.get(BatchJob, job_id)
    return job


def apply(db, stage, outcomes, shard=None):
    with db.transaction() as session:
        return stage.apply(session, outcomes, shard)


# ---- stages --------------------------------------------------------------------------------------

def test_apply_writes_only_lots_still_waiting_for_the_stage(db):
    job = job_with_lots(db, 3)
    with db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job.id, BatchLot.seq == 2)
                        .values(status="failed", error_message="photos"))
    stage = EchoStage(None, job, max_attempts=2)
    usage = apply(db, stage, [Outcome(seq, body={"text": f"<p>{seq}</p>"}) for seq in range(3)])
    lots = lots_of(db, job.id)
    assert [(lot.status, lot.description_en) for lot in lots] == \
        [("described", "<p>0</p>"), ("described", "<p>1</p>"), ("failed", None)]
    assert usage.input_tokens == 20 and lots[0].input_tokens == 10
    # the same answers collected again (after a crash) change nothing and cost nothing
    assert apply(db, stage, [Outcome(0, body={"text": "<p>again</p>"})]).empty
    assert lots_of(db, job.id)[0].description_en == "<p>0</p>"


def test_a_failed_line_goes_to_a_later_shard_until_its_attempts_are_spent(db):
    job = job_with_lots(db, 1)
    with db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job.id).values(vision_shard=0))
    stage = EchoStage(None, job, max_attempts=2)
    apply(db, stage, [Outcome(0, error="server_error")], shard=0)
    [lot] = lots_of(db, job.id)
    assert (lot.status, lot.vision_shard, lot.vision_attempts) == ("ready", None, 1)
    apply(db, stage, [Outcome(0, body={})])  # an unusable answer is a failure too
    [lot] = lots_of(db, job.id)
    assert (lot.status, lot.vision_attempts) == ("failed", 2) and lot.error_message == "vision failed: empty answer"


def test_a_refused_line_fails_at_once_and_names_the_refusal(db):
    job = job_with_lots(db, 2)
    stage = EchoStage(None, job, max_attempts=3)
    apply(db, stage, [Outcome(0, error="model_not_found: no such model", refused=True), Outcome(1, error="timeout")])
    first, second = lots_of(db, job.id)
    assert (first.status, first.vision_attempts) == ("failed", 1)
    assert (second.status, second.vision_attempts) == ("ready", 1)
    assert stage.refused == "model_not_found: no such model"


def test_apply_within_a_shard_leaves_the_lots_of_other_shards(db):
    job = job_with_lots(db, 2)
    with db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job.id).values(vision_shard=BatchLot.seq))
    apply(db, EchoStage(None, job, 2), [Outcome(0, body={"text": "a"}), Outcome(1, body={"text": "b"})], shard=1)
    assert [lot.status for lot in lots_of(db, job.id)] == ["ready", "described"]


# ---- shards --------------------------------------------------------------------------------------

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
