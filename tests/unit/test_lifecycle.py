"""services.lifecycle: the statuses and stages, the due condition, progress, and every transition."""
from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update

from database.models import JOB_ACTIVE, JOB_FINAL, JOB_STATUSES, BatchJob, CostLedger, WebhookDelivery
from services import lifecycle, webhooks
from services.clock import utcnow
from services.errors import ServiceError
from services.jobs import cancel_job
from services.lifecycle import JobStatus, Stage
from tests.unit.conftest import add_job, job_row, lots_of
from workers import leases
from workers.jobs import JobRunner
from workers.leases import LeaseLost
from workers.watchdog import Watchdog

HOOK_SETTINGS = SimpleNamespace(webhook_max_retries=5, webhook_max_lots_per_delivery=1000)


def deliveries(db, job_id):
    with db.session() as session:
        return session.scalars(select(WebhookDelivery.event).where(WebhookDelivery.batch_job_id == job_id)).all()


def ledger_lots(db) -> int:
    with db.session() as session:
        return session.scalar(select(func.coalesce(func.sum(CostLedger.lots), 0))) or 0


def claimed(db, job_id, owner="worker-1"):
    with db.session() as session:
        assert leases.claim(session, BatchJob, BatchJob.id == job_id, BatchJob.id, 1, owner, 30) == [job_id]


def set_lots(db, job_id, status, seqs):
    from database.models import BatchLot

    with db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job_id, BatchLot.seq.in_(seqs))
                        .values(status=status, processed_images=1))


# ---- names ---------------------------------------------------------------------------------------

def test_statuses_are_the_strings_the_database_and_the_json_carry():
    assert lifecycle.ACTIVE == JOB_ACTIVE and lifecycle.FINAL == JOB_FINAL
    assert tuple(JobStatus) == JOB_STATUSES
    assert json.dumps({"status": JobStatus.CANCELLED, "stage": Stage.CANCELLING}) == \
        '{"status": "cancelled", "stage": "cancelling"}'
    assert f"{JobStatus.PENDING}" == "pending" and Stage("vision") is Stage.VISION


def test_every_stage_has_a_runner_step():
    assert all(callable(getattr(JobRunner, f"stage_{stage}")) for stage in Stage)


def test_public_stage_names_and_an_ended_job_shows_its_status():
    job = SimpleNamespace(stage="vision", status="processing", is_active=True)
    assert lifecycle.public_stage(job) == "vision_analysis"
    job = SimpleNamespace(stage="cancelling", status="cancelled", is_active=False)
    assert lifecycle.public_stage(job) == "cancelled"


# ---- progress ------------------------------------------------------------------------------------

@pytest.mark.parametrize("languages, needs", [(["en"], False), (["en", "en-GB"], False), (["en", "de"], True),
                                              (["pt-BR"], True), ([], False)])
def test_english_needs_no_translation(languages, needs):
    assert lifecycle.needs_translation(languages) is needs


def test_progress_counts_a_unit_per_stage_and_a_failed_lot_as_done_in_both():
    # 10 lots in English and German: 20 units; 4 described, 2 translated, 1 failed (2 units)
    assert lifecycle.progress(10, 4, 1, 2, ["en", "de"]) == pytest.approx((4 + 1 + 2 + 1) / 20)
    assert lifecycle.progress(10, 4, 1, 2, ["en"]) == pytest.approx(5 / 10)
    assert lifecycle.progress(0, 0, 0, 0, ["de"]) == 0.0
    assert lifecycle.progress(2, 2, 0, 3, ["de"]) == 1.0  # never past the end


def test_completion_percentage_is_100_for_a_completed_job_and_rounded_otherwise():
    job = SimpleNamespace(status="processing", total_lots=3, processed_lots=1, failed_lots=0, translated_lots=0,
                          languages=["en", "fr"])
    assert lifecycle.completion_percentage(job) == 16.7
    job.status = "completed"
    assert lifecycle.completion_percentage(job) == 100.0


# ---- when a job is due ---------------------------------------------------------------------------

