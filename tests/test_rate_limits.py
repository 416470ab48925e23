"""Rate limits: the 101st sync request inside the window gets 429 with Retry-After; polling likewise."""
from __future__ import annotations

import uuid

import pytest
import requests
from limits import parse
from limits.storage import RedisStorage

from app.limits import ProcessSlidingWindows, SharedSlidingWindows

from tests.support.client import Api, header_signature, lot
from tests.support.common import free_port


def test_101st_sync_request_in_the_window_is_429(make_live):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_SYNC="100/minute")
    session = requests.Session()
    lots = [lot("rl-1", ["ftp://not-an-image"])]
    statuses = [session.post(f"{live.url}/api/v1/generate-descriptions",
                             json={"signature": "sha256=" + "0" * 64, "lots": lots}, timeout=10).status_code
                for _ in range(101)]
    assert statuses[:100] == [403] * 100
    assert statuses[100] == 429
    answer = session.post(f"{live.url}/api/v1/generate-descriptions", json={"lots": lots}, timeout=10)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.json()["code"] == "RATE_LIMITED"


def test_batch_requests_have_their_own_limit(make_live, image_server):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_BATCH="2/minute", RATE_LIMIT_SYNC="100/minute")
    api = Api(live.url)
    lots = [lot(f"rl-b{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]
    assert [api.generate(lots).status_code for _ in range(3)] == [201, 201, 429]
    assert api.generate(lots[:1]).status_code == 200


def test_polling_limit(make_live):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="5/minute")
    job_id = "00000000-0000-0000-0000-000000000000"
    headers = {"X-Signature": header_signature(job_id)}
    codes = [requests.get(f"{live.url}/api/v1/batch-status/{job_id}", headers=headers, timeout=10).status_code
             for _ in range(6)]
    assert codes == [404] * 5 + [429]
    # one budget per address for every polling endpoint, refused as JSON with the time to wait
    for path in (f"batch-results/{job_id}", f"batch-status/{job_id}"):
        answer = requests.get(f"{live.url}/api/v1/{path}", headers=headers, timeout=10)
        assert answer.status_code == 429 and answer.headers["Content-Type"].startswith("application/json")
        assert answer.json()["code"] == "RATE_LIMITED" and "5 per 1 minute" in answer.json()["message"]
        # the rest of this window, plus the fifth of the next one the window's 5 polls need to fade by
        assert 0 < int(answer.headers["Retry-After"]) <= 60 + 60 // 5
    # the sync limit is counted apart
    lots = [lot("rl-p", ["ftp://not-an-image"])]
    assert requests.post(f"{live.url}/api/v1/generate-descriptions", json={"signature": "0" * 64, "lots": lots},
                         timeout=10).status_code == 403


def test_polling_is_answered_when_the_limit_storage_is_unreachable(make_live):
    """A rate-limit store that is down (Redis on a closed loopback port) must not take polling down."""
    port = free_port()  # nothing listens there
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="1/minute",
                     RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{port}")
    job_id = "00000000-0000-0000-0000-000000000000"
    codes = [requests.get(f"{live.url}/api/v1/batch-status/{job_id}", headers={"X-Signature": header_signature(job_id)},
                          timeout=10).status_code for _ in range(3)]
    assert codes == [404, 404, 404]


def test_polling_limit_off_with_rate_limits_disabled(make_live):
    live = make_live(RATELIMIT_ENABLED="false", RATE_LIMIT_POLLING="1/minute")
    job_id = "00000000-0000-0000-0000-000000000000"
    codes = [requests.get(f"{live.url}/api/v1/batch-status/{job_id}", headers={"X-Signature": header_signature(job_id)},
                          timeout=10).status_code for _ in range(3)]
    assert codes == [404, 404, 404]


def test_forwarded_address_is_ignored_without_a_trusted_proxy(make_live):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="2/minute", TRUSTED_PROXY_HOPS="0")
    job_id = "00000000-0000-0000-0000-000000000000"
    codes = [requests.get(f"{live.url}/api/v1/batch-status/{job_id}", timeout=10,
                          headers={"X-Signature": header_signature(job_id), "X-Forwarded-For": f"10.0.0.{i}"}
                          ).status_code for i in range(3)]
    assert codes == [404, 404, 429]


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_in_process_polling_window_counts_like_a_sliding_window():
    clock = Clock(6000.0)  # the start of a one-minute window
    windows = ProcessSlidingWindows(clock)
    item = parse("10/minute")
    assert [windows.hit(item, "a") for _ in range(10)] == [None] * 10
    wait = windows.hit(item, "a")
    assert wait == pytest.approx(60 + 60 * (1 - 9 / 10))  # the window's end, then a tenth of the next one
    assert windows.hit(item, "b") is None  # per address
    clock.now += wait - 0.5
    assert windows.hit(item, "a") is not None  # just before the time it named: still refused
    clock.now += 0.5
    assert windows.hit(item, "a") is None
    # halfway through a window, the previous window's 10 count as 5: five more polls, not ten
    clock.now = 6000.0 + 120 + 30
    fresh = ProcessSlidingWindows(clock)
    clock.now -= 60
    for _ in range(10):
        assert fresh.hit(item, "c") is None
    clock.now += 60
    assert [fresh.hit(item, "c") is None for _ in range(6)] == [True] * 5 + [False]


def test_in_process_polling_windows_forget_idle_addresses():
    clock = Clock(6000.0)
    windows = ProcessSlidingWindows(clock)
    item = parse("10/minute")
    for address in range(100):
        windows.hit(item, str(address))
    assert len(windows) == 100
    clock.now += 180  # two windows later nothing of theirs counts any more
    windows.hit(item, "new")
    assert len(windows) == 1


def test_polling_window_on_redis_refuses_after_the_limit():
    """RATELIMIT_STORAGE_URI=redis://: the same counting through the limits library, shared by instances."""
    storage = RedisStorage("redis://127.0.0.1:6379")
    windows = SharedSlidingWindows(storage)
    item = parse("3/minute")
    address = f"test-{uuid.uuid4().hex}"  # its own key in a Redis others may use
    assert [windows.hit(item, address) is None for _ in range(4)] == [True, True, True, False]
    # the window just opened: the rest of it, then a third of the next one for its 3 polls to fade by 1
    assert 60 < windows.hit(item, address) <= 60 + 20
