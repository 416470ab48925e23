"""What the job dashboard shows, read straight from the database (no Flask here).

Every view is a plain JSON-ready dict, so the HTML pages and the dashboard's polling endpoint
render the same numbers. Lists are read one page at a time: a 50,000-lot job costs one page
of lots and a few grouped counts, never a scan into memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from database import Database, lot_pages
from database.models import JOB_ACTIVE, JOB_STATUSES, BatchJob, BatchLot, BatchResult, WebhookDelivery
from services import clients, costs
from services.clock import iso, utcnow
from services.jobs import completion_percentage, current_stage
from services.findings import lot_fields
from services.languages import language_name

JOBS_PER_PAGE = 25
LOTS_PER_PAGE = 50
DELIVERIES_SHOWN = 50
DELIVERY_STATUSES = ("delivered", "pending", "failed")
LOT_FILTERS = ("all", "completed", "failed", "unfinished")


@dataclass(frozen=True)
class Page:
    number: int
    size: int
    total: int

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "size": self.size, "total": self.total, "count": self.count,
                "has_previous": self.number > 1, "has_next": self.number < self.count}


def page_of(requested: Any, size: int, total: int) -> Page:
    """The requested page number, clamped to the pages that exist (bad input means page 1)."""
    try:
        number = int(requested)
    except (TypeError, ValueError):
        number = 1
    last = max(1, -(-total // size))
    return Page(number=min(max(number, 1), last), size=size, total=total)


def webhook_counts(session: Session, job_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Delivered / pending / failed webhook deliveries per job."""
    ids = list(job_ids)
    counts = {job_id: dict.fromkeys(DELIVERY_STATUSES, 0) for job_id in ids}
    if not ids:
        return counts
    rows = session.execute(select(WebhookDelivery.batch_job_id, WebhookDelivery.status, func.count())
                           .where(WebhookDelivery.batch_job_id.in_(ids))
                           .group_by(WebhookDelivery.batch_job_id, WebhookDelivery.status)).all()
    for job_id, status, count in rows:
        counts[job_id][status] = counts[job_id].get(status, 0) + count
    return counts


DAYS_OF_COSTS = 7


def job_summary(job: BatchJob, webhooks: dict[str, int]) -> dict[str, Any]:
    return {
        "id": job.id,
        "client_id": job.client_id,
        "status": job.status,
        "stage": current_stage(job),
        "strategy": job.strategy,
        "active": job.is_active,
        "completion_percentage": completion_percentage(job),
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "translated_lots": job.translated_lots,
        "languages": list(job.languages or []),
        "tokens": {"input": job.input_tokens or 0, "output": job.output_tokens or 0, "total": job.total_tokens,
                   "cached": job.cached_input_tokens or 0, "reasoning": job.reasoning_tokens or 0},
        "cost_usd": round(job.cost_usd or 0.0, 4),
        "estimated_cost_usd": round(job.estimated_cost_usd or 0.0, 4),
        "webhooks": webhooks,
        "webhook_configured": job.webhook_configured,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "completed_at": iso(job.completed_at),
        "estimated_completion": iso(job.estimated_completion) if job.is_active else None,
        "error_message": job.error_message,
    }


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(BatchJob.status, func.count()).group_by(BatchJob.status)).all()
    counts = dict.fromkeys(JOB_STATUSES, 0)
    counts.update({status: count for status, count in rows})
    return counts


def jobs_overview(db: Database, page: Any = 1, status: str | None = None) -> dict[str, Any]:
    """One page of jobs, newest first, with the job counts per status."""
    status = status if status in JOB_STATUSES else None
    with db.session() as session:
        counts = status_counts(session)
        total = counts[status] if status else sum(counts.values())
        current = page_of(page, JOBS_PER_PAGE, total)
        query = select(BatchJob).order_by(BatchJob.created_at.desc(), BatchJob.id)
        if status:
            query = query.where(BatchJob.status == status)
        jobs = session.scalars(query.limit(current.size).offset(current.offset)).all()
        hooks = webhook_counts(session, [job.id for job in jobs])
    return {"jobs": [job_summary(job, hooks[job.id]) for job in jobs], "counts": counts, "status": status,
            "page": current.as_dict(), "daily_costs": costs.daily_totals(db, DAYS_OF_COSTS)}


