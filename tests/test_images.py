"""Image checks against a loopback image server."""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import pytest

from services.images import ImageChecker, required_images
from services.netguard import OutboundPolicy
from tests.support.common import free_port, wait_until
from tests.support.image_server import BIG_SIZE, SMALL_SIZE, ImageServer

POLICY = OutboundPolicy(allow_private=True, allowed_hosts=("127.0.0.1", "localhost", "::1"))


@pytest.fixture(scope="module")
def server():
    with ImageServer() as srv:
        yield srv


@pytest.fixture
def checker():
    with ImageChecker(POLICY, timeout=2.0) as c:
        yield c


def seen(server: ImageServer, path: str) -> list[str]:
    return [method for method, p in server.requests if p == path]


def test_valid_image_needs_only_head(server, checker):
    check = checker.check_one(server.url("/img/valid.jpg"))
    assert (check.ok, check.reason, check.status_code) == (True, None, 200)
    assert (check.content_type, check.size) == ("image/jpeg", SMALL_SIZE)
    assert seen(server, "/img/valid.jpg") == ["HEAD"]


@pytest.mark.parametrize("path, reason, status", [
    ("/missing/a.jpg", "HTTP 404", 404),
    ("/html/a.jpg", "not an image (text/html)", 200),
    ("/big/a.jpg", f"too large ({BIG_SIZE} bytes)", 200),
])
def test_unusable_urls_are_missing_with_reason(server, checker, path, reason, status):
    check = checker.check_one(server.url(path))
    assert (check.ok, check.reason, check.status_code) == (False, reason, status)


def test_too_large_is_decided_from_head_without_downloading(server, checker):
    checker.check_one(server.url("/big/head-only.jpg"))
    assert seen(server, "/big/head-only.jpg") == ["HEAD"]


def test_head_refused_falls_back_to_get(server, checker):
    check = checker.check_one(server.url("/nohead/fallback.png"))
    assert (check.ok, check.content_type, check.size) == (True, "image/png", SMALL_SIZE)
    assert seen(server, "/nohead/fallback.png") == ["HEAD", "GET"]


def test_image_without_length_is_measured_by_get(server, checker):
    check = checker.check_one(server.url("/nolength/measured.jpg"))
    assert (check.ok, check.size) == (True, 2 * SMALL_SIZE)
    assert seen(server, "/nolength/measured.jpg") == ["HEAD", "GET"]


def test_image_without_length_stops_reading_past_the_limit(server):
    with ImageChecker(POLICY, timeout=2.0, max_bytes=1000) as small:
        check = small.check_one(server.url("/nolength/huge.jpg?size=500000"))
    assert (check.ok, check.reason) == (False, "too large (over 1000 bytes)")
    assert check.size <= 1000 + 64 * 1024


def test_slow_server_times_out(server):
    with ImageChecker(POLICY, timeout=0.3) as fast:
        started = time.monotonic()
        check = fast.check_one(server.url("/slow/3/late.jpg"))
    assert (check.ok, check.reason) == (False, "timeout")
    assert time.monotonic() - started < 1.5


def test_redirects_are_followed_up_to_the_limit(server):
    with ImageChecker(POLICY, timeout=2.0, max_redirects=3) as c:
        followed = c.check_one(server.url("/redirect/3/hop.jpg"))
        too_many = c.check_one(server.url("/redirect/4/far.jpg"))
    assert (followed.ok, followed.content_type) == (True, "image/jpeg")
    assert (too_many.ok, too_many.reason) == (False, "too many redirects")
    assert seen(server, "/img/far.jpg") == []


def test_redirect_to_unlisted_address_is_refused_before_contact(server):
    with ImageServer() as target:
        location = quote(target.url("/img/secret.jpg"), safe="")
        start = server.url(f"/redirect-to?url={location}", host="localhost")
        policy = OutboundPolicy(allow_private=True, allowed_hosts=("localhost",))
        with ImageChecker(policy, timeout=2.0) as c:
            check = c.check_one(start)
        assert (check.ok, check.reason) == (False, "blocked: address not in allowed_hosts")
        assert target.requests == []


