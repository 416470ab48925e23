"""Faults from outside the service, on PostgreSQL: OpenAI answering 429 and 500 in bursts or too slowly,
a translation batch that fails or expires, a webhook receiver that is down for a while, and the
database going away mid-job. After each, every lot is accounted for (a result in every language
or a reason) and nothing was lost or done twice.

Failed lines and failed or expired *vision* batches are covered in test_batch_faults.py.
"""
from __future__ import annotations

import time
from collections import Counter
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support.client import Api, header_signature, photo_lots
from tests.support.processes import http_status, wait_for
from tests.support.tcp_proxy import TcpProxy

EN_DE = ["en", "de"]


@pytest.fixture
def database_url(pg_database_url) -> str:
    """These faults are about the production set-up: PostgreSQL only."""
    return pg_database_url


def _lots(image_server, count: int, prefix: str, webhook: str | None = None) -> list[dict]:
    return photo_lots(image_server, count, prefix, info="lot {prefix}-{i}: scrape on panel {i}", webhook=webhook)


def _query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def assert_every_lot_accounted_for(api: Api, pg_url: str, job_id: str, lots: list[dict],
                                   languages: list[str]) -> dict[str, str]:
    """Each lot is completed with one description per language, or failed with a reason; both in the
    database and in what the client downloads. Returns {lot_id: status}."""
    rows = _query(pg_url, """
        SELECT l.lot_id, l.status, l.error_message, count(r.id),
               coalesce(array_agg(r.language ORDER BY r.language) FILTER (WHERE r.id IS NOT NULL), '{}')
        FROM batch_lots l LEFT JOIN batch_results r ON r.lot_pk = l.id
        WHERE l.job_id = %s GROUP BY l.id""", (job_id,))
    assert sorted(row[0] for row in rows) == sorted(item["lot_id"] for item in lots)
    statuses = {}
    for lot_id, status, error, count, stored in rows:
        if status == "completed":
            assert count == len(languages) and stored == sorted(languages), (lot_id, stored)
        else:
            assert status == "failed" and error and count == 0, (lot_id, status, error, count)
        statuses[lot_id] = status
    processed, failed, total = _query(pg_url, "SELECT processed_lots, failed_lots, total_lots FROM batch_jobs "
                                              "WHERE id = %s", (job_id,))[0]
    counts = Counter(statuses.values())
    assert (processed, failed, total) == (counts["completed"], counts["failed"], len(lots))

    download = api.get(f"/api/v1/batch-results/{job_id}/download", sign=job_id)
    assert download.status_code == 200, download.text
    for item in download.json()["results"]["lots"]:
        assert item["status"] == statuses[item["lot_id"]]
        if item["status"] == "completed":
            assert [d["language"] for d in item["descriptions"]] == languages and all(
                d["damages"] for d in item["descriptions"])
        else:
            assert item["error"] and not item["descriptions"]
    return statuses


def assert_no_batch_created_twice(stats: dict) -> None:
    assert all(count == 1 for count in stats["batch_creates_by_metadata"].values()), \
        stats["batch_creates_by_metadata"]


def _attempts(pg_url: str, job_id: str) -> list[tuple]:
    return _query(pg_url, """
        SELECT d.id, d.message_id, d.status, a.attempt_number, a.status_code, a.error
        FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
        WHERE d.batch_job_id = %s ORDER BY d.id, a.attempt_number""", (job_id,))


# ---- OpenAI misbehaving ---------------------------------------------------------------------------

def test_bursts_of_429_and_500_leave_every_lot_done_once(make_live, image_server, sandbox, pg_url):
    api = Api(make_live(BATCH_STRATEGY="direct").url)
    sandbox.configure(fail_next=[429, 429, 429, 500, 500, 500])
    lots = _lots(image_server, 6, "burst")

    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]
    status = api.wait_status(job_id, timeout=40)

    assert status["status"] == "completed", status
    statuses = assert_every_lot_accounted_for(api, pg_url, job_id, lots, EN_DE)
    assert set(statuses.values()) == {"completed"}
    stats = sandbox.stats()
    assert stats["injected_faults"] == {"429": 3, "500": 3}
    # a 429 is a pause, not a failed attempt; a 500 costs the lot one of its two attempts
    attempts = _query(pg_url, "SELECT sum(vision_attempts), sum(translation_attempts) FROM batch_lots "
                              "WHERE job_id = %s", (job_id,))[0]
    assert attempts == (3, 0)
    assert stats["responses_vision_calls"] == 6 + 6 and stats["responses_text_calls"] == 6


