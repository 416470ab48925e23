"""Webhook deliveries: a job's delivery records with their attempts, and redelivery on request.

Both are signed with X-Signature: the listing over the job id, a redelivery over the delivery id.
"""
from __future__ import annotations

from flask import jsonify, request

from app import auth
from app.api import bp, runtime
from services import webhooks


@bp.get("/batch-jobs/<job_id>/webhook-deliveries")
def webhook_deliveries(job_id: str):
    auth.require_header_signature(job_id)
    page = webhooks.parse_page(request.args)
    return jsonify(webhooks.job_deliveries(runtime().db, job_id, **page))


@bp.post("/webhook-deliveries/<delivery_id>/redeliver")
def redeliver(delivery_id: str):
    auth.require_header_signature(delivery_id)
    rt = runtime()
    answer = webhooks.redeliver(rt.db, delivery_id, rt.settings.webhook_max_retries)
    if rt.worker is not None:
        rt.worker.wake()
    return jsonify(answer), 202
