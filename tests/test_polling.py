"""The status poll's per-request bookkeeping, kept while its path was made cheaper: every answer is
counted in http_requests_total by route and status, carries a request id, and each job read is a
database read in database_operations_total."""
from __future__ import annotations

import re

import requests

from tests.support.client import Api, header_signature, lot


def _metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return 0.0


def test_status_polls_are_counted_by_route_and_status(make_live, image_server):
    live = make_live(WORKER_ENABLED="false")
    api = Api(live.url)
    job_id = api.generate([lot(f"poll-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]).json()["job_id"]
    before = requests.get(f"{live.url}/metrics", timeout=10).text
    answers = [api.status(job_id) for _ in range(3)]
    missing = requests.get(f"{live.url}/api/v1/batch-status/no-such-job", timeout=10,
                           headers={"X-Signature": header_signature("no-such-job")})
    after = requests.get(f"{live.url}/metrics", timeout=10).text

    assert [a.status_code for a in answers] == [200] * 3 and missing.status_code == 404
    assert all(re.fullmatch(r"[0-9a-f]{32}", a.headers["X-Request-ID"]) for a in answers + [missing])
    assert len({a.headers["X-Request-ID"] for a in answers}) == 3
    ok = dict(endpoint="api.batch_status", status="200")
    assert _metric(after, "http_requests_total", **ok) - _metric(before, "http_requests_total", **ok) == 3
    not_found = dict(endpoint="api.batch_status", status="404")
    assert _metric(after, "http_requests_total", **not_found) - _metric(before, "http_requests_total", **not_found) == 1
    reads = dict(operation="read")
    assert _metric(after, "database_operations_total", **reads) - _metric(
        before, "database_operations_total", **reads) >= 4
