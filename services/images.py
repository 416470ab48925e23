"""Check that client-supplied photo URLs point at reachable, reasonably sized images.

Every URL and every redirect hop goes through the SSRF guard before any
traffic; the connection itself is made through the guarding resolver, which
checks every address a name resolves to before aiohttp connects to it.

The checks run on one asyncio event loop in a thread of their own (aiohttp):
thousands can be in flight at a fraction of a millisecond of CPU each, where a
thread per request cost close to a millisecond and a thread. Callers stay
synchronous: they hand a list of URLs over and wait for the verdicts.

Three bounds hold for every check:

* a wall-clock deadline of ``timeout`` seconds for the whole check (connect,
  headers, body, the GET after a refused HEAD and every redirect hop), so a
  host that drips one byte a second is cut at the deadline;
* ``concurrency`` checks in flight per process;
* ``host_concurrency`` checks in flight per destination (scheme, host, port),
  taken before a process-wide slot, so a host with thousands of URLs (however
  they are spelt) queues behind its own cap and never fills the pool; a batch
  page may be held lower (``host_limit``: the process's share of a cap for the
  whole deployment, workers/jobs.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from collections import deque
from typing import Callable, Coroutine, Iterable, Iterator, Sequence

import aiohttp
from yarl import URL

from services.netguard import BlockedURL, GuardedResolver, OutboundPolicy, blocked_reason, destination

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HEAD_REFUSED_STATUSES = frozenset({400, 403, 405, 501})
_WAIT_GRACE = 0.5
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """One URL's verdict; immutable, so a URL given twice (in one lot or in several) shares it."""

    url: str
    ok: bool
    reason: str | None
    status_code: int | None
    content_type: str | None
    size: int | None


@dataclass
class ImageCheckResult:
    """Outcome for a list of URLs; both URL lists keep input order and repeats."""

    valid_urls: list[str]
    missing_urls: list[str]
    checks: list[ImageCheck]


def required_images(total: int, ratio: float) -> int:
    """How many of ``total`` images must be valid: ``ceil(ratio * total)``, at least 1.

    The product is rounded first so that float noise (0.1 * 30 = 3.0000000000000004)
    does not demand one image more than intended.
    """
    if total <= 0:
        return 0
    return max(1, math.ceil(round(ratio * total, 9)))


