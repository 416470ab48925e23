"""Rate limits: the 101st sync request inside the window gets 429 with Retry-After; polling likewise."""
from __future__ import annotations

import uuid

import pytest
import requests
from limits import parse
from limits.storage import RedisStorage

from sqlalchemy import func, select

from app.limits import ProcessSlidingWindows, SharedSlidingWindows
from database.models import RequestNonce
from services import clients
from tests.support.client import Api, Gs2Api, gs2_authorization, header_signature, lot
from tests.support.common import free_port

WRONG_KEY = "not-the-shared-key-but-as-long-as-one-0123"


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
    """Requests without a valid key are counted per address: here every one is 127.0.0.1, whatever it says."""
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="2/minute", TRUSTED_PROXY_HOPS="0")
    job_id = "00000000-0000-0000-0000-000000000000"
    codes = [requests.get(f"{live.url}/api/v1/batch-status/{job_id}", timeout=10,
                          headers={"X-Signature": header_signature(job_id, WRONG_KEY), "X-Forwarded-For": f"10.0.0.{i}"}
                          ).status_code for i in range(3)]
    assert codes == [403, 403, 429]


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


def test_a_window_can_be_looked_at_without_counting():
    clock = Clock(6000.0)
    windows = ProcessSlidingWindows(clock)
    item = parse("2/minute")
    assert [windows.test(item, "a") for _ in range(5)] == [None] * 5  # looking counts nothing
    assert [windows.hit(item, "a") is None for _ in range(2)] == [True, True]
    wait = windows.test(item, "a")
    assert wait == pytest.approx(90) and windows.hit(item, "a") == pytest.approx(wait)
    assert windows.test(item, "b") is None
    clock.now += 60  # the next window: the previous one's 2 weigh 2 at its start, then fade
    assert windows.test(item, "a") == pytest.approx(30)
    clock.now += 30
    assert windows.test(item, "a") is None


def test_shared_windows_look_without_counting_and_keep_their_counts_apart():
    storage = RedisStorage("redis://127.0.0.1:6379")
    failures, polls = SharedSlidingWindows(storage, "failed-polling"), SharedSlidingWindows(storage, "polling")
    item = parse("2/minute")
    key = f"test-{uuid.uuid4().hex}"
    assert [failures.test(item, key) for _ in range(3)] == [None] * 3
    assert [failures.hit(item, key) is None for _ in range(3)] == [True, True, False]
    assert 0 < failures.test(item, key) <= 90
    assert polls.test(item, key) is None and polls.hit(item, key) is None  # another count, the same key


# ---- per client, per address ---------------------------------------------------------------------

STATUS = "/api/v1/batch-status/00000000-0000-0000-0000-000000000000"


@pytest.fixture
def limited(make_live):
    """A live server with rate limits on (3 polls a minute, 2 batch requests, 100 sync) and two clients."""
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="3/minute", RATE_LIMIT_BATCH="2/minute")
    db = live.app.extensions["genservice"].db
    made = [clients.add_client(db, name) for name in ("auction-a", "listing-b")]
    return live, [Gs2Api(live.url, c.client_id, c.key_id, c.secret) for c in made]


def _from(address: str) -> dict:
    return {"X-Forwarded-For": address}  # TRUSTED_PROXY_HOPS=1 in the tests: one proxy in front says who


