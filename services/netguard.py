"""SSRF guard for every outbound request the service makes.

Two layers, both driven by one :class:`OutboundPolicy`:

* :meth:`OutboundPolicy.check_url` validates a URL before any traffic
  (scheme, credentials, port, host spelling, allowlist, IP-literal ranges).
* :func:`guarded_client` returns an ``httpx.Client`` whose network backend
  resolves each host itself, refuses if *any* resolved address is forbidden
  and then connects to the address it checked, so DNS rebinding between the
  check and the connection cannot redirect traffic.
* :class:`GuardedResolver` does the same for aiohttp, which connects to the
  addresses its resolver returns (IP literals never reach a resolver: they are
  checked by ``check_url``).

httpx timeouts apply to each read, so a peer sending a byte a second never
trips them; :func:`deadline` puts one wall-clock bound on everything a
guarded client does in its scope (connect, TLS, writes, every read).
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Union
from urllib.parse import urlsplit

import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ALLOWED_SCHEMES = ("http", "https")
VERDICT_CACHE = 4096  # host verdicts an OutboundPolicy remembers
_DEFAULT_PORTS = {"http": 80, "https": 443}

# A URL spelt plainly (http or https, a lower-case ASCII host of DNS labels, a port without leading
# zeros, then only RFC 3986 characters, within PLAIN_URL_MAX characters) reads alike to httpx, yarl and
# urlsplit: the host is what the label pattern matched, and nothing after it can move the authority.
# Its verdict is therefore that of its (scheme, host, port), whatever its path and query, and
# check_url remembers it instead of running httpx's parser for each of a page's 5,000 photos on one
# host. Anything else (userinfo, brackets, upper case, IDNA, spaces, a trailing dot) takes the full check.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_URL = re.compile(rf"(https?)://((?:{_LABEL}\.)*{_LABEL})(?::([1-9][0-9]{{0,4}}))?"
                        r"(?:[/?#][A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]*)?", re.ASCII)
PLAIN_URL_MAX = 4096


def _plain(url: str) -> re.Match | None:
    """The (scheme, host, port) groups of a plainly spelt URL, or None for any other spelling."""
    return _PLAIN_URL.fullmatch(url) if isinstance(url, str) and len(url) <= PLAIN_URL_MAX else None

_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


_METADATA = _nets("169.254.169.254/32", "100.100.100.200/32", "fd00:ec2::254/128")

# Checked in order: the first match names the reason.
_FORBIDDEN: tuple[tuple[tuple[IPNetwork, ...], str], ...] = (
    (_nets("0.0.0.0/8", "::/128"), "unspecified address"),
    (_nets("127.0.0.0/8", "::1/128"), "loopback address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10"),
     "private address"),
    (_nets("169.254.0.0/16", "fe80::/10"), "link-local address"),
    (_nets("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_nets("198.18.0.0/15", "2001:2::/48"), "benchmarking address"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
     "documentation address"),
    (_nets("255.255.255.255/32"), "broadcast address"),
    (_nets("224.0.0.0/4", "ff00::/8"), "multicast address"),
    (_nets("192.0.0.0/24", "192.88.99.0/24", "240.0.0.0/4", "100::/64", "2001::/23",
           "64:ff9b:1::/48"), "reserved address"),
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


class BlockedURL(Exception):
    """An outbound URL or address refused by the policy; ``reason`` is for humans."""

    def __init__(self, reason: str, target: str | None = None):
        self.reason = reason
        self.target = target
        super().__init__(f"{reason}: {target}" if target else reason)


@dataclass(frozen=True)
class ParsedTarget:
    """A URL that passed :meth:`OutboundPolicy.check_url`; ``ip`` is set for IP literals."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None