def client_usage(session: Session) -> dict[str, dict[str, Any]]:
    """Per client id: jobs in all, lots still queued (of its active jobs), and the OpenAI cost so far of the
    jobs it created today (UTC); one grouped query over the jobs."""
    start_of_day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    remaining = BatchJob.total_lots - BatchJob.processed_lots - BatchJob.failed_lots
    active = BatchJob.status.in_(JOB_ACTIVE)
    rows = session.execute(select(
        BatchJob.client_id, func.count(),
        func.coalesce(func.sum(case((active, remaining), else_=0)), 0),
        func.coalesce(func.sum(case((BatchJob.created_at >= start_of_day, BatchJob.cost_usd), else_=0.0)), 0.0),
        func.coalesce(func.sum(case((active, 1), else_=0)), 0),
    ).group_by(BatchJob.client_id)).all()
    return {client_id: {"jobs": int(count), "queued_lots": int(queued), "cost_today_usd": round(float(cost), 4),
                        "active_jobs": int(running)}
            for client_id, count, queued, cost, running in rows}


def clients_overview(db: Database, settings) -> dict[str, Any]:
    """Every client (the implicit one of SHARED_KEY first), its keys, limits and what it has queued."""
    listed = clients.list_clients(db, settings)
    with db.session() as session:
        usage = client_usage(session)
    empty = {"jobs": 0, "queued_lots": 0, "cost_today_usd": 0.0, "active_jobs": 0}
    rows = []
    for summary in listed:
        identity = summary.identity
        rows.append({
            "id": identity.id, "name": identity.name, "enabled": identity.enabled, "implicit": identity.implicit,
            "reference_scheme": identity.reference_scheme,
            "keys": [{"key_id": key_id, "expires_at": iso(expires)} for key_id, expires in summary.keys],
            "limits": {field: getattr(identity.limits, field) for field in clients.ClientLimits.__dataclass_fields__},
            "created_at": iso(summary.created_at), **usage.get(identity.id, empty)})
    known = {row["id"] for row in rows}
    # jobs of a client that is gone from the table (or of the implicit client once SHARED_KEY is unset)
    orphans = [{"id": client_id, **counts} for client_id, counts in sorted(usage.items()) if client_id not in known]
    return {"clients": rows, "other_job_owners": orphans,
            "deployment_limits": {"rate_limit_sync": settings.rate_limit_sync,
                                  "rate_limit_batch": settings.rate_limit_batch,
                                  "rate_limit_polling": settings.rate_limit_polling,
                                  "max_queued_lots": settings.max_queued_lots,
                                  "max_daily_cost_usd": settings.max_daily_cost_usd}}


def delivery_row(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id, "url": delivery.webhook_url, "event": delivery.event, "status": delivery.status,
        "chunk": f"{delivery.chunk_index + 1}/{delivery.chunk_count}",
        "attempts": f"{delivery.attempt_count}/{delivery.max_attempts}",
        "last_status_code": delivery.last_status_code, "error_message": delivery.error_message,
        "last_attempt_at": iso(delivery.last_attempt_at), "next_attempt_at": iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
    }


def job_detail(db: Database, job_id: str) -> dict[str, Any] | None:
    """A job's summary, its OpenAI batch ids, lot counts per status and its first webhook deliveries."""
    if not isinstance(job_id, str) or len(job_id) > 64:
        return None
    with db.session() as session:
        job = session.get(BatchJob, job_id)
        if job is None:
            return None
        hooks = webhook_counts(session, [job.id])[job.id]
        lot_counts = dict(session.execute(select(BatchLot.status, func.count()).where(BatchLot.job_id == job.id)
                                          .group_by(BatchLot.status)).all())
        if not lot_counts and lot_pages.has_pages(session, job.id):
            lot_counts = {"pending": job.total_lots}  # still in its queue: the lots are pages until it starts
        deliveries = session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_job_id == job.id)
                                     .order_by(WebhookDelivery.id).limit(DELIVERIES_SHOWN)).all()
    detail = job_summary(job, hooks)
    detail.update({
        "openai_vision_batch_id": job.openai_vision_batch_id,
        "openai_translation_batch_id": job.openai_translation_batch_id,
        "total_images": job.total_images,
        "total_images_processed": job.total_images_processed,
        "lot_counts": lot_counts,
        "filter_counts": filter_counts(lot_counts),
        "deliveries": [delivery_row(d) for d in deliveries],
        "deliveries_total": sum(hooks.values()),
    })
    return detail


