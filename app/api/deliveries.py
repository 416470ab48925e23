"""Webhook deliveries: a job's delivery records with their attempts, and redelivery on request.

Both are signed with X-Signature: the listing over the job id, a redelivery over the delivery id;
both count as polling.
"""
from __future__ import annotations

from flask import jsonify, request

from app.api import bp, runtime
from app.auth import current_client
from app.policies import Limit, Signature, policy
from services import webhooks


@bp.get("/batch-jobs/<job_id>/webhook-deliveries")
@policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
def webhook_deliveries(job_id: str):
    page = webhooks.parse_page(request.args)
    return jsonify(webhooks.job_deliveries(runtime().db, job_id, **page, client_id=current_client().id))


@bp.post("/webhook-deliveries/<delivery_id>/redeliver")
@policy(signature=Signature.DELIVERY_ID, limit=Limit.POLLING)
def redeliver(delivery_id: str):
    rt = runtime()
    answer = webhooks.redeliver(rt.db, delivery_id, rt.settings.webhook_max_retries, current_client().id)
    if rt.worker is not None:
        rt.worker.wake()
    return jsonify(answer), 202
