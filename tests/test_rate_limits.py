"""Rate limits: the 101st sync request inside the window gets 429 with Retry-After; polling likewise."""
from __future__ import annotations

import socket

import requests

from tests.support.client import Api, header_signature, lot


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
        assert 0 < int(answer.headers["Retry-After"]) <= 60
    # the sync limit is counted apart
    lots = [lot("rl-p", ["ftp://not-an-image"])]
    assert requests.post(f"{live.url}/api/v1/generate-descriptions", json={"signature": "0" * 64, "lots": lots},
                         timeout=10).status_code == 403


def test_polling_is_answered_when_the_limit_storage_is_unreachable(make_live):
    """A rate-limit store that is down (Redis on a closed loopback port) must not take polling down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the socket is closed
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
