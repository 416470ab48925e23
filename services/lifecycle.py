"""A batch job's lifecycle, in one place: its statuses and stages, when the worker owes it a turn,
how far it has come, and every transition between them.

Statuses (what clients see): pending -> processing -> translating -> completed | failed | cancelled.
Stages (where the worker stands): queued -> images -> vision -> translation -> finalizing -> done,
plus cancelling for an ended job whose OpenAI batches must still be cancelled.

Every transition is a conditional UPDATE: a stage change is written only while the job is active
and held by the caller, an ending only while the job is active. So of two endings racing (a client
cancelling while the worker finishes or the watchdog fails the job), exactly one is written, and a
worker whose job was cancelled under it finds out at its next write.

The API (cancel), the worker (finished, refused, deadline) and the watchdog end a job through
``end`` alone: one transaction that sets the status, writes the lots of a job still in its queue out
of their pages (database/lot_pages.py), fails the lots left without a result, writes
the final counters, adds the completed lots to the cost ledger and records the webhook deliveries.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from database import lot_pages, notify
from database.models import AnyJob, BatchJob, BatchLot
from services import costs
from services.clock import utcnow
from services.generation import is_english


class JobStatus(StrEnum):
    """A job's status; str members, so the database column and the JSON keep the same strings."""
    PENDING = "pending"
    PROCESSING = "processing"
    TRANSLATING = "translating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Stage(StrEnum):
    """Where the worker stands with a job (``batch_jobs.stage``)."""
    QUEUED = "queued"
    IMAGES = "images"
    VISION = "vision"
    TRANSLATION = "translation"
    FINALIZING = "finalizing"
    DONE = "done"
    CANCELLING = "cancelling"


ACTIVE = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.TRANSLATING)
FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

# the stage names batch-status shows (``current_stage``); an ended job shows its status instead
PUBLIC_STAGES = {
    Stage.QUEUED: "queued",
    Stage.IMAGES: "image_validation",
    Stage.VISION: "vision_analysis",
    Stage.TRANSLATION: "translation",
    Stage.FINALIZING: "finalizing",
    Stage.DONE: "done",
}


def public_stage(job: AnyJob) -> str:
    if job.stage == Stage.DONE or not job.is_active:
        return job.status
    return PUBLIC_STAGES.get(job.stage, job.stage)


# ---- when the worker owes a job a turn -----------------------------------------------------------

def wants_worker():
    """SQL: the job still has work for a worker: it is active, or its OpenAI batches must be cancelled."""
    return BatchJob.status.in_(ACTIVE) | (BatchJob.stage == Stage.CANCELLING)


def needs_worker(job: AnyJob) -> bool:
    """``wants_worker`` for a job already read."""
    return job.is_active or job.stage == Stage.CANCELLING


def due(now: datetime):
    """SQL: the job wants a worker and its next turn has come."""
    return (BatchJob.next_run_at <= now) & wants_worker()


def checking_photos():
    """SQL: the job is in its photo stage, where any process may help with pages of its lots."""
    return (BatchJob.stage == Stage.IMAGES) & (BatchJob.status == JobStatus.PROCESSING)


# ---- how far it has come -------------------------------------------------------------------------

def needs_translation(languages: list[str] | None) -> bool:
    return any(not is_english(code) for code in languages or [])


def progress(total_lots: int, processed: int, failed: int, translated: int, languages: list[str] | None) -> float:
    """The share of the work done, 0..1: each lot is one unit, two when it must also be translated; a
    failed lot counts as done in every unit it had left."""
    twice = needs_translation(languages)
    units = total_lots * (2 if twice else 1)
    if not units:
        return 0.0
    done = processed + failed + ((translated + failed) if twice else 0)
    return min(1.0, done / units)


def completion_percentage(job: AnyJob) -> float:
    if job.status == JobStatus.COMPLETED:
        return 100.0
    return round(100.0 * progress(job.total_lots, job.processed_lots, job.failed_lots, job.translated_lots,
                                  job.languages), 1)


# ---- lot counts ----------------------------------------------------------------------------------

def lot_counts(session: Session, job_id: str) -> dict[str, int]:
    rows = session.execute(select(BatchLot.status, func.count()).where(BatchLot.job_id == job_id)
                           .group_by(BatchLot.status)).all()
    return {status: count for status, count in rows}


def lot_counts_and_images(session: Session, job_id: str) -> tuple[dict[str, int], int]:
    """``lot_counts`` and ``processed_images`` in one pass over the job's lots (the worker refreshes an
    active job's counters after every page of work)."""
    rows = session.execute(select(BatchLot.status, func.count(), func.coalesce(func.sum(BatchLot.processed_images), 0))
                           .where(BatchLot.job_id == job_id).group_by(BatchLot.status)).all()
    return {status: count for status, count, _ in rows}, sum(int(images) for *_, images in rows)


def final_counters(session: Session, job_id: str) -> dict[str, Any]:
    """The counts an ended job keeps: every lot is completed or failed by then."""
    counts, images = lot_counts_and_images(session, job_id)
    return {"processed_lots": counts.get("completed", 0), "failed_lots": counts.get("failed", 0),
            "translated_lots": counts.get("completed", 0), "total_images_processed": images,
            "updated_at": utcnow()}


