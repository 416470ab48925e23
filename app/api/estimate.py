"""POST /estimate: what a generate-descriptions body would cost, and whether today's budget allows it."""
from __future__ import annotations

from flask import jsonify

from app import auth
from app.api import bp, read_json_object, runtime
from app.schemas import parse_generate, require_lots_list
from services import costs


@bp.post("/estimate")
def estimate():
    """Signed like generate-descriptions and validated the same way; nothing is created or paid for."""
    rt = runtime()
    s = rt.settings
    body = read_json_object()
    auth.require_lots_signature(body, require_lots_list(body))
    req = parse_generate(body, max_batch_size=s.max_batch_size, max_sync_images=s.max_sync_images,
                         max_images_per_lot=s.max_images_per_lot, max_languages=s.max_languages)
    found = costs.estimate(rt.db, len(req.lots), "batch" if req.is_batch else "sync", s)
    return jsonify({**found.as_dict(), "languages": req.languages,
                    "models": {"vision": s.openai_model_vision, "translation": s.openai_model_translation}})
