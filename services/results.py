"""A job's results as the client reads them: per lot, per language, read page by page.

The same lot views feed GET batch-results, the download and the webhook payloads, so all
three always agree. Large jobs are streamed: no more than one page of lots is in memory.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from sqlalchemy import select

from database import Database
from database.models import AnyJob, BatchLot, BatchResult
from services.clock import iso
from services.findings import lot_fields
from services.jobs import token_usage

PAGE = 500


def processing_time(job: AnyJob) -> str | None:
    if not job.completed_at:
        return None
    seconds = int((job.completed_at - job.created_at).total_seconds())
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 7200:
        return f"{seconds // 60} minutes"
    return f"{seconds // 3600} hours {seconds % 3600 // 60} minutes"


def summary(job: AnyJob) -> dict[str, Any]:
    return {
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "total_images_processed": job.total_images_processed,
        "total_processing_time": processing_time(job),
        "token_usage": token_usage(job),
        "cost_usd": round(job.cost_usd or 0.0, 6),
    }


def lot_view(lot: BatchLot, languages: list[str], texts: dict[str, str]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "lot_id": lot.lot_id,
        "status": lot.status if lot.status in ("completed", "failed") else "pending",
        "processed_at": iso(lot.processed_at),
        "processed_images": lot.processed_images,
        "descriptions": [{"language": code, "damages": texts[code]} for code in languages if code in texts]
        if lot.status == "completed" else [],
        "missing_images": lot.missing_images or [],
    }
    if lot.status == "completed":
        view.update(lot_fields(lot.findings))
    if lot.input_tokens or lot.output_tokens:
        view["usage"] = {"input_tokens": lot.input_tokens, "cached_input_tokens": lot.cached_input_tokens,
                         "output_tokens": lot.output_tokens, "reasoning_tokens": lot.reasoning_tokens,
                         "cost_usd": round(lot.cost_usd or 0.0, 6)}
    if lot.status == "failed":
        view["error"] = lot.error_message or "Processing failed"
    return view


def iter_lot_views(db: Database, job: AnyJob, condition=None, first_seq: int = 0,
                   limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Lots of ``job`` in request order from ``first_seq`` (at most ``limit``, only those matching
    ``condition`` when given), with their texts, read a page at a time by index seeks."""
    where = BatchLot.job_id == job.id if condition is None else (BatchLot.job_id == job.id) & condition
    after = first_seq - 1
    left = limit
    while left is None or left > 0:
        page = PAGE if left is None else min(PAGE, left)
        with db.session() as session:
            lots = session.scalars(select(BatchLot).where(where, BatchLot.seq > after)
                                   .order_by(BatchLot.seq).limit(page)).all()
            if not lots:
                return
            rows = session.execute(select(BatchResult.lot_pk, BatchResult.language, BatchResult.damages)
                                   .where(BatchResult.lot_pk.in_([lot.id for lot in lots]))).all()
        texts: dict[int, dict[str, str]] = {}
        for lot_pk, language, damages in rows:
            texts.setdefault(lot_pk, {})[language] = damages
        for lot in lots:
            yield lot_view(lot, job.languages, texts.get(lot.id, {}))
        if len(lots) < page:
            return
        after = lots[-1].seq
        if left is not None:
            left -= len(lots)


def results_head(job: AnyJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "completed_at": iso(job.completed_at),
        "processing_summary": summary(job),
    }


def iter_results_json(db: Database, job: AnyJob) -> Iterator[bytes]:
    """The whole results document as JSON text, produced in pieces."""
    head = results_head(job)
    results_meta = {"version": job.version, "total_lots": job.total_lots, "processed_lots": job.processed_lots,
                    "failed_lots": job.failed_lots}
    opening = json.dumps(head, ensure_ascii=False)[:-1] + ', "results": ' + json.dumps(results_meta)[:-1] + ', "lots": ['
    yield opening.encode()
    first = True
    for view in iter_lot_views(db, job):
        yield (("" if first else ",") + json.dumps(view, ensure_ascii=False)).encode()
        first = False
    yield b"]}}"
