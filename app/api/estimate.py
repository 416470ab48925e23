"""POST /estimate: what a generate-descriptions body would cost, and whether today's budget allows it."""
from __future__ import annotations

from flask import jsonify

from app.api import bp, runtime
from app.api.generate import read_generate_request
from app.auth import current_client
from app.policies import Limit, Signature, policy
from services import costs


@bp.post("/estimate")
@policy(signature=Signature.LOTS, limit=Limit.POLLING)
def estimate():
    """Signed like generate-descriptions and validated the same way; nothing is created or paid for."""
    req = read_generate_request()
    rt = runtime()
    s = rt.settings
    client = current_client()
    found = costs.estimate(rt.db, len(req.lots), "batch" if req.is_batch else "sync", s, client_id=client.id,
                           client_budget_usd=client.limits.max_daily_cost_usd)
    return jsonify({**found.as_dict(), "languages": req.languages,
                    "models": {"vision": s.openai_model_vision, "translation": s.openai_model_translation}})