def filter_counts(lot_counts: dict[str, int]) -> dict[str, int]:
    """How many lots each filter of the job page shows."""
    total = sum(lot_counts.values())
    completed, failed = lot_counts.get("completed", 0), lot_counts.get("failed", 0)
    return {"all": total, "completed": completed, "failed": failed, "unfinished": total - completed - failed}


def _lot_filter(query, only: str):
    if only == "completed":
        return query.where(BatchLot.status == "completed")
    if only == "failed":
        return query.where(BatchLot.status == "failed")
    if only == "unfinished":
        return query.where(BatchLot.status.not_in(("completed", "failed")))
    return query


def lot_row(lot: BatchLot, languages: list[str], texts: dict[str, str]) -> dict[str, Any]:
    """One lot for display. ``damages`` is the stored HTML; the page sanitizes it again before showing it."""
    return {
        "seq": lot.seq,
        "lot_id": lot.lot_id,
        "status": lot.status,
        "image_count": len(lot.image_urls or []),
        "processed_images": lot.processed_images,
        "missing_images": list(lot.missing_images or []),
        "error": lot.error_message if lot.status == "failed" else None,
        "processed_at": iso(lot.processed_at),
        "descriptions": [{"language": code, "language_name": language_name(code), "damages": texts[code]}
                         for code in languages if code in texts],
        "report": lot_fields(lot.findings),
    }


def queued_lot(seq: int, fields: dict) -> BatchLot:
    """A lot of a job still in its queue, read from its page, shown as the pending lot it will become."""
    return BatchLot(seq=seq, lot_id=fields["lot_id"], additional_info=fields["additional_info"],
                    image_urls=fields["image_urls"], webhook_url=fields["webhook"], status="pending",
                    processed_images=0)


def lots_page(db: Database, job_id: str, page: Any = 1, only: str = "all") -> dict[str, Any]:
    """One page of a job's lots in request order, with their descriptions."""
    only = only if only in LOT_FILTERS else "all"
    with db.session() as session:
        languages = session.scalar(select(BatchJob.languages).where(BatchJob.id == job_id)) or []
        total = session.scalar(_lot_filter(select(func.count()).select_from(BatchLot)
                                           .where(BatchLot.job_id == job_id), only)) or 0
        queued = total == 0 and only in ("all", "unfinished") and lot_pages.has_pages(session, job_id)
        if queued:
            total = session.scalar(select(BatchJob.total_lots).where(BatchJob.id == job_id)) or 0
        current = page_of(page, LOTS_PER_PAGE, total)
        if queued:
            lots = [queued_lot(seq, fields) for seq, fields in
                    lot_pages.read(session, job_id, current.offset, current.size)]
            return {"lots": [lot_row(lot, languages, {}) for lot in lots], "filter": only, "page": current.as_dict()}
        lots = session.scalars(_lot_filter(select(BatchLot).where(BatchLot.job_id == job_id), only)
                               .order_by(BatchLot.seq).limit(current.size).offset(current.offset)).all()
        rows = session.execute(select(BatchResult.lot_pk, BatchResult.language, BatchResult.damages)
                               .where(BatchResult.lot_pk.in_([lot.id for lot in lots]))).all() if lots else []
    texts: dict[int, dict[str, str]] = {}
    for lot_pk, language, damages in rows:
        texts.setdefault(lot_pk, {})[language] = damages
    return {"lots": [lot_row(lot, languages, texts.get(lot.id, {})) for lot in lots], "filter": only,
            "page": current.as_dict()}
