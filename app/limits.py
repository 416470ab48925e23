"""Rate limits from the spec, as configurable strings: sync, batch and polling, per client address.

Each route declares which one counts it (app/policies.py, ``Limit``); ``RouteLimits.wrap`` applies it.
POST /test-image-validation (up to 50 outbound fetches a call) is held to RATE_LIMIT_SYNC, in a
count of its own, so checking photos does not use up the budget for describing them.

One endpoint serves both sync and batch requests, so its two limits look at the body: a
request with one lot counts against RATE_LIMIT_SYNC, with more against RATE_LIMIT_BATCH.
Storage is in memory by default; RATELIMIT_STORAGE_URI (e.g. redis://) shares it between instances.

The polling endpoints are limited without Flask-Limiter: profiled, its per-request bookkeeping
(resolving, filtering and evaluating the route's limits in its before-request hook and again in the
decorator, then the X-RateLimit headers) cost a poll more than its database read, so its hooks skip
them. They count a sliding window (two counters per address and limit, a constant cost; the moving
window keeps one entry per request): in this process for memory:// (ProcessSlidingWindows), through
the ``limits`` library (what Flask-Limiter is built on) on the limiter's storage otherwise.
"""
from __future__ import annotations

import functools
import logging
import math
import threading
import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from app.policies import Limit
from services.errors import ServiceError

log = logging.getLogger(__name__)

LOGIN_RATE_LIMIT = "10/minute"


def _is_batch() -> bool:
    """Several lots: the batch limit. Reads the body through read_json_object, which keeps what it
    parsed (or the refusal) for the view, so the body is parsed once whichever limit applies."""
    from app.api import read_json_object

    try:
        lots = read_json_object().get("lots")
    except ServiceError:
        return False
    return isinstance(lots, list) and len(lots) > 1


class RouteLimits:
    """The limits of one app; ``wrap`` puts the one a route declares around its view."""

    def __init__(self, limiter: Limiter, settings):
        self.limiter = limiter
        self.settings = settings
        self.polling: set[str] = set()  # endpoints counted by the polling check, not by Flask-Limiter
        self._polling_check = None

    def wrap(self, endpoint: str, limit: Limit, view):
        s = self.settings
        if limit is Limit.NONE:
            return view
        if limit is Limit.POLLING:
            self.polling.add(endpoint)
            if not s.ratelimit_enabled:
                return view
            if self._polling_check is None:
                self._polling_check = polling_check(self.limiter, s.rate_limit_polling)
            return _limited(view, self._polling_check)
        if limit is Limit.GENERATE:
            view = self.limiter.limit(s.rate_limit_sync, scope="sync", exempt_when=_is_batch)(view)
            return self.limiter.limit(s.rate_limit_batch, scope="batch", exempt_when=lambda: not _is_batch())(view)
        if limit is Limit.VALIDATION:
            # up to 50 outbound fetches a call: as many calls as one-lot requests, in a count of their own
            return self.limiter.limit(s.rate_limit_sync, scope="validation")(view)
        if limit is Limit.LOGIN:
            # only a dashboard that exists counts sign-ins; a disabled one answers 404 to every attempt
            return self.limiter.limit(LOGIN_RATE_LIMIT, scope="dashboard-login")(view) if s.admin_token else view
        raise ValueError(f"no rate limit for {limit}")


def init_app(app: Flask) -> Limiter:
    """Create the limiter, then enforce the policy every registered route declares (app/policies.py)."""
    from app import policies

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
    hooks = _hook_counts(app)
    limiter.init_app(app)
    route_limits = RouteLimits(limiter, settings)
    polling = route_limits.polling
    # Flask-Limiter's own hooks run for the routes it limits, not for polling (see the module docstring)
    _skip_new_hooks(app, hooks, lambda: request.endpoint in polling)
    app.extensions["genservice_limiter"] = limiter
    app.extensions["genservice_limits"] = route_limits
    policies.enforce(app)
    return limiter


def limited(app: Flask, endpoint: str, limit: Limit, view):
    """``view`` counted by the rate limit ``limit`` of ``app`` (called by app/policies.py)."""
    return app.extensions["genservice_limits"].wrap(endpoint, limit, view)


def polling_check(limiter: Limiter, rate: str):
    """A function that counts one poll for the caller's address, or raises 429 RATE_LIMITED with
    Retry-After once any of the ``rate`` limits (``1000/minute``, or several separated by ``;``) is used up."""
    items = parse_many(rate)
    storage = limiter.storage
    windows = ProcessSlidingWindows() if isinstance(storage, MemoryStorage) else SharedSlidingWindows(storage)

    def check() -> None:
        address = get_remote_address()
        for item in items:
            try:
                wait = windows.hit(item, address)
            except Exception as error:  # an unreachable storage lets the request through, as the other limits do
                log.warning("rate limit storage failed (%s); polling request let through", type(error).__name__)
                return
            if wait is not None:
                raise ServiceError(429, "RATE_LIMITED",
                                   f"Rate limit exceeded ({item}); retry after the time in Retry-After",
                                   retry_after=max(1, math.ceil(wait)))
    return check