def fail_unfinished_lots(session: Session, job_id: str, reason: str) -> int:
    """Give every lot that has no result yet a reason, so each lot is accounted for."""
    result = session.execute(update(BatchLot).where(BatchLot.job_id == job_id,
                                                    BatchLot.status.not_in(("completed", "failed")))
                             .values(status="failed", error_message=reason, processed_at=utcnow())
                             .execution_options(synchronize_session=False))
    return result.rowcount


# ---- transitions ---------------------------------------------------------------------------------

def move(session: Session, job_id: str, owner: str, stage: Stage | None = None, status: JobStatus | None = None,
         **values) -> bool:
    """A step of an active job held by ``owner`` (a stage change, a new status, new counters); False,
    and nothing written, when the job is no longer active (a concurrent ending won) or no longer ours."""
    if stage is not None:
        values["stage"] = stage
    if status is not None:
        values["status"] = status
    values.setdefault("updated_at", utcnow())
    result = session.execute(update(BatchJob).where(
        BatchJob.id == job_id, BatchJob.lease_owner == owner, BatchJob.status.in_(ACTIVE)).values(**values))
    return result.rowcount > 0


def start(session: Session, job_id: str, owner: str) -> bool:
    """queued -> images: the worker took the job up, and the lots accepted as pages become rows (in the
    same transaction: a job past its queue always has its lots)."""
    if not move(session, job_id, owner, Stage.IMAGES, JobStatus.PROCESSING, started_at=utcnow()):
        return False
    lot_pages.expand(session, job_id)
    notify.announce(session)  # its photo pages are there for every process to take
    return True


def after(stage: Stage, languages: list[str] | None) -> tuple[Stage, JobStatus | None]:
    """The stage (and status, when it changes) that follows a paid stage finished for every lot."""
    if stage == Stage.VISION:
        return Stage.TRANSLATION, JobStatus.TRANSLATING if needs_translation(languages) else JobStatus.PROCESSING
    if stage == Stage.TRANSLATION:
        return Stage.FINALIZING, None
    raise ValueError(f"no paid stage follows {stage}")


def outcome(counts: dict[str, int]) -> tuple[JobStatus, str | None]:
    """How a job whose lots are all finished ends: completed if any lot was, else failed."""
    if counts.get("completed"):
        return JobStatus.COMPLETED, None
    return JobStatus.FAILED, "No lot could be processed; see each lot's error"


CANCELLED_BY_CLIENT = "Cancelled by the client"
LOTS_CANCELLED = "Job cancelled before this lot was finished"


def end(session: Session, job_id: str, status: JobStatus, message: str | None,
        on_final: Callable[[Session, BatchJob], None] | None = None,
        lot_message: str | None = None) -> BatchJob | None:
    """End an active job with ``status`` in the caller's transaction; None, and nothing written, if it
    has ended already (each ending is written once: the first one wins).

    The lots left without a result fail with ``lot_message`` (else ``message``). A failed or cancelled
    job goes to the cancelling stage so that a worker cancels its OpenAI batches, and its lease is left
    alone: a worker in the middle of a step still records what it did before it hands the job back. The
    final counts are part of the ending: a webhook sent (or a crash) right after the commit must never
    see the job ended with the counters of a moment before. ``on_final(session, job)`` records the
    webhook deliveries in the same transaction.
    """
    if status not in FINAL:
        raise ValueError(f"{status} is not an ending")
    now = utcnow()
    stage = Stage.DONE if status == JobStatus.COMPLETED else Stage.CANCELLING
    values: dict[str, Any] = {"status": status, "stage": stage, "completed_at": now, "updated_at": now,
                              "estimated_completion": now, "next_run_at": now, "error_message": message}
    if status == JobStatus.CANCELLED:
        values["cancelled_at"] = now
    result = session.execute(update(BatchJob).where(BatchJob.id == job_id, BatchJob.status.in_(ACTIVE))
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 0:
        return None
    lot_pages.expand(session, job_id)  # a job ended in its queue: its lots are accounted for like any other's
    if status != JobStatus.COMPLETED:
        fail_unfinished_lots(session, job_id, lot_message or message or f"job {status}")
    final = final_counters(session, job_id)
    session.execute(update(BatchJob).where(BatchJob.id == job_id).values(**final)
                    .execution_options(synchronize_session=False))
    session.flush()
    job = session.get(BatchJob, job_id)
    session.refresh(job)
    # the completed lots are what the per-lot cost estimate divides the day's batch spending by
    costs.record(session, 0.0, mode="batch", client_id=job.client_id, lots=final["processed_lots"])
    if on_final is not None:
        on_final(session, job)
    return job


def cancel(session: Session, job_id: str, on_final=None) -> BatchJob | None:
    """The client's ending."""
    return end(session, job_id, JobStatus.CANCELLED, CANCELLED_BY_CLIENT, on_final, lot_message=LOTS_CANCELLED)


def cancelled_batches_closed(session: Session, job_id: str) -> None:
    """cancelling -> done: the ended job's OpenAI batches are cancelled; nothing is left for a worker."""
    session.execute(update(BatchJob).where(BatchJob.id == job_id, BatchJob.stage == Stage.CANCELLING)
                    .values(stage=Stage.DONE))
