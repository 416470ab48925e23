"""GET /health (database, background worker, OpenAI mode and models, version) and GET /metrics (Prometheus)."""
from __future__ import annotations

from flask import Flask, Response, current_app, jsonify

from app.config import VERSION
from app.policies import Limit, Signature, policy
from services import workforce
from services.clock import iso, utcnow
from services.metrics import CONTENT_TYPE
from services.models import registry


def worker_state(rt) -> dict:
    if not rt.settings.worker_enabled and rt.worker is None:
        state = "disabled"
    elif rt.worker is not None and rt.worker.alive:
        state = "running"
    else:
        state = "stopped"
    info = {"status": state}
    if rt.worker is not None and rt.worker.last_beat:
        info["last_heartbeat"] = iso(utcnow().fromtimestamp(rt.worker.last_beat, tz=utcnow().tzinfo))
    return info


def live_workers(rt) -> int | None:
    try:
        with rt.db.session() as session:
            return workforce.live_workers(session, utcnow(), rt.settings.worker_poll_interval)
    except Exception:
        return None


@policy(signature=Signature.NONE, limit=Limit.NONE)
def health():
    rt = current_app.extensions["genservice"]
    connected = rt.db.ping()
    worker = worker_state(rt)
    healthy = connected and worker["status"] != "stopped"
    degraded, models = rt.catalog.health()
    body = {
        "status": ("degraded" if degraded else "healthy") if healthy else "unhealthy",
        "service": "generation-service",
        "timestamp": iso(utcnow()),
        "version": VERSION,
        "database": "connected" if connected else "disconnected",
        "database_engine": rt.db.engine.dialect.name,
        "background_worker": worker["status"],
        "worker": {**worker, "live_workers": live_workers(rt) if connected else None},
        "openai": {"mode": rt.openai_mode, "base_url": rt.openai_base_url if rt.settings.uses_sandbox else None,
                   "models": models, "registry_checked": registry().checked.isoformat()},
    }
    return jsonify(body), 200 if healthy else 503


@policy(signature=Signature.NONE, limit=Limit.NONE)
def metrics():
    rt = current_app.extensions["genservice"]
    return Response(rt.metrics.render(), mimetype=None, content_type=CONTENT_TYPE)


def init_app(app: Flask) -> None:
    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