def test_refused_url_produces_no_traffic(server):
    with ImageChecker(OutboundPolicy(), timeout=2.0) as strict:
        check = strict.check_one(server.url("/img/never.jpg"))
    assert (check.ok, check.reason) == (False, "blocked: loopback address")
    assert seen(server, "/img/never.jpg") == []


def test_closed_port_is_connection_refused(checker):
    port = free_port()  # nothing listens there
    check = checker.check_one(f"http://127.0.0.1:{port}/a.jpg")
    assert (check.ok, check.reason) == (False, "connection refused")


def test_slow_urls_are_checked_concurrently(server, checker):
    urls = [server.url(f"/slow/0.5/parallel-{i}.jpg") for i in range(10)]
    started = time.monotonic()
    result = checker.check_many(urls)
    assert time.monotonic() - started < 2.0
    assert result.valid_urls == urls


def test_check_many_returns_within_its_time_budget(server):
    urls = [server.url(f"/slow/0.3/budget-{i}.jpg") for i in range(5)]
    with ImageChecker(POLICY, timeout=0.4, concurrency=1, max_redirects=0) as serial:
        started = time.monotonic()
        result = serial.check_many(urls)
        elapsed = time.monotonic() - started
    assert elapsed < serial.budget + 0.6
    assert result.checks[0].ok
    assert result.checks[-1].reason == "timeout"


def test_results_keep_input_order_and_repeats(server, checker):
    good_a, good_b = server.url("/img/order-a.jpg"), server.url("/img/order-b.jpg")
    bad = server.url("/missing/order.jpg")
    urls = [good_b, bad, good_a, good_b, bad]
    result = checker.check_many(urls)
    assert [c.url for c in result.checks] == urls
    assert result.valid_urls == [good_b, good_a, good_b]
    assert result.missing_urls == [bad, bad]


def test_lots_share_one_check_per_distinct_url(server, checker):
    a, b, c = (server.url(f"/img/lots-{n}.jpg") for n in "abc")
    missing = server.url("/missing/lots.jpg")
    results = checker.check_many_lots([[a, b], [b, c, missing], [a, a]])
    assert [r.valid_urls for r in results] == [[a, b], [b, c], [a, a]]
    assert results[1].missing_urls == [missing]
    for path in ("/img/lots-a.jpg", "/img/lots-b.jpg", "/img/lots-c.jpg", "/missing/lots.jpg"):
        assert seen(server, path) == ["HEAD"]


def test_ipv6_loopback_server_is_reachable():
    srv = ImageServer(host="::1")
    try:
        srv.start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        with ImageChecker(POLICY, timeout=2.0) as c:
            assert c.check_one(srv.url("/img/v6.jpg")).ok
    finally:
        srv.stop()


@pytest.mark.parametrize("total, ratio, expected", [
    (0, 0.5, 0),
    (1, 0.5, 1),
    (3, 0.5, 2),
    (10, 0.5, 5),
    (10, 0.0, 1),
    (30, 0.1, 3),
    (10, 0.7, 7),
    (7, 1.0, 7),
])
def test_required_images(total, ratio, expected):
    assert required_images(total, ratio) == expected


# ---- deadlines and per-host caps ---------------------------------------------------------------

def test_host_dripping_a_byte_a_second_is_cut_at_the_deadline_while_other_hosts_are_checked():
    with ImageServer() as drip, ImageServer() as other:
        dripping = [drip.url(f"/drip/1/slow-{n}.jpg") for n in range(2)]
        fine = [other.url(f"/img/fine-{n}.jpg") for n in range(3)]
        with ImageChecker(POLICY, timeout=1.5) as c:
            [slow_lot, good_lot] = c.check_many_lots([dripping, fine])
        assert [check.reason for check in slow_lot.checks] == ["timeout", "timeout"]
        assert good_lot.valid_urls == fine
        # each dripping answer (~100 bytes at one a second) was abandoned long before its end
        wait_until(lambda: drip.cut == 2, 10, lambda: f"the client to hang up ({drip.cut} of 2 cut)")


