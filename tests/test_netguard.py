"""SSRF guard: what is refused before any traffic, and what the guarded connection refuses.

No test sends traffic anywhere but 127.0.0.1 / ::1: refusals are asserted before
connecting (with DNS and connect patched to record calls) or against loopback
servers that must see no request.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import quote

import httpx
import pytest

from services.netguard import (
    BlockedURL,
    OutboundPolicy,
    blocked_reason,
    guarded_client,
    is_blocked_error,
    parse_ip_host,
    resolve,
)
from tests.support.image_server import ImageServer

STRICT = OutboundPolicy()
LOOPBACK_ONLY = OutboundPolicy(allow_private=True, allowed_hosts=("127.0.0.1", "localhost", "::1"))


@pytest.fixture(scope="module")
def server():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def second_server():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def network_calls(monkeypatch):
    """Record (and refuse) every DNS lookup and TCP connect attempt."""
    calls: list[tuple] = []

    def refuse(kind):
        def record(*args, **kwargs):
            calls.append((kind, args))
            raise OSError(f"test forbids {kind}")
        return record

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return calls


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """Make getaddrinfo answer ``answers`` for made-up names, delegating other hosts."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def record_connects(monkeypatch, allow: bool) -> list[tuple]:
    """Record connect attempts; unless ``allow``, refuse them so nothing leaves the host."""
    calls: list[tuple] = []
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        calls.append(address)
        if not allow:
            raise OSError("test forbids connecting")
        return real(address, *args, **kwargs)

    def connect(sock, address):
        calls.append(address)
        raise OSError("test forbids connecting")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    if not allow:
        monkeypatch.setattr(socket.socket, "connect", connect)
    return calls


