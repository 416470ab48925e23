"""Batch jobs as the API sees them: accept, describe progress, list, cancel.

Accepting a job does no network I/O: the lots are stored as a few pages and the worker does the rest.
Every view reads the counters on the job row, so a status call costs the same for 2 lots or 50,000.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from database import Database, lot_pages, notify
from database.models import SNAPSHOT_COLUMNS, AnyJob, BatchJob, JobSnapshot
from services import costs, lifecycle
from services.clients import ClientLimits
from services.clock import iso, parse_iso, utcnow
from services.errors import ServiceError
from services.lifecycle import ACTIVE, JobStatus, Stage, completion_percentage
from services.lifecycle import public_stage as current_stage
from services.lots import GenerateRequest
from services.params import page_params

def choose_strategy(configured: str, total_lots: int, direct_max_lots: int) -> str:
    if configured == "auto":
        return "direct" if total_lots <= direct_max_lots else "openai_batch"
    return configured


def initial_estimate(now: datetime, strategy: str, total_lots: int, direct_concurrency: int) -> datetime:
    """A first guess, refined by the worker from real progress."""
    if strategy == "direct":
        return now + timedelta(seconds=30 + 15 * total_lots / max(1, direct_concurrency))
    return now + timedelta(minutes=60 + total_lots // 1000 * 5)


def queued_lots(session: Session, client_id: str | None = None) -> int:
    """Unfinished lots of active jobs: one client's, or (None) every client's."""
    remaining = BatchJob.total_lots - BatchJob.processed_lots - BatchJob.failed_lots
    query = select(func.coalesce(func.sum(remaining), 0)).where(BatchJob.status.in_(ACTIVE))
    if client_id is not None:
        query = query.where(BatchJob.client_id == client_id)
    return int(session.scalar(query) or 0)


def client_queue_full(client_id: str, cap: int, queued: int, requested: int) -> ServiceError:
    """429, not QUEUE_FULL's 503: the service has room, this client has used up its own share of it."""
    return ServiceError(429, "CLIENT_QUEUE_FULL", f"Client {client_id} has {queued:,} unfinished lots queued; "
                        f"{requested:,} more would pass its own cap of {cap:,}: retry once some of its jobs finish",
                        {"client_id": client_id, "max_queued_lots": cap, "queued_lots": queued,
                         "requested_lots": requested}, retry_after=300)


# the advisory lock every accept takes on PostgreSQL (any fixed 64-bit number that nothing else uses)
ACCEPT_LOCK_KEY = 0x67656E5F61636370  # "gen_accp"


def create_job(db: Database, req: GenerateRequest, settings, metrics=None, client_id: str = "default",
               idempotency_key: str | None = None, idempotent_since: datetime | None = None,
               limits: ClientLimits | None = None) -> BatchJob:
    """Accept a job for a client: refused with 429 when its estimated cost would pass the day's budget (the
    deployment's or the client's own) or its lots the client's own queue cap, 503 when the service's queue is
    full. ``limits`` are the client's own (None: none of its own). With an ``idempotency_key``, the job
    records it (unique per client), so a retry that finds no saved answer (its first attempt died after the
    commit) finds the job instead.

    ``idempotent_since`` is when the key was first claimed (services/idempotency.py): a job holding the key
    created since then is that request's and is returned as it is; an older one was made under the same key
    before it expired, so it gives the key up to the new job."""
    limits = limits or ClientLimits()
    now = utcnow()
    strategy = choose_strategy(settings.batch_strategy, len(req.lots), settings.direct_max_lots)
    job = BatchJob(
        id=str(uuid.uuid4()), client_id=client_id, idempotency_key=idempotency_key, status=JobStatus.PENDING,
        stage=Stage.QUEUED, strategy=strategy, version=req.version,
        languages=req.languages, total_lots=len(req.lots), processed_lots=0, failed_lots=0, translated_lots=0,
        total_images=sum(len(lot.image_urls) for lot in req.lots), total_images_processed=0,
        webhook_configured=any(lot.webhook for lot in req.lots), input_tokens=0, output_tokens=0,
        cached_input_tokens=0, reasoning_tokens=0, cost_usd=0.0, estimated_cost_usd=0.0,
        created_at=now, updated_at=now, next_run_at=now,
        estimated_completion=initial_estimate(now, strategy, len(req.lots), settings.direct_concurrency),
        deadline_at=now + timedelta(hours=settings.job_deadline_hours + settings.job_deadline_margin_hours),
    )
    with db.transaction() as session:
        if idempotency_key is not None:
            earlier = session.scalars(select(BatchJob).where(BatchJob.client_id == client_id,
                                                             BatchJob.idempotency_key == idempotency_key)).first()
            if earlier is not None:
                if idempotent_since is None or earlier.created_at >= idempotent_since:
                    return earlier
                earlier.idempotency_key = None
                session.flush()
        if session.get_bind().dialect.name == "postgresql":
            # one accept at a time, so two jobs arriving together cannot both pass the budget or the queue cap
            # (each sees the other's lots and estimate only once it is committed); released at commit
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ACCEPT_LOCK_KEY})
        job.estimated_cost_usd = costs.check_budget_in(
            session, len(req.lots), "batch", settings, now, client_id=client_id,
            client_budget_usd=limits.max_daily_cost_usd).cost_usd
        if limits.max_queued_lots is not None:
            queued = queued_lots(session, client_id)
            if queued + len(req.lots) > limits.max_queued_lots:
                raise client_queue_full(client_id, limits.max_queued_lots, queued, len(req.lots))
        if queued_lots(session) + len(req.lots) > settings.max_queued_lots:
            raise ServiceError(503, "QUEUE_FULL", "The service has too much queued work to finish this job in time; "
                               "retry later", {"max_queued_lots": settings.max_queued_lots}, retry_after=300)
        session.add(job)
        session.flush()
        _insert_lots(session, job.id, req)
        notify.announce(session)  # any idle process may take the job up, not only this one
    if metrics is not None:
        metrics.requests.labels(mode="batch").inc()
        metrics.jobs.labels(status=JobStatus.PENDING).inc()
    return job


