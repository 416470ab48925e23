"""Rate limits: sync, batch and polling, per client for signed requests, per address for the others.

Each route declares which limit counts it (app/policies.py, ``Limit``), and ``enforce`` wraps its view
in three layers, outermost first:

1. ``RouteLimits.guard``: failed authentications per client address. Before any signature work, an
   address whose requests failed their check (401/403, or a body refused before its signature could be
   checked) as often as the route's limit allows inside the window is refused 429, without another
   HMAC, database read or body parse. Only failures count here, so a client's own requests never use
   up its address.
2. the signature check (app/auth.py), which names the client in ``flask.g.client``.
3. ``RouteLimits.wrap``: the client's own rate, counted per client id (one client behind many addresses
   has one count; many clients behind one address have one each). A client's ``rate_limit_sync`` /
   ``_batch`` / ``_polling`` (services/clients.py) replaces RATE_LIMIT_SYNC / _BATCH / _POLLING; unset,
   the setting applies, still counted for that client alone.

Routes without a signature (the dashboard's sign-in) are counted per address, in layer 3 alone.
POST /test-image-validation (up to 50 outbound fetches a call) is held to the sync rate in a count of
its own, so checking photos does not use up the budget for describing them. One endpoint serves both
sync and batch requests, so its two limits look at the body: one lot counts against the sync rate,
more against the batch rate (the body was parsed by the signature check, or is parsed once for both).
Storage is in memory by default; RATELIMIT_STORAGE_URI (e.g. redis://) shares it between instances.

The polling endpoints are limited without Flask-Limiter: profiled, its per-request bookkeeping
(resolving, filtering and evaluating the route's limits in its before-request hook and again in the
decorator, then the X-RateLimit headers) cost a poll more than its database read, so its hooks skip
them. They count a sliding window (two counters per key and limit, a constant cost; the moving
window keeps one entry per request): in this process for memory:// (ProcessSlidingWindows), through
the ``limits`` library (what Flask-Limiter is built on) on the limiter's storage otherwise. The failed
authentications of every route are counted the same way, since the guard runs on every poll too; in
this process, a look at an empty set of failure windows (the usual case) takes neither lock nor
arithmetic, and on a shared storage it is one more read per request.
"""
from __future__ import annotations

import functools
import logging
import math
import threading
import time
from typing import Callable

from flask import Flask, Response, g, request
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


def _parsed_as_batch() -> bool:
    """Whether the body, if the signature check parsed it, held several lots (never parses it)."""
    body = g.get("json_body")
    lots = body.get("lots") if isinstance(body, dict) else None
    return isinstance(lots, list) and len(lots) > 1


@functools.lru_cache(maxsize=1024)
def _items(rate: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(rate))


def client_rate(own: str | None, default: str) -> str:
    """A client's own rate when it has a valid one, else the deployment's setting."""
    if own:
        try:
            if _items(own):
                return own
        except ValueError:
            log.warning("client rate limit %r is not a rate like '100/minute'; the setting %r applies", own, default)
    return default


class RateLimited(ServiceError):
    """429 RATE_LIMITED with Retry-After, and the X-RateLimit-* headers where the route sends them."""

    def __init__(self, message: str, wait: float, item: RateLimitItem, details: dict | None = None,
                 headers: bool = False):
        retry = max(1, math.ceil(wait))
        super().__init__(429, "RATE_LIMITED", message, details, retry_after=retry)
        self.headers = {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(int(time.time()) + retry)} if headers else {}


def _rate_limited_response(exc: RateLimited) -> Response:
    from app.errors import service_error_response

    response = service_error_response(exc)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