def test_due_jobs_are_active_or_cancelling_and_past_their_next_run(db):
    now = utcnow()
    due_now = add_job(db, status="processing", stage="vision", next_run_at=now - timedelta(seconds=1))
    later = add_job(db, status="processing", stage="vision", next_run_at=now + timedelta(minutes=1))
    cancelling = add_job(db, status="cancelled", stage="cancelling", next_run_at=now)
    add_job(db, status="completed", stage="done", next_run_at=now)
    add_job(db, status="failed", stage="done", next_run_at=now)
    with db.session() as session:
        due = set(session.scalars(select(BatchJob.id).where(lifecycle.due(now))))
        wanting = set(session.scalars(select(BatchJob.id).where(lifecycle.wants_worker())))
    assert due == {due_now, cancelling}
    assert wanting == {due_now, later, cancelling}
    assert lifecycle.needs_worker(job_row(db, cancelling)) and not lifecycle.needs_worker(
        SimpleNamespace(is_active=False, stage="done"))


# ---- stage changes -------------------------------------------------------------------------------

def test_start_and_move_need_the_lease_and_an_active_job(db):
    job_id = add_job(db, lots=1)
    with db.transaction() as session:
        assert not lifecycle.start(session, job_id, "worker-1")  # not claimed
    claimed(db, job_id)
    with db.transaction() as session:
        assert not lifecycle.start(session, job_id, "someone-else")
        assert lifecycle.start(session, job_id, "worker-1")
    job = job_row(db, job_id)
    assert (job.status, job.stage) == ("processing", "images") and job.started_at is not None
    with db.transaction() as session:
        assert lifecycle.move(session, job_id, "worker-1", Stage.VISION)
    assert job_row(db, job_id).stage == "vision"


def test_after_vision_the_status_says_whether_translations_follow():
    assert lifecycle.after(Stage.VISION, ["en", "de"]) == (Stage.TRANSLATION, JobStatus.TRANSLATING)
    assert lifecycle.after(Stage.VISION, ["en"]) == (Stage.TRANSLATION, JobStatus.PROCESSING)
    assert lifecycle.after(Stage.TRANSLATION, ["de"]) == (Stage.FINALIZING, None)
    with pytest.raises(ValueError):
        lifecycle.after(Stage.IMAGES, ["de"])


def test_outcome_is_completed_when_any_lot_is():
    assert lifecycle.outcome({"completed": 1, "failed": 9}) == (JobStatus.COMPLETED, None)
    status, message = lifecycle.outcome({"failed": 3})
    assert status == JobStatus.FAILED and "No lot" in message


# ---- endings -------------------------------------------------------------------------------------

def test_completing_writes_counters_ledger_and_deliveries_in_one_go(db):
    job_id = add_job(db, lots=3, status="translating", stage="finalizing", webhook="http://hooks.test/a")
    set_lots(db, job_id, "completed", [0, 1])
    set_lots(db, job_id, "failed", [2])
    with db.transaction() as session:
        ended = lifecycle.end(session, job_id, JobStatus.COMPLETED, None, webhooks.final_hook(HOOK_SETTINGS))
    assert ended is not None
    job = job_row(db, job_id)
    assert (job.status, job.stage, job.error_message) == ("completed", "done", None)
    assert (job.processed_lots, job.failed_lots, job.translated_lots, job.total_images_processed) == (2, 1, 2, 3)
    assert job.completed_at is not None and job.cancelled_at is None
    assert deliveries(db, job_id) == ["batch_job_completed"]
    assert ledger_lots(db) == 2


def test_failing_fails_the_unfinished_lots_and_leaves_the_batches_to_cancel(db):
    job_id = add_job(db, lots=3, status="processing", stage="vision")
    set_lots(db, job_id, "completed", [0])
    with db.transaction() as session:
        lifecycle.end(session, job_id, JobStatus.FAILED, "model refused")
    job = job_row(db, job_id)
    assert (job.status, job.stage, job.error_message) == ("failed", "cancelling", "model refused")
    assert [(lot.status, lot.error_message) for lot in lots_of(db, job_id)] == \
        [("completed", None), ("failed", "model refused"), ("failed", "model refused")]
    assert (job.processed_lots, job.failed_lots) == (1, 2)