def parse_ip_host(host: str) -> IPAddress | None:
    """Return the address an IP-literal host denotes, or None for a host name.

    Accepts every spelling resolvers accept (``2130706433``, ``0177.0.0.1``,
    ``0x7f.1``, ``127.1``, bracketed IPv6, zone ids) so that the address we
    check is the one ``getaddrinfo`` would produce. Raises BlockedURL for
    numeric-looking hosts that are not valid addresses.
    """
    host = host.strip("[]").lower()
    if host.endswith("."):
        host = host[:-1]
    if ":" in host:
        return _parse_ipv6(host)
    if not _LEGACY_IPV4.match(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise BlockedURL("invalid IP address", host) from None


def _parse_ipv6(host: str) -> ipaddress.IPv6Address:
    address = re.split("%25|%", host, maxsplit=1)[0]
    try:
        return ipaddress.IPv6Address(address)
    except ValueError:
        raise BlockedURL("invalid IP address", host) from None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form routes to, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_TRANSLATED or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is."""
    for networks, reason in _FORBIDDEN:
        if any(ip in net for net in networks if net.version == ip.version):
            return reason
    if ip.version == 6:
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    if ip.is_multicast:
        return "multicast address"
    if not ip.is_global or ip.is_private or ip.is_reserved:
        return "non-public address"
    return None


def _is_metadata(ip: IPAddress) -> bool:
    if ip.version == 6 and (embedded := _embedded_ipv4(ip)) is not None:
        return _is_metadata(embedded)
    return any(ip in net for net in _METADATA if net.version == ip.version)


def _normalise_name(host: str) -> str:
    """Lower-case, drop one trailing root dot, IDNA-encode."""
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    return host


@dataclass(frozen=True)
class OutboundPolicy:
    """Which outbound destinations are allowed.

    ``allowed_hosts`` entries are host names (exact, case-insensitive; a
    leading "." matches subdomains only) or CIDR ranges. When it is
    non-empty, a host must match a name entry, or be an address inside a
    CIDR entry, before any DNS lookup happens. Cloud metadata addresses are
    refused even with ``allow_private``: no deployment needs them and they
    hand out credentials.
    """

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    # host spelling -> its verdict: (name, ip) or the BlockedURL it raised; the policy never changes, so
    # neither does a verdict, and a page of 5,000 photos on one CDN spells the same host 5,000 times
    _verdicts: dict[str, tuple[str, IPAddress | None] | BlockedURL] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    # (scheme, host, port) of a plainly spelt URL -> the ParsedTarget fields check_url found for it
    _targets: dict[tuple[str, str, str | None], tuple[str, str, int, IPAddress | None]] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        entries = tuple(self.allowed_hosts)
        names, suffixes, networks = set(), [], []
        for entry in entries:
            network = _as_network(entry)
            if network is not None:
                networks.append(network)
            elif entry.startswith("."):
                suffixes.append("." + _normalise_name(entry.lstrip(".")))
            else:
                names.add(_normalise_name(entry))
        object.__setattr__(self, "allowed_hosts", entries)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_suffixes", tuple(suffixes))
        object.__setattr__(self, "_networks", tuple(networks))

    def check_url(self, url: str) -> ParsedTarget:
        """Validate ``url`` without any network access; raise BlockedURL if refused.

        A plainly spelt URL (see ``_PLAIN_URL``) whose scheme, host and port passed before passes
        again without a parse; refusals are always checked afresh.
        """
        plain = _plain(url)
        if plain is None:
            return self._check_url(url)
        key = plain.group(1, 2, 3)
        fields = self._targets.get(key)
        if fields is None:
            target = self._check_url(url)
            if len(self._targets) >= VERDICT_CACHE:
                self._targets.clear()
            fields = self._targets[key] = (target.scheme, target.host, target.port, target.ip)
        return ParsedTarget(url, *fields)

    def _check_url(self, url: str) -> ParsedTarget:
        parsed = _parse_url(url)
        scheme = parsed.scheme
        if scheme not in ALLOWED_SCHEMES:
            raise BlockedURL(f"scheme not allowed ({scheme or 'none'})", url)
        if parsed.userinfo or "@" in _netloc(url):
            raise BlockedURL("credentials in URL")
        host = parsed.raw_host.decode("ascii")
        if not host:
            raise BlockedURL("missing host", url)
        port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise BlockedURL("invalid port", url)
        name, ip = self.check_host(host)
        if ip is None and not self.allow_private and _is_localhost(name):
            raise BlockedURL("loopback address", name)
        return ParsedTarget(url=url, scheme=scheme, host=str(ip) if ip else name, port=port, ip=ip)

    def check_host(self, host: str) -> tuple[str, IPAddress | None]:
        """Check a host before resolving it: spelling, allowlist, IP literal ranges.

        Returns the normalised name and, for IP literals, the address. Verdicts are remembered
        (up to VERDICT_CACHE hosts, then the memory starts afresh), refusals included.
        """
        verdict = self._verdicts.get(host)
        if verdict is None:
            try:
                verdict = self._check_host(host)
            except BlockedURL as exc:
                verdict = exc
            if len(self._verdicts) >= VERDICT_CACHE:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        if isinstance(verdict, BlockedURL):
            raise BlockedURL(verdict.reason, verdict.target)
        return verdict

    def _check_host(self, host: str) -> tuple[str, IPAddress | None]:
        ip = parse_ip_host(host)
        if ip is not None:
            self.check_ip(ip)
            return str(ip), ip
        name = _normalise_name(host)
        if not _HOST_NAME.match(name):
            raise BlockedURL("invalid host", host)
        if self.allowed_hosts and not self.name_allowed(name):
            raise BlockedURL("host not in allowed_hosts", name)
        return name, None

    def check_ip(self, ip: str | IPAddress, *, host: str | None = None) -> None:
        """Refuse an address the service must not connect to.

        ``host`` is the name the address was resolved from: when it matches a
        name entry of ``allowed_hosts`` the CIDR entries do not apply to it.
        """
        address = ip if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else parse_ip_host(str(ip))
        if address is None:
            raise BlockedURL("invalid IP address", str(ip))
        if _is_metadata(address):
            raise BlockedURL("cloud metadata address", str(address))
        if not self.allow_private:
            reason = forbidden_reason(address)
            if reason:
                raise BlockedURL(reason, str(address))
        if self.allowed_hosts and not (host and self.name_allowed(host)) and not self._ip_allowed(address):
            raise BlockedURL("address not in allowed_hosts", str(address))

    def name_allowed(self, host: str) -> bool:
        name = _normalise_name(host)
        return name in self._names or any(name.endswith(s) for s in self._suffixes)

    def _ip_allowed(self, ip: IPAddress) -> bool:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks if net.version == ip.version)


def _is_localhost(name: str) -> bool:
    """RFC 6761: these names always mean loopback, so refuse them without resolving."""
    return name == "localhost" or name.endswith(".localhost")


def _as_network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _parse_url(url: str) -> httpx.URL:
    """Parse with httpx's own parser so the host checked is the host httpx connects to."""
    if not isinstance(url, str) or not url:
        raise BlockedURL("invalid URL", repr(url))
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise BlockedURL("invalid URL", url) from None


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:
        raise BlockedURL("invalid URL", url) from None


def resolve(policy: OutboundPolicy, host: str, port: int) -> list[IPAddress]:
    """Resolve ``host`` and return its addresses, refusing if any one is forbidden.

    Refusing on *any* bad address (not just skipping it) defeats DNS answers
    that mix a public decoy with an internal target.
    """
    policy.check_host(host)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"DNS lookup failed for {host}: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"DNS lookup returned no address for {host}")
    for address in addresses:
        policy.check_ip(address, host=host)
    return addresses


def destination(url: str) -> str:
    """The destination a URL's request goes to, ``scheme://host:port`` in lower case.

    Concurrency caps are counted per destination, so ``?n=1`` .. ``?n=32`` (or any other
    spelling of path, query and case) on one host share one cap.
    """
    plain = _plain(url)
    if plain is not None:
        scheme, host, port = plain.group(1, 2, 3)
        if port is None or int(port) <= 65535:
            return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"
    return _split_destination(url)


def _split_destination(url: str) -> str:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return url[:300]
    return f"{scheme}://{host}:{port}"


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that applies the policy before the lookup and to every address it returns.

    The allowlist is applied before any DNS traffic; a name with any forbidden address
    is refused as a whole (like :func:`resolve`), so aiohttp only ever connects to
    addresses that were checked.
    """

    def __init__(self, policy: OutboundPolicy):
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        name, ip = self.policy.check_host(host)
        if ip is None and not self.policy.allow_private and _is_localhost(name):
            raise BlockedURL("loopback address", name)
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            self.policy.check_ip(entry["host"], host=host)
        return found

    async def close(self) -> None:
        await self._inner.close()


# ---- wall-clock deadlines for the httpx client ------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("outbound_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every network operation of guarded clients in this scope to ``seconds`` from now, in all.

    Past the deadline, the operation under way raises httpx's timeout of its kind.
    """
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    end = _deadline.get()
    if end is None:
        return timeout
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise error("deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the deadline of the scope it runs in."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _bounded(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class GuardedNetworkBackend(httpcore.SyncBackend):
    """httpcore backend that connects only to addresses the policy accepted."""

    def __init__(self, policy: OutboundPolicy):
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        until = None if timeout is None else time.monotonic() + timeout
        last_error: Exception | None = None
        for address in resolve(self.policy, host, port):
            remaining = None if until is None else until - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                stream = super().connect_tcp(str(address), port, remaining, local_address, socket_options)
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectTimeout(f"timed out connecting to {host}")


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses the guarded backend."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        verify: bool = True,
        limits: httpx.Limits = httpx.Limits(),
        retries: int = 0,
    ):
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, retries=retries)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedNetworkBackend(policy),
        )


def guarded_client(policy: OutboundPolicy, timeout: float, max_connections: int = 100) -> httpx.Client:
    """An ``httpx.Client`` that never follows redirects and only reaches allowed addresses.

    Callers that follow redirects themselves must run :meth:`OutboundPolicy.check_url`
    on every hop; the transport re-checks the connection regardless.
    Requests may raise :class:`BlockedURL` as well as ``httpx.HTTPError``.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(max_connections, 20),
    )
    return httpx.Client(
        transport=GuardedTransport(policy, limits=limits),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


def blocked_reason(exc: BaseException | None) -> str | None:
    """The reason of a BlockedURL anywhere in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BlockedURL):
            return exc.reason
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def is_blocked_error(exc: BaseException | None) -> bool:
    """True when ``exc`` is, or was caused by, an SSRF refusal."""
    return blocked_reason(exc) is not None