class RouteLimits:
    """The limits of one app; ``guard`` and ``wrap`` put a route's around its signature check."""

    def __init__(self, limiter: Limiter, settings):
        self.limiter = limiter
        self.settings = settings
        self.polling: set[str] = set()  # endpoints counted by the polling check, not by Flask-Limiter
        self._windows: dict[str, ProcessSlidingWindows | SharedSlidingWindows] = {}

    def windows(self, namespace: str):
        """The sliding windows of one count (``polling``, ``failed-sync``, ...), made on first use."""
        found = self._windows.get(namespace)
        if found is None:
            storage = self.limiter.storage
            found = self._windows[namespace] = ProcessSlidingWindows() if isinstance(storage, MemoryStorage) \
                else SharedSlidingWindows(storage, namespace)
        return found

    # ---- layer 3: the caller's own rate ----------------------------------------------------------

    def wrap(self, endpoint: str, limit: Limit, view, *, by_client: bool = True):
        """``view`` counted by ``limit``: per ``g.client`` at its own rate (set by the signature check,
        which runs first), or per address at the setting's rate with ``by_client=False``."""
        s = self.settings
        if limit is Limit.NONE:
            return view
        if limit is Limit.LOGIN:
            # only a dashboard that exists counts sign-ins; a disabled one answers 404 to every attempt
            return self.limiter.limit(LOGIN_RATE_LIMIT, scope="dashboard-login")(view) if s.admin_token else view
        if limit is Limit.POLLING:
            self.polling.add(endpoint)
            if not s.ratelimit_enabled:
                return view
            if by_client:
                return _limited(view, client_polling_check(self.windows("polling"), s.rate_limit_polling))
            return _limited(view, polling_check(self.windows("polling-address"), s.rate_limit_polling))
        key = _client_key if by_client else get_remote_address
        if limit is Limit.GENERATE:
            sync = self._rate("rate_limit_sync", s.rate_limit_sync, by_client)
            batch = self._rate("rate_limit_batch", s.rate_limit_batch, by_client)
            view = self.limiter.limit(sync, key_func=key, scope="sync", exempt_when=_is_batch)(view)
            return self.limiter.limit(batch, key_func=key, scope="batch", exempt_when=lambda: not _is_batch())(view)
        if limit is Limit.VALIDATION:
            # up to 50 outbound fetches a call: as many calls as one-lot requests, in a count of their own
            return self.limiter.limit(self._rate("rate_limit_sync", s.rate_limit_sync, by_client), key_func=key,
                                      scope="validation")(view)
        raise ValueError(f"no rate limit for {limit}")

    @staticmethod
    def _rate(field: str, default: str, by_client: bool) -> str | Callable[[], str]:
        if not by_client:
            return default
        return lambda: client_rate(getattr(g.client.limits, field), default)

    # ---- layer 1: failed authentications per address ---------------------------------------------

    def guard(self, endpoint: str, limit: Limit, view):
        """``view`` (a signature check around the view), refused 429 for an address whose failed checks
        have used up ``limit``'s rate, and counting each check that fails against its address."""
        s = self.settings
        if not s.ratelimit_enabled or limit in (Limit.NONE, Limit.LOGIN):
            return view
        if limit is Limit.GENERATE:
            counts = {"sync": self._failures("sync", s.rate_limit_sync),
                      "batch": self._failures("batch", s.rate_limit_batch)}
            kind = lambda: "batch" if _parsed_as_batch() else "sync"  # noqa: E731
        elif limit is Limit.POLLING:
            counts = {"polling": self._failures("polling", s.rate_limit_polling)}
            kind = lambda: "polling"  # noqa: E731
        elif limit is Limit.VALIDATION:
            counts = {"validation": self._failures("validation", s.rate_limit_sync)}
            kind = lambda: "validation"  # noqa: E731
        else:
            raise ValueError(f"no rate limit for {limit}")
        headers = limit is not Limit.POLLING  # the Flask-Limiter routes send X-RateLimit-* headers
        checks = tuple(counts.values())

        @functools.wraps(view)
        def guarded(*args, **kwargs):
            address = get_remote_address()
            for count in checks:
                count.refuse(address, headers)
            try:
                return view(*args, **kwargs)
            except Exception:
                if "client" not in g:  # the signature check failed: the view never ran
                    counts[kind()].count(address)
                raise
        return guarded

    def _failures(self, kind: str, rate: str) -> FailureCount:
        return FailureCount(self.windows(f"failed-{kind}"), _items(rate))


class FailureCount:
    """Failed authentications of one kind per address, over sliding windows."""

    def __init__(self, windows, items: tuple[RateLimitItem, ...]):
        self.windows = windows
        self.items = items

    def refuse(self, address: str, headers: bool) -> None:
        """RateLimited when one more failure would pass a limit (the request is not counted)."""
        for item in self.items:
            try:
                wait = self.windows.test(item, address)
            except Exception as error:  # an unreachable storage lets the request through, as the other limits do
                log.warning("rate limit storage failed (%s); request let through", type(error).__name__)
                return
            if wait is not None:
                raise RateLimited(f"Too many requests without a valid signature from this address ({item}); "
                                  "retry after the time in Retry-After", wait, item,
                                  {"counted_by": "address"}, headers=headers)

    def count(self, address: str) -> None:
        for item in self.items:
            try:
                self.windows.hit(item, address)
            except Exception as error:
                log.warning("rate limit storage failed (%s); failure not counted", type(error).__name__)
                return


def _client_key() -> str:
    return g.client.id


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
    app.register_error_handler(RateLimited, _rate_limited_response)
    app.extensions["genservice_limiter"] = limiter
    app.extensions["genservice_limits"] = route_limits
    policies.enforce(app)
    return limiter


def limited(app: Flask, endpoint: str, limit: Limit, view, *, by_client: bool = True):
    """``view`` counted by the rate limit ``limit`` of ``app`` (called by app/policies.py)."""
    return app.extensions["genservice_limits"].wrap(endpoint, limit, view, by_client=by_client)


def guarded(app: Flask, endpoint: str, limit: Limit, view):
    """``view`` behind the per-address count of failed authentications (called by app/policies.py)."""
    return app.extensions["genservice_limits"].guard(endpoint, limit, view)


