"""The outbound policy remembers each host's verdict: the same answer every time, refusals included."""
from __future__ import annotations

import pytest

from services import netguard
from services.netguard import BlockedURL, OutboundPolicy


def test_a_remembered_verdict_is_the_verdict_itself():
    policy = OutboundPolicy(allowed_hosts=("photos.example.com", "93.184.216.0/24"))
    first = policy.check_host("Photos.Example.COM")
    assert policy.check_host("Photos.Example.COM") == first == ("photos.example.com", None)
    assert policy.check_url("https://photos.example.com/a.jpg").host == "photos.example.com"
    name, ip = policy.check_host("93.184.216.7")
    assert (name, str(ip)) == ("93.184.216.7", "93.184.216.7")


@pytest.mark.parametrize("host, reason", [("evil.example.net", "host not in allowed_hosts"),
                                          ("169.254.169.254", None), ("127.0.0.1", None), ("bad host", "invalid host")])
def test_a_refusal_is_remembered_and_raised_every_time(host, reason):
    policy = OutboundPolicy(allowed_hosts=("photos.example.com",))
    raised = []
    for _ in range(3):
        with pytest.raises(BlockedURL) as caught:
            policy.check_host(host)
        raised.append(caught.value)
    assert len({(e.reason, e.target) for e in raised}) == 1  # the same refusal each time
    assert len({id(e) for e in raised}) == 3  # but a fresh exception, never one raised before (its traceback)
    if reason:
        assert raised[0].reason == reason


def test_policies_keep_their_own_verdicts():
    strict, open_ = OutboundPolicy(), OutboundPolicy(allow_private=True)
    with pytest.raises(BlockedURL):
        strict.check_host("10.0.0.8")
    assert str(open_.check_host("10.0.0.8")[1]) == "10.0.0.8"
    with pytest.raises(BlockedURL):
        strict.check_host("10.0.0.8")


def test_the_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(netguard, "VERDICT_CACHE", 8)
    policy = OutboundPolicy()
    for n in range(50):
        policy.check_host(f"host-{n}.example.com")
        assert len(policy._verdicts) <= 8
    assert policy.check_host("host-3.example.com") == ("host-3.example.com", None)