class _Failed(Exception):
    def __init__(self, reason: str, status_code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@dataclass
class _Reply:
    url: URL
    status: int
    content_type: str | None
    size: int | None
    measured: bool = False
    location: str | None = None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_image(self) -> bool:
        return bool(self.content_type) and self.content_type.startswith("image/")


class _HostGates:
    """How many checks each destination has in flight (over every call), within ``size`` each.

    Taking a gate never waits: a caller that finds every host it has work for at its cap waits
    for :meth:`freed`, which wakes whenever any check ends.
    """

    def __init__(self, size: int):
        self.size = size
        self._busy: dict[str, int] = {}
        self._waiters: list[asyncio.Future] = []

    def try_take(self, key: str, limit: int | None = None) -> bool:
        """A gate of ``key`` if it has fewer than ``limit`` (default ``size``) checks in flight."""
        busy = self._busy.get(key, 0)
        if busy >= (self.size if limit is None else limit):
            return False
        self._busy[key] = busy + 1
        return True

    def give(self, key: str) -> None:
        busy = self._busy[key] - 1
        if busy:
            self._busy[key] = busy
        else:
            del self._busy[key]
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def freed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


def _by_destination(urls: Iterable[str]) -> dict[str, deque[str]]:
    """Distinct URLs grouped by destination (scheme, host and port), each group in the order given."""
    by_host: dict[str, deque[str]] = {}
    for url in dict.fromkeys(urls):
        by_host.setdefault(destination(url), deque()).append(url)
    return by_host


class _Queue:
    """One call's URLs, grouped by destination and handed out round robin to hosts below their cap."""

    def __init__(self, by_host: dict[str, deque[str]], gates: _HostGates, host_limit: int | None = None):
        self.gates = gates
        self.host_limit = host_limit
        self._by_host = by_host
        self._hosts = deque(self._by_host)

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def urls(self) -> int:
        return sum(len(urls) for urls in self._by_host.values())

    def take(self) -> tuple[str, str] | None:
        """(host, url) of the next host in turn that has room, its gate taken; None if all are full."""
        for _ in range(len(self._hosts)):
            host = self._hosts[0]
            self._hosts.rotate(-1)
            if self.gates.try_take(host, self.host_limit):
                urls = self._by_host[host]
                url = urls.popleft()
                if not urls:
                    del self._by_host[host]
                    self._hosts.remove(host)
                return host, url
        return None


class _Loop:
    """An event loop in a daemon thread, started on first use and again in a forked child."""

    def __init__(self, name: str):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def get(self, setup: Callable[[], Coroutine]) -> asyncio.AbstractEventLoop:
        """The running loop; a new one runs ``setup()`` before anyone else may use it."""
        with self._lock:
            if self.loop is not None and self._pid == os.getpid():
                return self.loop
            loop = asyncio.new_event_loop()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(setup(), loop).result()
            self.loop = loop
            return loop

    def stop(self) -> None:
        with self._lock:
            loop, thread, self.loop = self.loop, self._thread, None
            if loop is None or self._pid != os.getpid():
                return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


class ImageChecker:
    """Checks image URLs concurrently on one event loop through one guarded aiohttp session.

    ``timeout`` bounds one URL's whole check (HEAD, GET fallback, redirects), from
    the moment it gets its slots; :meth:`check_many` also returns within one
    ``budget`` of being called, however many URLs of one host wait for slots.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        timeout: float = 10.0,
        max_bytes: int = 10 * 1024 * 1024,
        concurrency: int = 256,
        max_redirects: int = 3,
        host_concurrency: int = 32,
    ):
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.host_concurrency = max(1, min(host_concurrency, concurrency))
        self.max_redirects = max_redirects
        self._loop = _Loop("image-check")
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._hosts: _HostGates | None = None

    @property
    def budget(self) -> float:
        """Upper bound in seconds for checking one URL."""
        return self.timeout

    def check_one(self, url: str) -> ImageCheck:
        return self.check_many([url]).checks[0]

    def check_many(self, urls: Sequence[str]) -> ImageCheckResult:
        """Check ``urls`` concurrently; the call returns within about one ``budget``."""
        return _result(urls, self._run(lambda: self._check_distinct(_by_destination(urls), self.budget), self.budget))

    def check_many_lots(self, lots_urls: Sequence[Sequence[str]], host_limit: int | None = None
                        ) -> list[ImageCheckResult]:
        """Check a batch's lots with one network check per distinct URL.

        Each check has its own deadline once it starts; the call ends when the last
        one has, after at most as many ``budget`` as the busiest host needs waves.
        ``host_limit`` holds this call's checks in flight per destination below ``host_concurrency``
        (this process's share of a deployment-wide cap), never below one.
        """
        by_host = _by_destination(url for lot in lots_urls for url in lot)
        per_host = self.host_concurrency if host_limit is None else max(1, min(host_limit, self.host_concurrency))
        waves = self._waves(by_host, per_host)
        checks = self._run(lambda: self._check_distinct(by_host, None, per_host), self.budget * waves)
        return [_result(lot, checks) for lot in lots_urls]

    def close(self) -> None:
        loop = self._loop.loop
        if loop is not None and self._session is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._session.close(), loop).result(timeout=5)
            except Exception:  # closing is best effort; the loop goes anyway
                pass
        self._session = None
        self._loop.stop()

    def __enter__(self) -> "ImageChecker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- the event loop side ---------------------------------------------------------------
    def _waves(self, by_host: dict[str, deque[str]], per_host: int) -> int:
        total = sum(len(urls) for urls in by_host.values())
        busiest = max((len(urls) for urls in by_host.values()), default=0)
        return max(1, math.ceil(total / self.concurrency), math.ceil(busiest / per_host))

    def _run(self, make: Callable[[], Coroutine], bound: float) -> dict[str, ImageCheck]:
        """Run the checks on the loop; past ``bound`` (a loop too busy to keep its deadlines)
        they are cancelled and the URLs without a verdict count as timed out."""
        loop = self._loop.get(self._setup)
        future: Future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return future.result(timeout=bound + _WAIT_GRACE)
        except TimeoutError:
            future.cancel()
            return {}

    async def _setup(self) -> None:
        """Session and semaphores belong to the loop that runs them, so they are made inside it."""
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy), limit=self.concurrency, limit_per_host=self.host_concurrency,
            ttl_dns_cache=10, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None), headers={"Accept-Encoding": "identity"})
        self._slots = asyncio.Semaphore(self.concurrency)
        self._hosts = _HostGates(self.host_concurrency)

    async def _check_distinct(self, by_host: dict[str, deque[str]], budget: float | None,
                              host_limit: int | None = None) -> dict[str, ImageCheck]:
        """Check each distinct URL once; past the call's ``budget`` the rest count as timed out.

        At most ``concurrency`` workers per call take URLs host by host in turn, so neither a
        call's size nor one host with many URLs creates more work in flight than the caps allow.
        """
        loop = asyncio.get_running_loop()
        call_deadline = None if budget is None else loop.time() + budget
        queue = _Queue(by_host, self._hosts, host_limit)
        results: dict[str, ImageCheck] = {}

        async def worker() -> None:
            while queue:
                async with self._slots:
                    taken = queue.take()
                    if taken is not None:
                        host, url = taken
                        try:
                            results[url] = await self._check(url, call_deadline)
                        finally:
                            self._hosts.give(host)
                        continue
                await self._hosts.freed()

        workers = min(self.concurrency, queue.urls or 1)
        try:
            async with asyncio.timeout_at(call_deadline):
                await asyncio.gather(*(worker() for _ in range(workers)))
        except TimeoutError:
            pass
        return results

    async def _check(self, url: str, call_deadline: float | None) -> ImageCheck:
        deadline = asyncio.get_running_loop().time() + self.timeout
        if call_deadline is not None:
            deadline = min(deadline, call_deadline)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._inspect(url)
        except TimeoutError:
            return _failed(url, "timeout")
        except BlockedURL as exc:
            return _failed(url, f"blocked: {exc.reason}")
        except _Failed as exc:
            return _failed(url, exc.reason, exc.status_code)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return _failed(url, _transport_reason(exc))
        except Exception as exc:  # whatever else a hostile answer provokes fails this photo, never the caller
            return _failed(url, f"request failed ({type(exc).__name__})")

    async def _inspect(self, url: str) -> ImageCheck:
        reply, hops = await self._follow("HEAD", self._guard(url), hops=0)
        if _needs_get(reply):
            reply, hops = await self._follow("GET", reply.url, hops)
        return self._verdict(url, reply)

    def _guard(self, url: str) -> URL:
        """The policy on the URL as both parsers read it: httpx's (the policy's own) and yarl's (aiohttp's).

        The yarl URL returned is what the request is made with, so aiohttp connects to the host checked
        here and does not parse the URL a second time.
        """
        self.policy.check_url(url)
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise BlockedURL("invalid URL", url) from None
        if not parsed.raw_host:
            raise BlockedURL("missing host", url)
        self.policy.check_host(parsed.raw_host)
        return parsed

    async def _follow(self, method: str, url: URL, hops: int) -> tuple[_Reply, int]:
        """Request ``url`` (checked by :meth:`_guard`), following redirects by hand so every hop is checked."""
        while True:
            reply = await self._request(method, url)
            if reply.status not in REDIRECT_STATUSES:
                return reply, hops
            if hops >= self.max_redirects:
                raise _Failed("too many redirects", reply.status)
            url = self._guard(_redirect_target(reply))
            hops += 1

    async def _request(self, method: str, url: URL) -> _Reply:
        async with self._session.request(method, url, allow_redirects=False) as response:
            reply = _Reply(
                url=url,
                status=response.status,
                content_type=_media_type(response.headers.get("Content-Type")),
                size=_content_length(response.headers.get("Content-Length")),
                location=response.headers.get("Location"),
            )
            if method == "GET" and reply.is_success and reply.is_image and reply.size is None:
                reply.size, reply.measured = await self._count_body(response), True
            elif method == "GET":
                response.close()  # the body is not wanted: drop the connection rather than drain it
            return reply

    async def _count_body(self, response: aiohttp.ClientResponse) -> int:
        """Bytes in the (raw) body, reading at most ``max_bytes + 1``."""
        read = 0
        while chunk := await response.content.read(_READ_CHUNK):
            read += len(chunk)
            if read > self.max_bytes:
                response.close()
                break
        return read

    def _verdict(self, url: str, reply: _Reply) -> ImageCheck:
        if not reply.is_success:
            reason = f"HTTP {reply.status}"
        elif not reply.is_image:
            reason = f"not an image ({reply.content_type or 'no content-type'})"
        elif reply.size is not None and reply.size > self.max_bytes:
            reason = f"too large (over {self.max_bytes} bytes)" if reply.measured else f"too large ({reply.size} bytes)"
        elif reply.size == 0:
            reason = "empty image"
        else:
            reason = None
        return ImageCheck(url, reason is None, reason, reply.status, reply.content_type, reply.size)


def _needs_get(head: _Reply) -> bool:
    """HEAD is refused, says nothing useful about the type, or gives no size."""
    if head.status in HEAD_REFUSED_STATUSES:
        return True
    if not head.is_success:
        return False
    return not head.content_type or (head.is_image and not head.size)


def _redirect_target(reply: _Reply) -> str:
    if not reply.location:
        raise _Failed("redirect without location", reply.status)
    try:
        return str(reply.url.join(URL(reply.location)))
    except (ValueError, TypeError):
        raise _Failed("invalid redirect location", reply.status) from None


def _media_type(header: str | None) -> str | None:
    if not header:
        return None
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type if "/" in media_type else None


def _content_length(header: str | None) -> int | None:
    try:
        size = int(header) if header is not None else None
    except ValueError:
        return None
    return size if size is not None and size >= 0 else None


def _transport_reason(exc: BaseException) -> str:
    reason = blocked_reason(exc)
    if reason:
        return f"blocked: {reason}"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientOSError)):
        return "connection failed"
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError, aiohttp.ServerDisconnectedError)):
        return "protocol error"
    if isinstance(exc, aiohttp.InvalidURL):
        return "blocked: invalid URL"
    return f"request failed ({type(exc).__name__})"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _failed(url: str, reason: str, status_code: int | None = None) -> ImageCheck:
    return ImageCheck(url, False, reason, status_code, None, None)


def _result(urls: Sequence[str], checks: dict[str, ImageCheck]) -> ImageCheckResult:
    """Expand per-distinct-URL checks back to the input order (repeats share their verdict)."""
    ordered = [checks.get(url) or _failed(url, "timeout") for url in urls]
    return ImageCheckResult(
        valid_urls=[c.url for c in ordered if c.ok],
        missing_urls=[c.url for c in ordered if not c.ok],
        checks=ordered,
    )