def _insert_lots(session: Session, job_id: str, req: GenerateRequest) -> None:
    """The lots are kept as a few pages of JSON; the worker writes them into batch_lots when it takes the
    job up (database/lot_pages.py), so 50,000 lots cost the request a few inserts, not 50,000 indexed rows."""
    lot_pages.store(session, job_id, req.lots)


# ---- views -------------------------------------------------------------------------------------

def token_usage(job: AnyJob) -> dict[str, int]:
    """Cached input is part of the input tokens, reasoning part of the output tokens (as OpenAI counts them)."""
    return {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens, "total_tokens": job.total_tokens,
            "cached_input_tokens": job.cached_input_tokens or 0, "reasoning_tokens": job.reasoning_tokens or 0}


def accepted_view(job: BatchJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": "accepted",
        "created_at": iso(job.created_at),
        "total_lots": job.total_lots,
        "languages": job.languages,
        "estimated_completion": iso(job.estimated_completion),
        "processing_mode": "batch",
        "webhook_configured": job.webhook_configured,
    }


def progress_view(job: AnyJob) -> dict[str, Any]:
    return {
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "completion_percentage": completion_percentage(job),
        "estimated_completion": iso(job.estimated_completion) if job.is_active else iso(job.completed_at),
    }


def status_view(job: AnyJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "completed_at": iso(job.completed_at),
        "cancelled_at": iso(job.cancelled_at),
        "progress": progress_view(job),
        "languages": job.languages,
        "processing_details": {
            "openai_vision_batch_id": job.openai_vision_batch_id,
            "openai_translation_batch_id": job.openai_translation_batch_id,
            "current_stage": current_stage(job),
            "strategy": job.strategy,
            "total_images": job.total_images,
            "total_images_processed": job.total_images_processed,
            "images_checked_lots": job.images_checked_lots,
            "token_usage": token_usage(job),
            "cost_usd": round(job.cost_usd or 0.0, 6),
            "estimated_cost_usd": round(job.estimated_cost_usd or 0.0, 6),
        },
        "error_message": job.error_message,
        "webhook_configured": job.webhook_configured,
        # the v1 document had these at the top level; both places keep both kinds of client working
        "openai_vision_batch_id": job.openai_vision_batch_id,
        "openai_translation_batch_id": job.openai_translation_batch_id,
        "token_usage": token_usage(job),
    }


def list_item_view(job: BatchJob) -> dict[str, Any]:
    progress = progress_view(job)
    return {
        "id": job.id,
        "job_id": job.id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "languages": job.languages,
        "progress": progress,
        "webhook_configured": job.webhook_configured,
        "current_stage": current_stage(job),
        "token_usage": token_usage(job),
        "cost_usd": round(job.cost_usd or 0.0, 6),
    }


JOB_SNAPSHOT = select(*SNAPSHOT_COLUMNS).where(BatchJob.id == bindparam("job_id"))
CLIENT_JOB_SNAPSHOT = JOB_SNAPSHOT.where(BatchJob.client_id == bindparam("client_id"))