REFUSED_BY_DEFAULT = [
    # loopback
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/x.jpg", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST./x", "loopback"),
    ("http://images.localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    # private ranges
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.168.1.10/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    # link-local and cloud metadata
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    # other special-purpose ranges
    ("http://100.64.0.1/", "CGNAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.2.1/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    # IPv6 forms embedding IPv4
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[2002:a9fe:a9fe::]/", "metadata"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[64:ff9b::a00:5]/", "private"),
    # odd IPv4 spellings
    ("http://2130706433/", "loopback"),
    ("http://0177.0.1/", "loopback"),
    ("http://0177.0.0.1/", "invalid URL"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.0x0.0x0.0x1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://10.1/", "private"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "metadata"),
    ("http://127.0.0.1./", "loopback"),
    ("http://4294967296/", "invalid IP"),
    # schemes
    ("ftp://example.com/a.jpg", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com:70/_x", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("data:image/png;base64,iVBORw0KGgo=", "scheme"),
    ("//example.com/a.jpg", "scheme"),
    # credentials and other URL tricks
    ("http://user:pass@example.com/a.jpg", "credentials"),
    ("http://user@example.com/a.jpg", "credentials"),
    ("http://@example.com/a.jpg", "credentials"),
    ("http://example.com\\@127.0.0.1/", "credentials"),
    ("http://example.com:0/", "port"),
    ("http://example.com:65536/", "port"),
    ("http:///a.jpg", "missing host"),
    ("http://exa%6dple.com/", "invalid host"),
    ("not a url", "scheme"),
]


@pytest.mark.parametrize("url, reason", REFUSED_BY_DEFAULT)
def test_check_url_refuses_without_any_network(url, reason, network_calls):
    with pytest.raises(BlockedURL) as refused:
        STRICT.check_url(url)
    assert reason.lower() in refused.value.reason.lower()
    assert network_calls == []


@pytest.mark.parametrize("url", [
    "https://example.com/cars/1.jpg",
    "http://images.example.com:8080/a.jpg?size=big",
    "http://8.8.8.8/a.jpg",
    "http://[2606:4700::1111]/a.jpg",
    "http://[::ffff:8.8.8.8]/a.jpg",
    "http://bücher.example/a.jpg",
])
def test_check_url_accepts_public_targets_without_any_network(url, network_calls):
    assert STRICT.check_url(url).url == url
    assert network_calls == []


@pytest.mark.parametrize("host, expected", [
    ("2130706433", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("[::1]", "::1"),
    ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ("fe80::1%25eth0", "fe80::1"),
    ("10.0.0.1.", "10.0.0.1"),
])
def test_parse_ip_host_normalises_resolver_spellings(host, expected):
    assert parse_ip_host(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "cafe", "x0x7f.1"])
def test_parse_ip_host_leaves_names_alone(host):
    assert parse_ip_host(host) is None


def test_check_url_reports_normalised_ip_target():
    target = LOOPBACK_ONLY.check_url("http://2130706433:8080/a.jpg")
    assert (target.scheme, target.host, target.port) == ("http", "127.0.0.1", 8080)
    assert target.ip == ipaddress.ip_address("127.0.0.1")


def test_metadata_address_refused_even_when_private_addresses_are_allowed():
    with pytest.raises(BlockedURL, match="metadata"):
        OutboundPolicy(allow_private=True).check_url("http://169.254.169.254/")


@pytest.mark.parametrize("url", ["http://example.com/x.jpg", "http://10.1.2.3/", "http://[fe80::1]/"])
def test_allowlist_refuses_other_hosts_before_dns(url, network_calls):
    with pytest.raises(BlockedURL, match="not in allowed_hosts"):
        LOOPBACK_ONLY.check_url(url)
    with guarded_client(LOOPBACK_ONLY, timeout=1) as client, pytest.raises(BlockedURL):
        client.get(url)
    assert network_calls == []


@pytest.mark.parametrize("entry, host, allowed", [
    ("Images.Example.com", "images.example.COM", True),
    ("images.example.com", "other.example.com", False),
    ("images.example.com", "a.images.example.com", False),
    (".cdn.example", "a.cdn.example", True),
    (".cdn.example", "x.y.cdn.example", True),
    (".cdn.example", "cdn.example", False),
    (".cdn.example", "evilcdn.example", False),
])
def test_allowlist_name_entries(entry, host, allowed, network_calls):
    policy = OutboundPolicy(allowed_hosts=(entry,))
    if allowed:
        assert policy.check_url(f"https://{host}/a.jpg").host == host.lower()
    else:
        with pytest.raises(BlockedURL, match="not in allowed_hosts"):
            policy.check_url(f"https://{host}/a.jpg")
    assert network_calls == []


@pytest.mark.parametrize("url, allowed", [
    ("http://10.1.2.3/", True),
    ("http://10.1/", True),
    ("http://[::ffff:10.9.9.9]/", True),
    ("http://192.168.0.1/", False),
    ("http://images.example.com/", False),
])
def test_allowlist_cidr_entries_match_ip_hosts(url, allowed):
    policy = OutboundPolicy(allow_private=True, allowed_hosts=("10.0.0.0/8",))
    if allowed:
        policy.check_url(url)
    else:
        with pytest.raises(BlockedURL, match="not in allowed_hosts"):
            policy.check_url(url)


def test_cidr_allowlist_does_not_override_private_check():
    with pytest.raises(BlockedURL, match="private"):
        OutboundPolicy(allowed_hosts=("10.0.0.0/8",)).check_url("http://10.1.2.3/")


def test_check_ip_applies_cidr_entries_only_to_unmatched_names():
    policy = OutboundPolicy(allowed_hosts=("images.example.com", "8.8.8.0/24"))
    policy.check_ip("1.1.1.1", host="images.example.com")
    policy.check_ip("8.8.8.8")
    with pytest.raises(BlockedURL, match="not in allowed_hosts"):
        policy.check_ip("1.1.1.1")
    with pytest.raises(BlockedURL, match="not in allowed_hosts"):
        policy.check_ip("1.1.1.1", host="other.example.com")


def test_resolve_refuses_a_name_that_resolves_to_loopback():
    with pytest.raises(BlockedURL, match="loopback"):
        resolve(STRICT, "localhost", 80)


def test_guarded_client_reaches_allowed_loopback_server(server):
    with guarded_client(LOOPBACK_ONLY, timeout=2) as client:
        response = client.get(server.url("/img/ok.jpg"))
    assert response.status_code == 200
    assert ("GET", "/img/ok.jpg") in server.requests


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_guarded_client_refuses_loopback_by_default(server, host):
    url = server.url(f"/img/default-{host}.jpg", host=host)
    with guarded_client(STRICT, timeout=2) as client, pytest.raises(BlockedURL, match="loopback"):
        client.get(url)
    assert not [r for r in server.requests if r[1].startswith("/img/default-")]


def test_guarded_connection_refuses_private_answer_for_allowed_name(monkeypatch):
    fake_dns(monkeypatch, {"photos.rebind.test": ["10.0.0.5"]})
    connects = record_connects(monkeypatch, allow=False)
    policy = OutboundPolicy(allowed_hosts=("photos.rebind.test",))
    policy.check_url("http://photos.rebind.test/a.jpg")
    with guarded_client(policy, timeout=1) as client, pytest.raises(BlockedURL) as refused:
        client.get("http://photos.rebind.test/a.jpg")
    assert refused.value.reason == "private address"
    assert connects == []


def test_guarded_connection_refuses_when_any_answer_is_private(monkeypatch):
    fake_dns(monkeypatch, {"photos.rebind.test": ["8.8.8.8", "169.254.169.254"]})
    connects = record_connects(monkeypatch, allow=False)
    with guarded_client(STRICT, timeout=1) as client, pytest.raises(BlockedURL, match="metadata"):
        client.get("http://photos.rebind.test/a.jpg")
    assert connects == []


def test_guarded_connection_connects_to_the_address_it_checked(monkeypatch, server):
    fake_dns(monkeypatch, {"photos.rebind.test": ["127.0.0.1"]})
    connects = record_connects(monkeypatch, allow=True)
    policy = OutboundPolicy(allow_private=True, allowed_hosts=("photos.rebind.test",))
    with guarded_client(policy, timeout=2) as client:
        response = client.get(server.url("/img/rebind.jpg", host="photos.rebind.test"))
    assert response.status_code == 200
    assert connects == [("127.0.0.1", server.port)]


def test_redirect_to_unlisted_address_is_refused_by_the_connection(server, second_server):
    target = second_server.url("/img/secret.jpg")
    start = server.url(f"/redirect-to?url={quote(target, safe='')}", host="localhost")
    policy = OutboundPolicy(allow_private=True, allowed_hosts=("localhost",))
    with guarded_client(policy, timeout=2) as client:
        with pytest.raises(BlockedURL, match="not in allowed_hosts"):
            client.get(start, follow_redirects=True)
        assert client.get(start).status_code == 302
    assert second_server.requests == []


def test_guarded_client_does_not_follow_redirects(server):
    with guarded_client(LOOPBACK_ONLY, timeout=2) as client:
        response = client.get(server.url("/redirect/1/nofollow.jpg"))
    assert response.status_code == 302
    assert ("GET", "/img/nofollow.jpg") not in server.requests


def test_guarded_client_ignores_proxy_environment(monkeypatch, server):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with guarded_client(LOOPBACK_ONLY, timeout=2) as client:
        assert client.get(server.url("/img/noproxy.jpg")).status_code == 200


def test_blocked_reason_finds_refusal_in_cause_chain():
    try:
        try:
            raise BlockedURL("private address", "10.0.0.1")
        except BlockedURL as inner:
            raise httpx.ConnectError("wrapped") from inner
    except httpx.ConnectError as outer:
        assert blocked_reason(outer) == "private address"
        assert is_blocked_error(outer)
    assert blocked_reason(httpx.ConnectError("refused")) is None
    assert not is_blocked_error(ValueError("x"))
