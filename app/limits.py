"""Rate limits from the spec, as configurable strings: sync, batch and polling, per client address.

One endpoint serves both sync and batch requests, so its two limits look at the body: a
request with one lot counts against RATE_LIMIT_SYNC, with more against RATE_LIMIT_BATCH.
Storage is in memory by default; RATELIMIT_STORAGE_URI (e.g. redis://) shares it between instances.
"""
from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from services.errors import ServiceError

POLLING_ENDPOINTS = (
    "api.batch_status", "api.batch_results", "api.batch_results_download", "api.batch_jobs", "api.cancel",
    "api.webhook_deliveries", "api.redeliver", "api.estimate",
)


def _is_batch() -> bool:
    """Several lots: the batch limit. Reads the body through read_json_object, which keeps what it
    parsed (or the refusal) for the view, so the body is parsed once whichever limit applies."""
    from app.api import read_json_object

    try:
        lots = read_json_object().get("lots")
    except ServiceError:
        return False
    return isinstance(lots, list) and len(lots) > 1


def init_app(app: Flask) -> Limiter:
    settings = app.extensions["genservice"].settings
    limiter = Limiter(
        get_remote_address,
        storage_uri=settings.ratelimit_storage_uri,
        headers_enabled=True,
        enabled=settings.ratelimit_enabled,
        strategy="moving-window",
        swallow_errors=True,
        key_prefix="genservice",
    )
    limiter.init_app(app)
    generate = "api.generate_descriptions"
    if generate in app.view_functions:
        view = app.view_functions[generate]
        view = limiter.limit(settings.rate_limit_sync, scope="sync", exempt_when=_is_batch)(view)
        view = limiter.limit(settings.rate_limit_batch, scope="batch", exempt_when=lambda: not _is_batch())(view)
        app.view_functions[generate] = view
    for endpoint in POLLING_ENDPOINTS:
        if endpoint in app.view_functions:
            app.view_functions[endpoint] = limiter.limit(settings.rate_limit_polling, scope="polling")(
                app.view_functions[endpoint])
    app.extensions["genservice_limiter"] = limiter
    return limiter