class SharedSlidingWindows:
    """The sliding-window counter of the limits library on a shared storage (redis://, memcached://).

    The wait is worked out here from the storage's two counters: the library's own reset time is
    when the next count drops, which may still leave the caller refused (and Redis, counting in
    whole milliseconds, makes it 0 right after a window opens).
    """

    def __init__(self, storage):
        self.storage = storage
        self.strategy = SlidingWindowCounterRateLimiter(storage)

    def hit(self, item: RateLimitItem, address: str) -> float | None:
        """None when the poll is allowed (and counted), else the seconds to wait."""
        if self.strategy.hit(item, "genservice", "polling", address):
            return None
        expiry = item.get_expiry()
        try:
            previous, previous_left, current, current_ttl = self.storage.get_sliding_window(
                item.key_for("genservice", "polling", address), expiry)
        except Exception:
            return float(expiry)
        # the current counter lives two windows and is the current one for the first of them
        return _wait(item.amount, expiry, current, current_ttl - expiry, previous, previous_left)


class ProcessSlidingWindows:
    """The same sliding-window counter, in this process (RATELIMIT_STORAGE_URI=memory://, the default).

    Written here because the limits library's memory storage starts a timer thread, 10 ms after any
    hit that finds none running, to expire its keys: under steady polling that is a new thread every
    10 ms in every process, and in bench/polling_floor.py it cost each poll about 0.15 ms of CPU, a
    fifth of the whole request. Here a window is two counters per address and limit, stale ones are
    dropped once per window length, and the count is the library's: the previous window's count,
    weighted by how much of it still overlaps the last ``expiry`` seconds, plus the current one's.
    """

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # (amount, expiry, address) -> [window number, count, previous count]
        self._next_prune = 0.0

    def hit(self, item: RateLimitItem, address: str) -> float | None:
        """None when the poll is allowed (and counted), else the seconds until it would be."""
        expiry = item.get_expiry()
        amount = item.amount
        now = self._clock()
        number, into = divmod(now, expiry)
        key = (amount, expiry, address)
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            window = self._windows.get(key)
            if window is None or window[0] < number - 1:
                window = self._windows[key] = [number, 0, 0]
            elif window[0] == number - 1:
                window[:] = [number, 0, window[1]]
            current, previous = window[1], window[2]
            if previous * (expiry - into) / expiry + current + 1 <= amount:
                window[1] += 1
                return None
        left = expiry - into
        return _wait(amount, expiry, current, left, previous, left)

    def __len__(self) -> int:
        return len(self._windows)

    def _prune(self, now: float) -> None:
        self._windows = {key: window for key, window in self._windows.items()
                         if window[0] >= now // key[1] - 1}
        self._next_prune = now + 60


def _wait(amount: int, expiry: float, current: int, left: float, previous: int, previous_left: float) -> float:
    """Seconds until one more request fits under ``amount``: ``current`` counted in the window that
    is current for ``left`` more seconds, ``previous`` in the one before, weighted by the
    ``previous_left`` seconds it still overlaps the last ``expiry``."""
    if current + 1 <= amount:  # the previous window's share has to fade enough
        return max(0.0, previous_left - (amount - 1 - current) * expiry / previous) if previous else 0.0
    # this window is used up: it becomes the previous one, whose share fades in the next
    return max(0.0, left) + expiry * (1 - (amount - 1) / current)


_HOOKS = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")


def _hook_counts(app: Flask) -> dict[str, int]:
    return {name: len(getattr(app, name).get(None, [])) for name in _HOOKS}


def _skip_new_hooks(app: Flask, before: dict[str, int], skip) -> None:
    """Wrap the app-wide hooks registered since ``before`` so that they do nothing when ``skip()``."""
    def before_request(hook):
        return functools.wraps(hook)(lambda: None if skip() else hook())

    def after_request(hook):
        return functools.wraps(hook)(lambda response: response if skip() else hook(response))

    def teardown_request(hook):
        return functools.wraps(hook)(lambda error=None: None if skip() else hook(error))

    wrap = {"before_request_funcs": before_request, "after_request_funcs": after_request,
            "teardown_request_funcs": teardown_request}
    for name, count in before.items():
        hooks = getattr(app, name).get(None, [])
        hooks[count:] = [wrap[name](hook) for hook in hooks[count:]]


def _limited(view, check):
    @functools.wraps(view)
    def limited(*args, **kwargs):
        check()
        return view(*args, **kwargs)
    return limited