def test_a_job_ends_once(db):
    job_id = add_job(db, lots=2, status="processing", stage="vision", webhook="http://hooks.test/a")
    set_lots(db, job_id, "completed", [0])
    with db.transaction() as session:
        assert lifecycle.end(session, job_id, JobStatus.FAILED, "first", webhooks.final_hook(HOOK_SETTINGS))
    for status in JobStatus:
        if status in lifecycle.FINAL:
            with db.transaction() as session:
                assert lifecycle.end(session, job_id, status, "again", webhooks.final_hook(HOOK_SETTINGS)) is None
    job = job_row(db, job_id)
    assert (job.status, job.error_message) == ("failed", "first")
    assert deliveries(db, job_id) == ["batch_job_failed"] and ledger_lots(db) == 1
    with pytest.raises(ValueError):
        with db.transaction() as session:
            lifecycle.end(session, job_id, JobStatus.PROCESSING, None)


def test_cancel_through_the_api_ends_the_job_and_refuses_a_second_time(db):
    job_id = add_job(db, lots=2, status="processing", stage="images", webhook="http://hooks.test/a")
    answer = cancel_job(db, job_id, on_final=webhooks.final_hook(HOOK_SETTINGS))
    assert answer["status"] == "cancelled" and answer["cancelled_at"]
    job = job_row(db, job_id)
    assert (job.status, job.stage, job.error_message) == ("cancelled", "cancelling", "Cancelled by the client")
    assert {lot.error_message for lot in lots_of(db, job_id)} == {"Job cancelled before this lot was finished"}
    assert deliveries(db, job_id) == ["batch_job_cancelled"]
    with pytest.raises(ServiceError) as refused:
        cancel_job(db, job_id)
    assert refused.value.code == "JOB_NOT_CANCELLABLE" and refused.value.status == 400
    with pytest.raises(ServiceError) as unknown:
        cancel_job(db, "no-such-job")
    assert unknown.value.status == 404


def test_a_concurrent_cancel_wins_over_the_worker(db, runtime, runner):
    job_id = add_job(db, lots=2, status="processing", stage="vision", webhook="http://hooks.test/a")
    assert runner.claim() == [job_id]
    runner.hold(job_id)
    cancel_job(db, job_id, on_final=webhooks.final_hook(runtime.settings))
    job = job_row(db, job_id)
    # the worker's next step and its ending both find the job ended
    with pytest.raises(LeaseLost):
        runner._move(lifecycle.move, job, Stage.TRANSLATION)
    runner.finish(job, JobStatus.COMPLETED, None)
    with pytest.raises(LeaseLost):
        runner.lease.check_active()
    job = job_row(db, job_id)
    assert (job.status, job.stage) == ("cancelled", "cancelling")
    assert deliveries(db, job_id) == ["batch_job_cancelled"]
    assert runtime.metrics.jobs.labels(status="completed")._value.get() == 0


def test_the_runner_finishes_a_finalizing_job_and_closes_a_cancelled_one(db, runtime, runner):
    done = add_job(db, lots=1, status="translating", stage="finalizing", lot_status="completed")
    assert runner.claim() == [done]
    runner.run(done)
    job = job_row(db, done)
    assert (job.status, job.stage, job.lease_owner) == ("completed", "done", None)
    assert runtime.metrics.jobs.labels(status="completed")._value.get() == 1
    cancelled = add_job(db, lots=1, status="cancelled", stage="cancelling")
    assert runner.claim() == [cancelled]
    runner.run(cancelled)
    assert job_row(db, cancelled).stage == "done" and runner.claim() == []


def test_the_watchdog_fails_an_overdue_job_through_the_same_ending(db, runtime, runner):
    overdue = add_job(db, lots=2, status="processing", stage="vision", deadline_at=utcnow() - timedelta(seconds=1),
                      webhook="http://hooks.test/a")
    in_time = add_job(db, lots=1, status="processing", stage="vision")
    assert Watchdog(runtime, runner).fail_overdue() == 1
    job = job_row(db, overdue)
    assert (job.status, job.stage, job.failed_lots) == ("failed", "cancelling", 2)
    assert "deadline of 24 hours" in job.error_message
    assert deliveries(db, overdue) == ["batch_job_failed"]
    assert job_row(db, in_time).status == "processing"


def test_closing_the_cancelled_batches_leaves_nothing_due(db):
    job_id = add_job(db, status="cancelled", stage="cancelling")
    with db.transaction() as session:
        lifecycle.cancelled_batches_closed(session, job_id)
    assert job_row(db, job_id).stage == "done"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(BatchJob).where(lifecycle.due(utcnow()))) == 0
