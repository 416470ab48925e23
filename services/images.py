"""Check that client-supplied photo URLs point at reachable, reasonably sized images.

Every URL and every redirect hop goes through the SSRF guard before any
traffic; the connection itself is made by the guarded client, which checks
the addresses a name resolves to.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import httpx

from services.netguard import BlockedURL, OutboundPolicy, blocked_reason, guarded_client

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HEAD_REFUSED_STATUSES = frozenset({400, 403, 405, 501})
_WAIT_GRACE = 0.5


@dataclass
class ImageCheck:
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
    url: str
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


class ImageChecker:
    """Checks image URLs concurrently through one guarded client and one bounded pool.

    Each request is bounded by ``timeout``; one URL's whole check (HEAD, GET
    fallback, redirects) by ``timeout * (max_redirects + 2)``.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        timeout: float = 10.0,
        max_bytes: int = 10 * 1024 * 1024,
        concurrency: int = 16,
        max_redirects: int = 3,
    ):
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.max_redirects = max_redirects
        self._client = guarded_client(policy, timeout, max_connections=concurrency)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="image-check")

    @property
    def budget(self) -> float:
        """Upper bound in seconds for checking one URL."""
        return self.timeout * (self.max_redirects + 2)

    def check_one(self, url: str) -> ImageCheck:
        return self._check(url, time.monotonic() + self.budget)

    def check_many(self, urls: Sequence[str]) -> ImageCheckResult:
        """Check ``urls`` concurrently; the call returns within about one ``budget``."""
        return _result(urls, self._check_distinct(urls, self.budget))

    def check_many_lots(self, lots_urls: Sequence[Sequence[str]]) -> list[ImageCheckResult]:
        """Check a batch's lots with one network check per distinct URL.

        The time bound scales with the number of waves the pool needs.
        """
        distinct = list(dict.fromkeys(url for lot in lots_urls for url in lot))
        waves = max(1, math.ceil(len(distinct) / self.concurrency))
        checks = self._check_distinct(distinct, self.budget * waves)
        return [_result(lot, checks) for lot in lots_urls]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> "ImageChecker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_distinct(self, urls: Iterable[str], budget: float) -> dict[str, ImageCheck]:
        deadline = time.monotonic() + budget
        futures = {url: self._executor.submit(self._check, url, deadline) for url in dict.fromkeys(urls)}
        wait(futures.values(), timeout=budget + _WAIT_GRACE)
        return {url: _outcome(url, future) for url, future in futures.items()}

    def _check(self, url: str, deadline: float) -> ImageCheck:
        try:
            return self._inspect(url, deadline)
        except BlockedURL as exc:
            return _failed(url, f"blocked: {exc.reason}")
        except _Failed as exc:
            return _failed(url, exc.reason, exc.status_code)
        except httpx.TimeoutException:
            return _failed(url, "timeout")
        except httpx.HTTPError as exc:
            return _failed(url, _transport_reason(exc))

    def _inspect(self, url: str, deadline: float) -> ImageCheck:
        self.policy.check_url(url)
        reply, hops = self._follow("HEAD", url, deadline, hops=0)
        if _needs_get(reply):
            reply, hops = self._follow("GET", reply.url, deadline, hops)
        return self._verdict(url, reply)

    def _follow(self, method: str, url: str, deadline: float, hops: int) -> tuple[_Reply, int]:
        """Request ``url``, following redirects by hand so every hop is checked."""
        while True:
            reply = self._request(method, url, deadline)
            if reply.status not in REDIRECT_STATUSES:
                return reply, hops
            if hops >= self.max_redirects:
                raise _Failed("too many redirects", reply.status)
            url = _redirect_target(reply)
            self.policy.check_url(url)
            hops += 1

    def _request(self, method: str, url: str, deadline: float) -> _Reply:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failed("timeout")
        request = self._client.build_request(method, url, timeout=min(self.timeout, remaining))
        response = self._client.send(request, stream=True)
        try:
            reply = _Reply(
                url=url,
                status=response.status_code,
                content_type=_media_type(response.headers.get("content-type")),
                size=_content_length(response.headers.get("content-length")),
                location=response.headers.get("location"),
            )
            if method == "GET" and reply.is_success and reply.is_image and reply.size is None:
                reply.size, reply.measured = self._count_body(response, deadline), True
            elif method == "HEAD":
                response.read()  # an empty body; read, it lets close() keep the connection for the next check
            return reply
        finally:
            response.close()

    def _count_body(self, response: httpx.Response, deadline: float) -> int:
        """Bytes in the body, reading at most ``max_bytes + 1``."""
        read = 0
        for chunk in response.iter_raw():
            read += len(chunk)
            if read > self.max_bytes:
                break
            if time.monotonic() > deadline:
                raise _Failed("timeout")
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
        return str(httpx.URL(reply.url).join(reply.location))
    except (httpx.InvalidURL, ValueError):
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
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.ProtocolError):
        return "protocol error"
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


def _outcome(url: str, future: Future) -> ImageCheck:
    if future.done():
        return future.result()
    future.cancel()
    return _failed(url, "timeout")


def _result(urls: Sequence[str], checks: dict[str, ImageCheck]) -> ImageCheckResult:
    """Expand per-distinct-URL checks back to the input order (repeats get their own copy)."""
    ordered = [dataclasses.replace(checks[url]) for url in urls]
    return ImageCheckResult(
        valid_urls=[c.url for c in ordered if c.ok],
        missing_urls=[c.url for c in ordered if not c.ok],
        checks=ordered,
    )
