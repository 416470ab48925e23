"""Plainly spelt URLs skip the full parse once their (scheme, host, port) passed: the answer must be the
full check's answer for every URL, however it is spelt, and refusals are never remembered."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import netguard
from services.netguard import BlockedURL, OutboundPolicy, destination

POLICIES = {
    "allowlist": OutboundPolicy(allowed_hosts=("photos.example.com", ".cdn.example.net", "93.184.216.0/24")),
    "open": OutboundPolicy(),
    "private": OutboundPolicy(allow_private=True),
}

# pieces chosen to sit on the edges of the plain spelling: case, dots, IDNA, userinfo, brackets,
# ports with zeros, percent signs, backslashes, spaces and controls, IP spellings
SCHEMES = st.sampled_from(["http", "https", "HTTP", "ftp", "file", "javascript"])
HOSTS = st.sampled_from([
    "photos.example.com", "Photos.Example.com", "photos.example.com.", "a.cdn.example.net", "cdn.example.net",
    "evil.example.org", "93.184.216.7", "093.184.216.7", "127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1",
    "10.0.0.8", "169.254.169.254", "localhost", "a.localhost", "xn--bcher-kva.example", "bücher.example",
    "[::1]", "[::ffff:127.0.0.1]", "-bad.example.com", "a..b", "a_b.example.com", "", "x" * 64 + ".com",
    "user@photos.example.com", "photos.example.com@evil.example.org", "photos.example.com%2eevil.org"])
PORTS = st.sampled_from(["", ":80", ":443", ":8080", ":080", ":0", ":65535", ":65536", ":99999", ":", ":x"])
TAILS = st.one_of(
    st.sampled_from(["", "/", "/a.jpg", "/a.jpg?w=1&h=2", "/%zz", "/a@b", "/?x=[1]", "#frag", "/a b", "\\@evil.org/",
                     "/\x00", "/é.jpg", "?", "/" + "a" * 5000, "/" + "a" * 70000]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30).map(lambda t: "/" + t))


def _outcome(call, url):
    try:
        return call(url)
    except BlockedURL as exc:
        return ("refused", exc.reason)


@settings(max_examples=600, deadline=None)
@given(scheme=SCHEMES, host=HOSTS, port=PORTS, tail=TAILS, policy=st.sampled_from(sorted(POLICIES)))
def test_the_remembered_path_answers_as_the_full_check(scheme, host, port, tail, policy):
    url = f"{scheme}://{host}{port}{tail}"
    remembered = POLICIES[policy]
    full = OutboundPolicy(allow_private=remembered.allow_private, allowed_hosts=remembered.allowed_hosts)
    expected = _outcome(full._check_url, url)
    assert _outcome(remembered.check_url, url) == expected  # first sight (may remember it)
    assert _outcome(remembered.check_url, url) == expected  # and again, from memory


@settings(max_examples=400, deadline=None)
@given(scheme=SCHEMES, host=HOSTS, port=PORTS, tail=TAILS)
def test_the_destination_of_any_url_is_what_urlsplit_reads(scheme, host, port, tail):
    url = f"{scheme}://{host}{port}{tail}"
    assert destination(url) == netguard._split_destination(url)


def test_plain_urls_of_one_host_are_parsed_once(monkeypatch):
    policy = OutboundPolicy(allowed_hosts=("photos.example.com",))
    parsed = []
    real = netguard._parse_url
    monkeypatch.setattr(netguard, "_parse_url", lambda url: parsed.append(url) or real(url))
    targets = [policy.check_url(f"https://photos.example.com/lot-{n}/a.jpg?w={n}") for n in range(50)]
    assert parsed == ["https://photos.example.com/lot-0/a.jpg?w=0"]
    assert [t.url for t in targets] == [f"https://photos.example.com/lot-{n}/a.jpg?w={n}" for n in range(50)]
    assert {(t.scheme, t.host, t.port, t.ip) for t in targets} == {("https", "photos.example.com", 443, None)}


@pytest.mark.parametrize("url", ["https://evil.example.org/a.jpg", "http://127.0.0.1/a.jpg",
                                 "http://169.254.169.254/latest/meta-data"])
def test_a_refused_plain_url_is_checked_in_full_every_time(monkeypatch, url):
    policy = OutboundPolicy(allowed_hosts=("photos.example.com",))
    parsed = []
    real = netguard._parse_url
    monkeypatch.setattr(netguard, "_parse_url", lambda u: parsed.append(u) or real(u))
    for _ in range(3):
        with pytest.raises(BlockedURL):
            policy.check_url(url)
    assert len(parsed) == 3 and not policy._targets


@pytest.mark.parametrize("tail", ["/" + "a" * 70_000, "/a b", "/\x00", "\\@evil.example.org/"])
def test_a_host_that_passed_does_not_let_an_unplain_url_of_it_skip_the_full_check(tail):
    policy = OutboundPolicy(allowed_hosts=("photos.example.com",))
    policy.check_url("https://photos.example.com/a.jpg")
    url = "https://photos.example.com" + tail
    fresh = OutboundPolicy(allowed_hosts=("photos.example.com",))
    assert _outcome(policy.check_url, url) == _outcome(fresh._check_url, url)
    if len(url) > 65_536:  # httpx's own limit: the full check refuses it, so must the remembered path
        assert _outcome(policy.check_url, url) == ("refused", "invalid URL")