def _count(windows, items, key: str, details: dict | None = None) -> None:
    for item in items:
        try:
            wait = windows.hit(item, key)
        except Exception as error:  # an unreachable storage lets the request through, as the other limits do
            log.warning("rate limit storage failed (%s); polling request let through", type(error).__name__)
            return
        if wait is not None:
            raise ServiceError(429, "RATE_LIMITED", f"Rate limit exceeded ({item}); retry after the time in "
                               "Retry-After", details, retry_after=max(1, math.ceil(wait)))


def polling_check(windows, rate: str):
    """A function that counts one poll for the caller's address, or raises 429 RATE_LIMITED with
    Retry-After once any of the ``rate`` limits (``1000/minute``, or several separated by ``;``) is used up."""
    items = _items(rate)

    def check() -> None:
        _count(windows, items, get_remote_address())
    return check


def client_polling_check(windows, default_rate: str):
    """The same per ``g.client``, at its own polling rate when it has one."""
    default = _items(default_rate)

    def check() -> None:
        client = g.client
        own = client.limits.rate_limit_polling
        _count(windows, default if own is None else _items(client_rate(own, default_rate)), client.id)
    return check


class SharedSlidingWindows:
    """The sliding-window counter of the limits library on a shared storage (redis://, memcached://).

    The wait is worked out here from the storage's two counters: the library's own reset time is
    when the next count drops, which may still leave the caller refused (and Redis, counting in
    whole milliseconds, makes it 0 right after a window opens).
    """

    def __init__(self, storage, namespace: str = "polling"):
        self.storage = storage
        self.namespace = namespace
        self.strategy = SlidingWindowCounterRateLimiter(storage)

    def hit(self, item: RateLimitItem, key: str) -> float | None:
        """None when the request is allowed (and counted), else the seconds to wait."""
        if self.strategy.hit(item, "genservice", self.namespace, key):
            return None
        try:
            return self._wait(item, key)
        except Exception:
            return float(item.get_expiry())

    def test(self, item: RateLimitItem, key: str) -> float | None:
        """None when one more request would be allowed (nothing is counted), else the seconds to wait."""
        return None if self.strategy.test(item, "genservice", self.namespace, key) else self._wait(item, key)

    def _wait(self, item: RateLimitItem, key: str) -> float:
        expiry = item.get_expiry()
        previous, previous_left, current, current_ttl = self.storage.get_sliding_window(
            item.key_for("genservice", self.namespace, key), expiry)
        # the current counter lives two windows and is the current one for the first of them
        return _wait(item.amount, expiry, current, current_ttl - expiry, previous, previous_left)


class ProcessSlidingWindows:
    """The same sliding-window counter, in this process (RATELIMIT_STORAGE_URI=memory://, the default).

    Written here because the limits library's memory storage starts a timer thread, 10 ms after any
    hit that finds none running, to expire its keys: under steady polling that is a new thread every
    10 ms in every process, and in bench/polling_floor.py it cost each poll about 0.15 ms of CPU, a
    fifth of the whole request. Here a window is two counters per key and limit, stale ones are
    dropped once per window length, and the count is the library's: the previous window's count,
    weighted by how much of it still overlaps the last ``expiry`` seconds, plus the current one's.
    """

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # (amount, expiry, key) -> [window number, count, previous count]
        self._next_prune = 0.0

    def hit(self, item: RateLimitItem, key: str) -> float | None:
        """None when the request is allowed (and counted), else the seconds until it would be."""
        return self._check(item, key, count=True)

    def test(self, item: RateLimitItem, key: str) -> float | None:
        """None when one more request would be allowed (nothing is counted), else the seconds to wait."""
        if not self._windows:  # nothing counted lately (the usual case for failures): no lock, no arithmetic
            return None
        return self._check(item, key, count=False)

    def _check(self, item: RateLimitItem, key: str, count: bool) -> float | None:
        expiry = item.get_expiry()
        amount = item.amount
        now = self._clock()
        number, into = divmod(now, expiry)
        slot = (amount, expiry, key)
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            window = self._windows.get(slot)
            if window is None or window[0] < number - 1:
                current, previous = 0, 0
            elif window[0] == number - 1:
                current, previous = 0, window[1]
            else:
                current, previous = window[1], window[2]
            if previous * (expiry - into) / expiry + current + 1 <= amount:
                if count:
                    if window is not None and window[0] == number:
                        window[1] += 1
                    else:
                        self._windows[slot] = [number, 1, previous]
                return None
        left = expiry - into
        return _wait(amount, expiry, current, left, previous, left)

    def __len__(self) -> int:
        return len(self._windows)

    def _prune(self, now: float) -> None:
        self._windows = {slot: window for slot, window in self._windows.items()
                         if window[0] >= now // slot[1] - 1}
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