def test_dripping_redirect_chain_shares_one_deadline(server):
    # the first hop answers at once, the second drips: the whole check still ends at the one deadline
    target = quote(server.url("/drip/1/after-redirect.jpg"), safe="")
    with ImageChecker(POLICY, timeout=1.5) as c:
        check = c.check_one(server.url(f"/redirect-to?url={target}"))
    assert (check.ok, check.reason) == (False, "timeout")


def test_one_host_with_many_url_strings_cannot_take_the_pool():
    with ImageServer() as busy, ImageServer() as other:
        crowd = [busy.url(f"/slow/0.6/crowd.jpg?n={n}") for n in range(32)]
        fine = [other.url(f"/img/quick-{n}.jpg") for n in range(4)]
        # 32 checks of 0.6 s through 8 slots take 2.4 s, past the 1 s budget of the call
        with ImageChecker(POLICY, timeout=1.0, concurrency=8, host_concurrency=2) as c:
            result = c.check_many(crowd + fine)
        assert busy.max_active <= 2
        # with the pool taken by the crowd, these would have waited behind it past the call's budget
        assert result.checks[-4:] and all(check.ok for check in result.checks[-4:])


def test_host_cap_counts_spellings_of_one_host_together():
    with ImageServer() as server:
        urls = [server.url(f"/slow/0.2/spell-{n}.jpg?n={n}") for n in range(6)]
        urls += [server.url(f"/slow/0.2/SPELL-{n}.jpg").replace("http://", "HTTP://") for n in range(3)]
        with ImageChecker(POLICY, timeout=5.0, concurrency=16, host_concurrency=3) as c:
            result = c.check_many_lots([urls])
        assert server.max_active == 3
        assert len(result[0].valid_urls) == len(urls)


def test_guard_refuses_before_connecting_with_the_async_client(server, monkeypatch):
    connects: list = []
    real_connect = socket.socket.connect

    def recording(sock, address):
        connects.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: connects.append(address) or 111)
    with ImageChecker(OutboundPolicy(), timeout=2.0) as strict:
        checks = [strict.check_one(server.url("/img/strict-literal.jpg")),
                  strict.check_one(server.url("/img/strict-name.jpg", host="localhost"))]
    assert [c.reason for c in checks] == ["blocked: loopback address"] * 2
    assert connects == [] and not [r for r in server.requests if "/img/strict-" in r[1]]


def test_resolver_refuses_a_name_whose_answer_is_private_before_connecting(monkeypatch):
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def fake(host, port, *args, **kwargs):
        if host == "photos.rebind.test":
            looked_up.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    policy = OutboundPolicy(allowed_hosts=("photos.rebind.test",))
    with ImageChecker(policy, timeout=2.0) as c:
        check = c.check_one("http://photos.rebind.test/a.jpg")
    assert looked_up == ["photos.rebind.test"]
    assert (check.ok, check.reason) == (False, "blocked: private address")


def test_resolver_applies_the_allowlist_before_any_lookup(monkeypatch):
    looked_up: list = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: looked_up.append(args) or [])
    with ImageChecker(OutboundPolicy(allowed_hosts=("photos.example.com",)), timeout=2.0) as c:
        check = c.check_one("http://elsewhere.example.net/a.jpg")
    assert (check.ok, check.reason) == (False, "blocked: host not in allowed_hosts")
    assert looked_up == []


def test_checker_works_again_in_a_forked_child(server):
    import os
    with ImageChecker(POLICY, timeout=2.0) as c:
        assert c.check_one(server.url("/img/parent.jpg")).ok
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the parent's loop thread is gone, a new one must start
            ok = c.check_one(server.url("/img/child.jpg")).ok
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.waitpid(pid, 0)
    assert answer == b"1"