def test_openai_down_with_500s_fails_every_lot_with_the_upstream_error(make_live, image_server, sandbox, pg_url,
                                                                        receiver):
    api = Api(make_live(BATCH_STRATEGY="direct").url)
    sandbox.configure(fail_rate_500=1.0)
    lots = _lots(image_server, 3, "down", webhook=receiver.url())

    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]
    status = api.wait_status(job_id, timeout=30)

    assert status["status"] == "failed" and status["error_message"]
    statuses = assert_every_lot_accounted_for(api, pg_url, job_id, lots, EN_DE)
    assert set(statuses.values()) == {"failed"}
    errors = [row[0] for row in _query(pg_url, "SELECT error_message FROM batch_lots WHERE job_id = %s", (job_id,))]
    assert all(error.startswith("vision failed") and "HTTP 500" in error for error in errors), errors
    assert sandbox.stats()["injected_faults"] == {"500": 6}  # two attempts per lot, then a reason
    payload = receiver.wait_for(1)[0].json()
    assert payload["event"] == "batch_job_failed"
    assert sorted(item["lot_id"] for item in payload["lots"] if item["status"] == "failed") == sorted(statuses)


def test_answers_slower_than_the_openai_timeout_are_retried(make_live, image_server, sandbox, pg_url):
    api = Api(make_live(BATCH_STRATEGY="direct", OPENAI_TIMEOUT="1").url)
    sandbox.configure(slow_next=2, slow_seconds=60)
    lots = _lots(image_server, 4, "slow")

    job_id = api.generate(lots, languages=["en"]).json()["job_id"]
    # done long before the slow answers would have come: the worker gave up on them after a second
    status = api.wait_status(job_id, timeout=30)

    assert status["status"] == "completed", status
    assert set(assert_every_lot_accounted_for(api, pg_url, job_id, lots, ["en"]).values()) == {"completed"}
    assert sandbox.stats()["slow_calls"] == 2
    assert _query(pg_url, "SELECT sum(vision_attempts) FROM batch_lots WHERE job_id = %s", (job_id,))[0][0] == 2


@pytest.mark.parametrize("outcome", ["failed", "expired"])
def test_translation_batch_that_fails_or_expires_is_resubmitted_once(make_live, image_server, sandbox, pg_url,
                                                                      outcome):
    sandbox.configure(batch_in_progress_seconds=3)
    api = Api(make_live().url)
    lots = _lots(image_server, 4, f"tr-{outcome}")
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]
    # the vision batch exists: the next batch created is the translation one
    wait_for(lambda: api.status(job_id).json()["openai_vision_batch_id"], 20, "the vision batch")
    sandbox.configure(batch_outcome=outcome, batch_outcome_count=1, batch_expire_completed_fraction=0.5,
                      batch_in_progress_seconds=0.3)

    status = api.wait_status(job_id, timeout=30)

    assert status["status"] == "completed", status
    assert set(assert_every_lot_accounted_for(api, pg_url, job_id, lots, EN_DE).values()) == {"completed"}
    shards = _query(pg_url, "SELECT kind, shard, attempt, openai_status, request_count FROM openai_batches "
                            "WHERE job_id = %s ORDER BY kind, shard", (job_id,))
    resubmitted = 4 if outcome == "failed" else 2
    assert shards == [("translation", 0, 0, outcome, 4), ("translation", 1, 1, "completed", resubmitted),
                      ("vision", 0, 0, "completed", 4)]
    stats = sandbox.stats()
    assert_no_batch_created_twice(stats)
    executed_first = 0 if outcome == "failed" else 2
    assert stats["batch_lines_executed"] == 4 + executed_first + resubmitted


# ---- a webhook receiver that is down --------------------------------------------------------------

