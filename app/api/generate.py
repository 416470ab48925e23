"""POST /generate-descriptions (one lot answered now, several become a job) and image checks."""
from __future__ import annotations

from flask import jsonify

from app.api import bp, read_json_object, runtime
from app.auth import current_client
from app.idempotency import current_claim
from app.policies import Limit, Signature, policy
from app.schemas import parse_generate, parse_url_list
from services import costs, gcpause, jobs
from services.clock import iso, utcnow
from services.errors import ServiceError
from services.images import required_images
from services.lots import GenerateRequest

MAX_VALIDATION_URLS = 50


def read_generate_request() -> GenerateRequest:
    """The body of generate-descriptions (and of estimate), every field checked; the signature over its
    lots was checked before the view ran (Signature.LOTS)."""
    s = runtime().settings
    return parse_generate(read_json_object(), max_batch_size=s.max_batch_size, max_sync_images=s.max_sync_images,
                          max_images_per_lot=s.max_images_per_lot, max_languages=s.max_languages)


@bp.post("/generate-descriptions")
@policy(signature=Signature.LOTS, limit=Limit.GENERATE)
def generate_descriptions():
    rt = runtime()
    s = rt.settings
    client = current_client()
    claim = current_claim()
    with gcpause.paused():  # checked and stored without collector passes over the parsed body (services/gcpause.py)
        req = read_generate_request()
        job = jobs.create_job(rt.db, req, s, metrics=rt.metrics, client_id=client.id, limits=client.limits,
                              idempotency_key=claim and claim.key,
                              idempotent_since=claim and claim.since) if req.is_batch else None
    if job is not None:
        if rt.worker is not None:
            rt.worker.wake()
        return jsonify(jobs.accepted_view(job)), 201
    lot = req.lots[0]
    own_budget = client.limits.max_daily_cost_usd
    if costs.needs_check(s, own_budget):  # without a budget the estimate would only cost reads
        costs.check_budget(rt.db, 1, "sync", s, client_id=client.id, client_budget_usd=own_budget)
    with rt.metrics.duration.labels(mode="sync").time():
        try:
            described = rt.generator.describe(lot.lot_id, lot.image_urls, lot.additional_info, req.languages)
        except ServiceError as exc:
            spent = getattr(exc, "spent", None)
            if spent is not None and spent.cost_usd:
                costs.record_sync(rt.db, spent.cost_usd, completed=False, client_id=client.id)
            raise
    costs.record_sync(rt.db, described.usage.cost_usd, client_id=client.id)
    rt.metrics.requests.labels(mode="sync").inc()
    return jsonify({
        "version": req.version,
        "processing_mode": "synchronous",
        "total_lots": 1,
        "processed_at": iso(utcnow()),
        "lots": [described.as_dict(req.languages)],
        "cost_usd": round(described.usage.cost_usd, 6),
    })


@bp.post("/test-image-validation")
@policy(signature=Signature.BODY, limit=Limit.VALIDATION)
def test_image_validation():
    urls = parse_url_list(read_json_object(), MAX_VALIDATION_URLS)
    rt = runtime()
    result = rt.images.check_many(urls)
    needed = required_images(len(urls), rt.settings.image_min_ratio)
    return jsonify({
        "valid_urls": result.valid_urls,
        "unreachable_urls": result.missing_urls,
        "threshold_met": len(result.valid_urls) >= needed,
        "required_valid": needed,
        "checks": [{"url": c.url, "ok": c.ok, "reason": c.reason, "status_code": c.status_code,
                    "content_type": c.content_type, "size": c.size} for c in result.checks],
    })