def test_two_clients_behind_one_address_each_get_their_own_budget(limited):
    live, (a, b) = limited
    implicit = Api(live.url)
    assert [a.request("GET", STATUS).status_code for _ in range(4)] == [404, 404, 404, 429]
    assert [b.request("GET", STATUS).status_code for _ in range(4)] == [404, 404, 404, 429]
    # the implicit client (SHARED_KEY, the reference's scheme) has a budget of its own too
    assert [implicit.get(STATUS, sign=STATUS.rsplit("/", 1)[1]).status_code for _ in range(4)] == [404] * 3 + [429]
    refused = a.request("GET", STATUS)
    assert refused.json()["code"] == "RATE_LIMITED" and "3 per 1 minute" in refused.json()["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60 + 20


def test_one_client_from_two_addresses_has_one_budget(limited):
    _live, (a, _b) = limited
    codes = [a.request("GET", STATUS, headers=_from(f"203.0.113.{i}")).status_code for i in range(4)]
    assert codes == [404, 404, 404, 429]


def test_a_clients_own_lower_rate_applies_to_it_alone(limited, image_server):
    live, (a, b) = limited
    db = live.app.extensions["genservice"].db
    clients.update_client(db, a.client_id, rate_limit_polling="1/minute", rate_limit_batch="1/minute")
    assert [a.request("GET", STATUS).status_code for _ in range(2)] == [404, 429]
    assert [b.request("GET", STATUS).status_code for _ in range(3)] == [404, 404, 404]
    lots = [lot(f"own-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]
    first, second = a.generate(lots), a.generate(lots)
    assert (first.status_code, second.status_code) == (201, 429), second.text
    assert first.headers["X-RateLimit-Limit"] == "1" and second.headers["X-RateLimit-Remaining"] == "0"
    assert int(second.headers["Retry-After"]) > 0 and second.json()["code"] == "RATE_LIMITED"
    assert [b.generate(lots).status_code for _ in range(3)] == [201, 201, 429]  # RATE_LIMIT_BATCH for b
    # a rate that is not one (a hand-edited row) falls back to the setting instead of failing the request
    clients.update_client(db, b.client_id, rate_limit_polling="lots")
    assert b.request("GET", STATUS, headers=_from("198.51.100.7")).status_code == 429  # its 3 of 3 are used


def test_a_clients_requests_do_not_use_up_its_address_nor_the_other_way(limited):
    _live, (a, _b) = limited
    assert [a.request("GET", STATUS).status_code for _ in range(4)] == [404, 404, 404, 429]
    wrong = Gs2Api(a.base, a.client_id, a.key_id, "gsk_not-its-secret")
    assert [wrong.request("GET", STATUS).status_code for _ in range(4)] == [403, 403, 403, 429]
    # another address's failed checks are its own
    assert wrong.request("GET", STATUS, headers=_from("198.51.100.1")).status_code == 403


def test_a_flood_without_a_valid_key_is_refused_before_any_signature_work(limited):
    live, (a, _b) = limited
    db = live.app.extensions["genservice"].db
    unsigned = [requests.get(live.url + STATUS, timeout=10).status_code for _ in range(3)]
    assert unsigned == [401, 401, 401]
    # a valid GS2 poll from that address now: refused without being checked, so its nonce is not spent
    auth = gs2_authorization(a.secret, a.client_id, a.key_id, "GET", STATUS)
    refused = requests.get(live.url + STATUS, headers={"Authorization": auth}, timeout=10)
    assert (refused.status_code, refused.json()["code"]) == (429, "RATE_LIMITED")
    assert refused.json()["details"] == {"counted_by": "address"}
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(RequestNonce)) == 0
    # the very same signature from elsewhere is checked, valid, and spends its nonce there
    elsewhere = requests.get(live.url + STATUS, headers={"Authorization": auth, **_from("198.51.100.2")}, timeout=10)
    assert elsewhere.status_code == 404
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(RequestNonce)) == 1


def test_a_flooding_address_gets_429_before_its_body_is_read(make_live):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_SYNC="2/minute", RATE_LIMIT_BATCH="5/minute")
    url = f"{live.url}/api/v1/generate-descriptions"
    lots = [lot("flood", ["ftp://not-an-image"])]
    codes = [requests.post(url, json={"signature": "sha256=" + "0" * 64, "lots": lots}, timeout=10).status_code
             for _ in range(3)]
    assert codes == [403, 403, 429]
    # a body that is not JSON would be 400 once parsed: it is refused by the count alone
    garbage = requests.post(url, data=b"{" * 100_000, headers={"Content-Type": "application/json"}, timeout=10)
    assert garbage.status_code == 429 and garbage.headers["X-RateLimit-Remaining"] == "0"
    assert requests.post(url, data=b"{", headers={"Content-Type": "application/json", **_from("198.51.100.3")},
                         timeout=10).status_code == 400


def test_failed_batch_requests_are_held_to_the_batch_rate(make_live):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_SYNC="100/minute", RATE_LIMIT_BATCH="2/minute")
    url = f"{live.url}/api/v1/generate-descriptions"
    lots = [lot(f"fb-{i}", ["ftp://not-an-image"]) for i in range(3)]
    codes = [requests.post(url, json={"signature": "sha256=" + "0" * 64, "lots": lots}, timeout=10).status_code
             for _ in range(3)]
    assert codes == [403, 403, 429]