def test_webhook_answered_503_twice_is_delivered_on_the_third_attempt(make_live, image_server, sandbox, pg_url,
                                                                      receiver):
    receiver.behaviour.statuses = [503, 503]
    api = Api(make_live(BATCH_STRATEGY="direct").url)
    lots = _lots(image_server, 2, "hook503", webhook=receiver.url())
    job_id = api.generate(lots, languages=["en"]).json()["job_id"]

    assert api.wait_status(job_id)["status"] == "completed"
    requests = receiver.wait_for(3)
    wait_for(lambda: [row[2] for row in _attempts(pg_url, job_id)][-1:] == ["delivered"], 10, "delivered")

    attempts = _attempts(pg_url, job_id)
    assert [(a[3], a[4]) for a in attempts] == [(1, 503), (2, 503), (3, 200)]
    assert len({a[0] for a in attempts}) == 1  # one delivery, retried
    assert [r.headers["x-delivery-attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.headers["webhook-id"] for r in requests} == {attempts[0][1]}
    assert len({r.body for r in requests}) == 1, "the payload changed between attempts"
    for request in requests:
        assert request.headers["x-signature"] == header_signature(request.body)
    assert_every_lot_accounted_for(api, pg_url, job_id, lots, ["en"])
    assert len(receiver.received) == 3


def test_webhook_to_a_closed_port_is_delivered_once_it_listens(make_live, image_server, sandbox, pg_url, receiver):
    late = TcpProxy(("127.0.0.1", int(urlsplit(receiver.url()).port)), listening=False).start()
    try:
        api = Api(make_live(BATCH_STRATEGY="direct", WEBHOOK_RETRY_BASE_SECONDS="0.3").url)
        lots = _lots(image_server, 2, "late", webhook=f"http://127.0.0.1:{late.port}/hook")
        job_id = api.generate(lots, languages=["en"]).json()["job_id"]
        assert api.wait_status(job_id)["status"] == "completed"
        wait_for(lambda: len(_attempts(pg_url, job_id)) >= 2, 10, "two refused attempts")
        late.restore()
        wait_for(lambda: _attempts(pg_url, job_id)[-1][2] == "delivered", 15, "the delivery once the port listens")
    finally:
        late.stop()

    attempts = _attempts(pg_url, job_id)
    refused, delivered = attempts[:-1], attempts[-1]
    assert len(refused) >= 2 and all(a[4] is None and a[5].startswith("connection error") for a in refused), refused
    assert delivered[4] == 200 and delivered[3] == len(attempts)
    assert len(receiver.received) == 1
    request = receiver.received[0]
    assert request.headers["webhook-id"] == delivered[1]
    assert request.headers["x-delivery-attempt"] == str(len(attempts))
    assert sorted(item["lot_id"] for item in request.json()["lots"]) == ["late-0", "late-1"]


# ---- the database going away ------------------------------------------------------------------------

def test_job_survives_the_database_going_away_for_a_few_seconds(db_proxy, make_live, image_server, sandbox,
                                                                pg_url, receiver):
    proxy, url = db_proxy
    sandbox.configure(batch_in_progress_seconds=6)
    live = make_live(DATABASE_URL=url, WORKER_LEASE_SECONDS="3")
    api = Api(live.url)
    assert http_status(f"{live.url}/health") == 200
    lots = _lots(image_server, 4, "dbdown", webhook=receiver.url())
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]
    wait_for(lambda: api.status(job_id).json()["openai_vision_batch_id"], 20, "the vision batch to be submitted")
    assert api.status(job_id).json()["status"] in ("processing", "translating")

    proxy.cut()
    cut_at = time.monotonic()
    wait_for(lambda: http_status(f"{live.url}/health") == 503, 10, "/health to report the database down")
    during = api.status(job_id)
    assert during.status_code == 503 and during.headers["Content-Type"].startswith("application/json")
    assert during.json()["code"] == "SERVICE_UNAVAILABLE" and int(during.headers["Retry-After"]) > 0
    assert during.json()["code"] and "Traceback" not in during.text
    seen = set()
    while time.monotonic() - cut_at < 3.0:  # the outage lasts about three seconds
        seen.add(http_status(f"{live.url}/health"))
        time.sleep(0.2)
    assert seen == {503}
    sandbox.configure(batch_in_progress_seconds=0.3)
    accepted_before = proxy.accepted
    proxy.restore()

    wait_for(lambda: http_status(f"{live.url}/health") == 200, 15, "/health to recover")
    status = api.wait_status(job_id, timeout=40)

    assert status["status"] == "completed", status
    assert proxy.accepted > accepted_before  # the app reconnected through the restored proxy
    assert set(assert_every_lot_accounted_for(api, pg_url, job_id, lots, EN_DE).values()) == {"completed"}
    stats = sandbox.stats()
    assert_no_batch_created_twice(stats)
    assert stats["batches_created"] == 2 and stats["batch_lines_executed"] == 8
    received = receiver.wait_for(1)
    wait_for(lambda: [a[2] for a in _attempts(pg_url, job_id)] == ["delivered"], 10, "one delivered attempt")
    assert len(receiver.received) == len(received) == 1
    assert live.app.extensions["genservice"].worker.alive
