"""workers.stages: what an answer writes back, retries and refusals, on SQLite. The stage is the real
Stage with its OpenAI parts (request body, reading an answer) written out (tests.unit.conftest.EchoStage)."""
from __future__ import annotations

from sqlalchemy import update

from database.models import BatchLot
from tests.unit.conftest import EchoStage, job_with_lots, lots_of
from workers.stages import Outcome


def apply(db, stage, outcomes, shard=None):
    with db.transaction() as session:
        return stage.apply(session, outcomes, shard)


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
