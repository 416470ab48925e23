"""Rate limits from the spec, as configurable strings: sync, batch and polling, per client address.

One endpoint serves both sync and batch requests, so its two limits look at the body: a
request with one lot counts against RATE_LIMIT_SYNC, with more against RATE_LIMIT_BATCH.
Storage is in memory by default; RATELIMIT_STORAGE_URI (e.g. redis://) shares it between instances.

The polling endpoints are limited by the ``limits`` library (what Flask-Limiter is built on) called
directly, on the same storage: profiled, Flask-Limiter's per-request bookkeeping (resolving, filtering
and evaluating the route's limits in its before-request hook and again in the decorator, then the
X-RateLimit headers) cost a poll more than its database read. They count a sliding window (two
counters per client and window, a constant cost; the moving window keeps one entry per request).
"""
from __future__ import annotations

import functools
import logging
import math
import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.strategies import SlidingWindowCounterRateLimiter

from services.errors import ServiceError

log = logging.getLogger(__name__)

POLLING_ENDPOINTS = (
    "api.batch_status", "api.batch_results", "api.batch_results_download", "api.batch_jobs", "api.cancel",
    "api.webhook_deliveries", "api.redeliver",
)


def _is_batch() -> bool:
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
    polling = set(POLLING_ENDPOINTS) & set(app.view_functions)
    # Flask-Limiter leaves these alone (no limit of its own applies to them; see the module docstring)
    limiter.request_filter(lambda: request.endpoint in polling)
    if settings.ratelimit_enabled:
        check = polling_check(limiter, settings.rate_limit_polling)
        for endpoint in polling:
            app.view_functions[endpoint] = _limited(app.view_functions[endpoint], check)
    app.extensions["genservice_limiter"] = limiter
    return limiter


def polling_check(limiter: Limiter, rate: str):
    """A function that counts one poll for the caller's address, or raises 429 RATE_LIMITED with
    Retry-After once any of the ``rate`` limits (``1000/minute``, or several separated by ``;``) is used up."""
    items = parse_many(rate)
    strategy = SlidingWindowCounterRateLimiter(limiter.storage)

    def check() -> None:
        address = get_remote_address()
        for item in items:
            try:
                allowed = strategy.hit(item, "genservice", "polling", address)
            except Exception as error:  # an unreachable storage lets the request through, as the other limits do
                log.warning("rate limit storage failed (%s); polling request let through", type(error).__name__)
                return
            if not allowed:
                try:
                    reset = strategy.get_window_stats(item, "genservice", "polling", address).reset_time
                except Exception:
                    reset = time.time() + item.get_expiry()
                raise ServiceError(429, "RATE_LIMITED",
                                   f"Rate limit exceeded ({item}); retry after the time in Retry-After",
                                   retry_after=max(1, math.ceil(reset - time.time())))
    return check


def _limited(view, check):
    @functools.wraps(view)
    def limited(*args, **kwargs):
        check()
        return view(*args, **kwargs)
    return limited