def get_job(db: Database, job_id: str, client_id: str | None = None) -> JobSnapshot:
    """The job as it is now, read in one statement: clients poll the status endpoint hard, so it costs
    one round trip, and neither a transaction nor an ORM session nor SQLAlchemy's per-call machinery
    (the statement is compiled once per database, see OneRowQuery).

    With ``client_id`` (every API view passes the caller's), another client's job is not found: 404,
    the same answer as for a job that does not exist, so its existence is not revealed either.
    """
    if not isinstance(job_id, str) or len(job_id) > 64:
        raise job_not_found(job_id)
    if client_id is None:
        row = db.one_row_query(JOB_SNAPSHOT).one_or_none(job_id=job_id)
    else:
        row = db.one_row_query(CLIENT_JOB_SNAPSHOT).one_or_none(job_id=job_id, client_id=client_id)
    if row is None:
        raise job_not_found(job_id)
    return JobSnapshot(*row)


def job_not_found(job_id: str) -> ServiceError:
    return ServiceError(404, "JOB_NOT_FOUND", f"Job {job_id} not found", {"job_id": job_id})


LIST_PARAMETERS = frozenset({"status", "limit", "offset", "created_after", "created_before"})


def parse_list_filters(args) -> dict[str, Any]:
    """Query parameters of GET /batch-jobs, checked; 400 names the parameter that is wrong."""
    def moment(name: str) -> datetime | None:
        raw = args.get(name)
        if not raw:
            return None
        try:
            return parse_iso(raw)
        except ValueError:
            raise ServiceError(400, "VALIDATION_ERROR", f"'{name}' must be an ISO 8601 timestamp",
                               {"field": name}) from None

    unknown = sorted(set(args) - LIST_PARAMETERS)
    if unknown:
        # refused rather than ignored: the reference's scheme signs the raw query string, so a query that
        # is anything but these parameters (a job id, say, whose signature a poller sends) lists nothing
        raise ServiceError(400, "VALIDATION_ERROR", f"Unknown query parameter {unknown[0][:64]!r}: the listing takes "
                           f"{', '.join(sorted(LIST_PARAMETERS))}", {"field": unknown[0][:64]})
    status = args.get("status") or None
    if status is not None and status not in tuple(JobStatus):
        raise ServiceError(400, "VALIDATION_ERROR", f"'status' must be one of {', '.join(JobStatus)}",
                           {"field": "status"})
    return {"status": status, **page_params(args, 10, 100),
            "created_after": moment("created_after"), "created_before": moment("created_before")}


def list_jobs(db: Database, status: str | None, limit: int, offset: int, created_after: datetime | None,
              created_before: datetime | None, client_id: str | None = None) -> dict[str, Any]:
    """One page of jobs, newest first; with ``client_id``, that client's only."""
    query = select(BatchJob)
    count = select(func.count()).select_from(BatchJob)
    conditions = [] if client_id is None else [BatchJob.client_id == client_id]
    if status:
        conditions.append(BatchJob.status == status)
    if created_after:
        conditions.append(BatchJob.created_at >= created_after)
    if created_before:
        conditions.append(BatchJob.created_at <= created_before)
    for condition in conditions:
        query = query.where(condition)
        count = count.where(condition)
    with db.session() as session:
        total = session.scalar(count) or 0
        jobs = session.scalars(query.order_by(BatchJob.created_at.desc(), BatchJob.id).limit(limit).offset(offset)).all()
    return {
        "jobs": [list_item_view(job) for job in jobs],
        "pagination": {"limit": limit, "offset": offset, "total": total, "has_more": offset + len(jobs) < total},
    }


def cancel_job(db: Database, job_id: str, on_final=None, client_id: str | None = None) -> dict[str, Any]:
    """Cancel an active job now; the worker then cancels its OpenAI batches and sends the webhooks.

    ``on_final(session, job)`` runs in the same transaction (it records the webhook deliveries). With
    ``client_id``, another client's job is not found (404).
    """
    with db.transaction() as session:
        job = session.scalars(select(BatchJob).where(BatchJob.id == job_id).with_for_update()).first() \
            if isinstance(job_id, str) and len(job_id) <= 64 else None
        if job is None or (client_id is not None and job.client_id != client_id):
            raise job_not_found(job_id)
        ended = lifecycle.cancel(session, job.id, on_final) if job.is_active else None
        if ended is None:
            raise ServiceError(400, "JOB_NOT_CANCELLABLE",
                               f"Only pending, processing, or translating jobs can be cancelled. "
                               f"Current status: {job.status}", error="Job cannot be cancelled",
                               extra={"status": job.status})
    return {"job_id": ended.id, "status": ended.status, "cancelled_at": iso(ended.cancelled_at),
            "message": "Job successfully cancelled"}
