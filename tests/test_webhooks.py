"""Webhooks: what an ended job sends, how it is signed, when it is retried, and how it survives restarts.

Every receiver is a loopback server (tests/support/receiver.py). The first tests run real jobs
through the API and the sandbox, to prove that ending a job (completed, failed, cancelled) queues
its deliveries. The others record an ended job straight into the database, the way the job
worker ends one (job, lots, texts, and the deliveries in the same transaction), so that they
exercise the dispatcher alone and stay fast.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app import create_app
from database.models import BatchJob, BatchLot, BatchResult
from services import webhooks
from services.clock import utcnow
from tests.conftest import base_config
from tests.support.client import TEST_KEY, Api, header_signature, lot
from tests.support.common import wait_until
from tests.support.receiver import WebhookReceiver, closed_port_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The implicit client's webhook secret without WEBHOOK_SECRET, by the README's recipe: derived one way
# from SHARED_KEY, so a receiver never holds the API key itself.
SECRET = "whsec_" + base64.b64encode(
    hmac.new(TEST_KEY.encode(), b"genservice webhook secret", hashlib.sha256).digest()[:24]).decode()
# what receivers were told before clients had webhook secrets of their own: the API key in whsec_ form
KEY_AS_SECRET = "whsec_" + base64.b64encode(TEST_KEY.encode()).decode()

# The Node.js recipe the README gives integrators, run here as written.
NODE_RECIPE = r"""
const crypto = require('crypto');

function verifyXSignature(rawBody, header, sharedKey) {
  const expected = 'sha256=' + crypto.createHmac('sha256', sharedKey).update(rawBody).digest('hex');
  const given = Buffer.from(header || '', 'utf8');
  const wanted = Buffer.from(expected, 'utf8');
  return given.length === wanted.length && crypto.timingSafeEqual(given, wanted);
}
"""
NODE_MAIN = r"""
const fs = require('fs');
const rawBody = fs.readFileSync(process.argv[2]);
process.exit(verifyXSignature(rawBody, process.env.X_SIGNATURE, process.env.SHARED_KEY) ? 0 : 1);
"""


# ---- verification recipes, written from the published descriptions --------------------------

def spec_recipe_accepts(payload_json: str, received_signature: str, shared_key: str) -> bool:
    """The API document's Python recipe: hex HMAC-SHA256 of the decoded body, compared with ``sha256=``."""
    expected = hmac.new(shared_key.encode(), payload_json.encode(), hashlib.sha256).hexdigest()
    return f"sha256={expected}" == received_signature


def standard_recipe_accepts(body: bytes, headers: dict, secret: str) -> bool:
    """Standard Webhooks by hand: base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under the decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, given) for given in headers["webhook-signature"].split())


# ---- helpers ------------------------------------------------------------------------------------

def runtime_of(app):
    return app.extensions["genservice"]


def seed_ended_job(rt, lots, status: str = "completed", languages=("en",), damages: str = "<p>dent {lot} {lang}</p>",
                   client_id: str = "default"):
    """Record an ended job as the job worker does: job, lots, texts, and its deliveries in one transaction.

    ``lots`` are ``(lot_id, webhook_url or None)``; the job belongs to ``client_id``; returns the job id.
    """
    now = utcnow()
    completed = status == "completed"
    job = BatchJob(
        id=str(uuid.uuid4()), status=status, stage="done", strategy="direct", version="1.0.0",
        languages=list(languages), total_lots=len(lots), processed_lots=len(lots) if completed else 0,
        failed_lots=0 if completed else len(lots), translated_lots=len(lots) if completed else 0,
        total_images=len(lots), total_images_processed=len(lots) if completed else 0,
        webhook_configured=any(url for _, url in lots), input_tokens=10, output_tokens=20,
        error_message=None if completed else f"job {status}", created_at=now - timedelta(minutes=3),
        updated_at=now, started_at=now - timedelta(minutes=3), completed_at=now, estimated_completion=now,
        deadline_at=now + timedelta(hours=25), next_run_at=now, client_id=client_id)
    with rt.db.transaction() as session:
        session.add(job)
        session.flush()
        for seq, (lot_id, url) in enumerate(lots):
            row = BatchLot(job_id=job.id, seq=seq, lot_id=lot_id, additional_info="2019 Toyota Camry",
                           image_urls=[f"http://127.0.0.1:9/{lot_id}.jpg"], webhook_url=url,
                           status="completed" if completed else "failed", processed_images=1 if completed else 0,
                           missing_images=[], processed_at=now, vision_attempts=1, translation_attempts=0,
                           error_message=None if completed else f"job {status}")
            session.add(row)
            session.flush()
            if completed:
                for lang in languages:
                    session.add(BatchResult(job_id=job.id, lot_pk=row.id, language=lang,
                                            damages=damages.format(lot=lot_id, lang=lang)))
        webhooks.final_hook(rt.settings)(session, job)
    if rt.worker is not None:
        rt.worker.wake()
    return job.id


def listing(app, job_id: str, query: str = ""):
    return app.test_client().get(f"/api/v1/batch-jobs/{job_id}/webhook-deliveries{query}",
                                 headers={"X-Signature": header_signature(job_id)})


def deliveries_of(app, job_id: str) -> list[dict]:
    answer = listing(app, job_id)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["deliveries"]


def settled(app, job_id: str, count: int | None = None, timeout: float = 20.0) -> list[dict]:
    """The job's deliveries once none is pending (and, if given, there are ``count`` of them)."""
    def done():
        found = deliveries_of(app, job_id)
        ok = found and all(d["status"] != "pending" for d in found) and (count is None or len(found) == count)
        return found if ok else None
    return wait_until(done, timeout, f"the deliveries of job {job_id} to settle")


def redeliver(app, delivery_id, signed_as=None):
    message = str(delivery_id if signed_as is None else signed_as)
    return app.test_client().post(f"/api/v1/webhook-deliveries/{delivery_id}/redeliver",
                                  headers={"X-Signature": header_signature(message)})


@pytest.fixture
def second_receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


def _image_lots(image_server, specs):
    return [lot(lot_id, [image_server.url(f"/img/{lot_id}-{n}.jpg") for n in (1, 2)], webhook=url)
            for lot_id, url in specs]


# ---- jobs that end send their event ---------------------------------------------------------------

def test_completed_job_sends_each_url_one_delivery_with_only_its_lots(make_live, image_server, receiver):
    server = make_live(BATCH_STRATEGY="direct")
    api = Api(server.url)
    url_a, url_b = receiver.url("/a"), receiver.url("/b")
    lots = _image_lots(image_server, [("a-1", url_a), ("b-1", url_b), ("a-2", url_a), ("c-1", None)])
    job_id = api.generate(lots, languages=["en", "fr"]).json()["job_id"]
    status = api.wait_status(job_id)
    assert status["status"] == "completed", status

    found = settled(server.app, job_id, count=2)
    assert {d["webhook_url"]: d["status"] for d in found} == {url_a: "delivered", url_b: "delivered"}
    requests_by_path = {r.path: r for r in receiver.received}
    assert len(receiver.received) == 2 and set(requests_by_path) == {"/a", "/b"}
    payload = requests_by_path["/a"].json()
    assert payload["event"] == "batch_job_completed"
    assert (payload["job_id"], payload["status"]) == (job_id, "completed")
    assert payload["completed_at"] == status["completed_at"]
    summary = payload["processing_summary"]
    assert (summary["total_lots"], summary["processed_lots"], summary["failed_lots"]) == (4, 4, 0)
    assert isinstance(summary["total_processing_time"], str)
    assert [item["lot_id"] for item in payload["lots"]] == ["a-1", "a-2"]
    for item in payload["lots"]:
        assert item["status"] == "completed" and item["processed_images"] == 2 and item["missing_images"] == []
        assert [d["language"] for d in item["descriptions"]] == ["en", "fr"]
    assert "chunk" not in payload
    assert [item["lot_id"] for item in requests_by_path["/b"].json()["lots"]] == ["b-1"]


def test_failed_job_sends_batch_job_failed(make_live, image_server, receiver):
    server = make_live(BATCH_STRATEGY="direct")
    lots = [lot(f"f-{i}", [image_server.url(f"/missing/f{i}.jpg")], webhook=receiver.url()) for i in range(2)]
    job_id = Api(server.url).generate(lots).json()["job_id"]
    assert Api(server.url).wait_status(job_id)["status"] == "failed"

    [request] = receiver.wait_for(1)
    payload = request.json()
    assert (payload["event"], payload["status"], payload["job_id"]) == ("batch_job_failed", "failed", job_id)
    assert payload["processing_summary"]["failed_lots"] == 2
    assert [(item["lot_id"], item["status"], item["descriptions"]) for item in payload["lots"]] == \
        [("f-0", "failed", []), ("f-1", "failed", [])]
    assert payload["lots"][0]["missing_images"] == [image_server.url("/missing/f0.jpg")]
    assert settled(server.app, job_id, count=1)[0]["status"] == "delivered"


def test_cancelled_job_sends_batch_job_cancelled(make_live, image_server, receiver, sandbox):
    sandbox.configure(batch_in_progress_seconds=60)
    server = make_live()
    api = Api(server.url)
    lots = _image_lots(image_server, [("x-1", receiver.url()), ("x-2", receiver.url())])
    job_id = api.generate(lots).json()["job_id"]
    assert api.cancel(job_id).status_code == 200

    [request] = receiver.wait_for(1)
    payload = request.json()
    assert (payload["event"], payload["status"], payload["job_id"]) == ("batch_job_cancelled", "cancelled", job_id)
    assert [(item["lot_id"], item["status"]) for item in payload["lots"]] == [("x-1", "failed"), ("x-2", "failed")]
    assert settled(server.app, job_id, count=1)[0]["event"] == "batch_job_cancelled"


# ---- headers and signatures ---------------------------------------------------------------------------

def test_every_header_is_sent_and_both_signature_recipes_verify_the_exact_body(make_app, receiver):
    app = make_app()
    job_id = seed_ended_job(runtime_of(app), [("é-1", receiver.url())], languages=("en", "ru"),
                            damages="<p>Évaluation — вмятина {lot} {lang}</p>")
    [request] = receiver.wait_for(1)
    headers, body = request.headers, request.body

    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Generation-Service/2.0"
    assert headers["x-delivery-attempt"] == "1" and headers["x-job-id"] == job_id
    assert headers["webhook-id"] == deliveries_of(app, job_id)[0]["webhook_id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
    assert "вмятина".encode() in body
    assert spec_recipe_accepts(body.decode("utf-8"), headers["x-signature"], TEST_KEY)
    assert not spec_recipe_accepts(body.decode("utf-8") + " ", headers["x-signature"], TEST_KEY)
    assert standard_recipe_accepts(body, headers, SECRET)
    assert Webhook(SECRET).verify(body, headers)["job_id"] == job_id
    assert not standard_recipe_accepts(body, headers, KEY_AS_SECRET)
    with pytest.raises(WebhookVerificationError):
        Webhook(KEY_AS_SECRET).verify(body, headers)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_recipe_verifies_x_signature_over_the_raw_body(make_app, receiver, tmp_path):
    app = make_app(WORKER_ENABLED="false")
    seed_ended_job(runtime_of(app), [("n-1", receiver.url())], damages="<p>Rayure sur l’aile {lot}</p>")
    runtime_of(app).start_worker()
    [request] = receiver.wait_for(1)
    script = tmp_path / "verify.js"
    script.write_text(NODE_RECIPE + NODE_MAIN)

    def node_accepts(body: bytes) -> bool:
        (tmp_path / "body.json").write_bytes(body)
        env = {**os.environ, "X_SIGNATURE": request.headers["x-signature"], "SHARED_KEY": TEST_KEY}
        return subprocess.run(["node", str(script), str(tmp_path / "body.json")], env=env, timeout=30).returncode == 0

    assert node_accepts(request.body)
    assert not node_accepts(request.body.replace(b"n-1", b"n-2"))


# ---- one attempt: what counts, what is recorded ----------------------------------------------------

def test_attempt_records_code_error_duration_and_first_kilobyte_of_the_answer(make_app, receiver):
    receiver.behaviour.default_status = 503
    receiver.behaviour.body = b"x" * 3000
    app = make_app(WEBHOOK_MAX_RETRIES=1)
    job_id = seed_ended_job(runtime_of(app), [("r-1", receiver.url())])
    [delivery] = settled(app, job_id)
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1
    assert delivery["last_status_code"] == 503 and delivery["error_message"].startswith("HTTP 503")
    assert delivery["last_attempt_at"] and delivery["delivered_at"] is None and delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 503, "HTTP 503")
    assert attempt["response_excerpt"] == "x" * 1024
    assert isinstance(attempt["duration_ms"], int) and attempt["started_at"]


def test_201_and_202_count_as_delivered(make_app, receiver):
    receiver.behaviour.statuses = [201, 202]
    app = make_app()
    job_id = seed_ended_job(runtime_of(app), [("ok-1", receiver.url("/one")), ("ok-2", receiver.url("/two"))])
    found = settled(app, job_id, count=2)
    assert sorted(d["last_status_code"] for d in found) == [201, 202]
    for delivery in found:
        assert (delivery["status"], delivery["attempt_count"], delivery["error_message"]) == ("delivered", 1, None)
        assert delivery["delivered_at"]


def test_receiver_that_times_out_is_a_failed_attempt(make_app, receiver):
    receiver.behaviour.hold = threading.Event()
    app = make_app(WEBHOOK_TIMEOUT=0.5, WEBHOOK_MAX_RETRIES=1)
    job_id = seed_ended_job(runtime_of(app), [("t-1", receiver.url())])
    [delivery] = settled(app, job_id)
    assert delivery["status"] == "failed"
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(None, "timeout after 0.5s")]
    assert len(receiver.received) == 1


def test_refused_connection_is_a_failed_attempt(make_app):
    url = closed_port_url()
    app = make_app(WEBHOOK_MAX_RETRIES=2)
    job_id = seed_ended_job(runtime_of(app), [("c-1", url)])
    [delivery] = settled(app, job_id)
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 2
    assert [a["error"] for a in delivery["attempts"]] == ["connection error: ConnectError"] * 2


def test_redirect_is_not_followed(make_app, receiver, second_receiver):
    receiver.behaviour.default_status = 302
    receiver.behaviour.location = second_receiver.url("/elsewhere")
    app = make_app(WEBHOOK_MAX_RETRIES=1)
    job_id = seed_ended_job(runtime_of(app), [("d-1", receiver.url())])
    [delivery] = settled(app, job_id)
    assert delivery["status"] == "failed"
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(302, "HTTP 302 redirect not followed")]
    assert len(receiver.received) == 1 and second_receiver.received == []


def test_ssrf_policy_is_checked_again_at_attempt_time(make_app, receiver):
    app = make_app(ALLOW_PRIVATE_URLS="false", WEBHOOK_MAX_RETRIES=1)
    job_id = seed_ended_job(runtime_of(app), [("s-1", receiver.url())])
    [delivery] = settled(app, job_id)
    assert [a["error"] for a in delivery["attempts"]] == ["blocked: loopback address"]
    assert receiver.received == []


# ---- the retry schedule -------------------------------------------------------------------------------

def test_retries_double_the_wait_and_give_up_after_five_attempts(make_app, receiver):
    receiver.behaviour.default_status = 500
    app = make_app(WEBHOOK_RETRY_BASE_SECONDS=0.5)
    job_id = seed_ended_job(runtime_of(app), [("s-1", receiver.url())])
    [delivery] = settled(app, job_id, timeout=20)

    received = receiver.received
    assert (delivery["status"], delivery["attempt_count"], len(received)) == ("failed", 5, 5)
    assert "gave up after 5 attempts" in delivery["error_message"]
    assert [r.headers["x-delivery-attempt"] for r in received] == ["1", "2", "3", "4", "5"]
    assert {r.headers["webhook-id"] for r in received} == {delivery["webhook_id"]}
    gaps = [later.at - earlier.at for earlier, later in zip(received, received[1:])]
    for gap, expected in zip(gaps, [0.5, 1.0, 2.0, 4.0]):
        assert abs(gap - expected) <= 0.1 * expected, gaps


def test_retry_delays_follow_base_times_powers_of_two():
    assert [webhooks.retry_delay(n, 30).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]


# ---- redelivery and the delivery listing ----------------------------------------------------------

def test_redelivering_a_failed_delivery_sends_it_again_with_the_same_webhook_id(make_app, receiver):
    receiver.behaviour.statuses = [500, 500]
    app = make_app(WEBHOOK_MAX_RETRIES=2)
    job_id = seed_ended_job(runtime_of(app), [("re-1", receiver.url())])
    [failed] = settled(app, job_id)
    assert failed["status"] == "failed"

    answer = redeliver(app, failed["id"])
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert (answer.get_json()["status"], answer.get_json()["max_attempts"]) == ("pending", 4)
    [delivered] = settled(app, job_id)
    assert (delivered["status"], delivered["attempt_count"]) == ("delivered", 3)
    assert [(a["attempt"], a["status_code"]) for a in delivered["attempts"]] == [(1, 500), (2, 500), (3, 200)]
    assert [r.headers["x-delivery-attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert {r.headers["webhook-id"] for r in receiver.received} == {failed["webhook_id"]}


def test_redelivering_a_delivered_delivery_grants_a_fresh_budget(make_app, receiver):
    app = make_app(WEBHOOK_MAX_RETRIES=3)
    job_id = seed_ended_job(runtime_of(app), [("re-2", receiver.url())])
    [delivered] = settled(app, job_id)
    assert delivered["status"] == "delivered"

    receiver.behaviour.default_status = 500
    assert redeliver(app, delivered["id"]).status_code == 202
    [again] = settled(app, job_id)
    assert (again["status"], again["attempt_count"], again["max_attempts"]) == ("failed", 4, 4)
    assert len(receiver.received) == 4 and len(receiver.webhook_ids()) == 1


def test_redeliver_refuses_a_pending_delivery_and_an_unknown_one(make_app, receiver):
    app = make_app(WORKER_ENABLED="false")
    job_id = seed_ended_job(runtime_of(app), [("p-1", receiver.url())])
    [pending] = deliveries_of(app, job_id)

    conflict = redeliver(app, pending["id"])
    assert conflict.status_code == 409 and conflict.get_json()["code"] == "DELIVERY_PENDING"
    for unknown in ("999999", "99999999999999999", "9" * 5000, "abc"):
        answer = redeliver(app, unknown)
        assert answer.status_code == 404 and answer.get_json()["code"] == "DELIVERY_NOT_FOUND"
    unsigned = app.test_client().post(f"/api/v1/webhook-deliveries/{pending['id']}/redeliver")
    assert unsigned.status_code == 401 and unsigned.get_json()["code"] == "MISSING_SIGNATURE"
    assert redeliver(app, pending["id"], signed_as=job_id).status_code == 403


def test_delivery_listing_is_signed_paginated_and_404_for_an_unknown_job(make_app, receiver):
    app = make_app(WORKER_ENABLED="false", WEBHOOK_MAX_LOTS_PER_DELIVERY=1)
    job_id = seed_ended_job(runtime_of(app), [("l-1", receiver.url()), ("l-2", receiver.url())])

    page = listing(app, job_id, "?limit=1&offset=1").get_json()
    assert page["pagination"] == {"limit": 1, "offset": 1, "total": 2, "has_more": False}
    assert [d["chunk"] for d in page["deliveries"]] == [{"index": 1, "count": 2}]
    for bad in ("?limit=0", "?limit=x", "?offset=-1", "?offset=99999999999"):
        assert listing(app, job_id, bad).status_code == 400, bad
    unsigned = app.test_client().get(f"/api/v1/batch-jobs/{job_id}/webhook-deliveries")
    assert unsigned.status_code == 401
    wrong = app.test_client().get(f"/api/v1/batch-jobs/{job_id}/webhook-deliveries",
                                  headers={"X-Signature": header_signature("another-job")})
    assert wrong.status_code == 403
    unknown = str(uuid.uuid4())
    missing = listing(app, unknown)
    assert missing.status_code == 404 and missing.get_json()["code"] == "JOB_NOT_FOUND"


# ---- chunks -------------------------------------------------------------------------------------------

def test_url_with_more_lots_than_the_limit_gets_chunked_deliveries(make_app, receiver):
    ending = make_app(WORKER_ENABLED="false", WEBHOOK_MAX_LOTS_PER_DELIVERY=2)
    big, small = receiver.url("/big"), receiver.url("/small")
    lots = [("k-0", big), ("k-1", small), ("k-2", big), ("k-3", None), ("k-4", big), ("k-5", big), ("k-6", big)]
    job_id = seed_ended_job(runtime_of(ending), lots)
    sending = make_app(WEBHOOK_MAX_LOTS_PER_DELIVERY=1000)  # the chunks recorded at the end are kept
    settled(sending, job_id, count=4)

    big_payloads = sorted((r.json() for r in receiver.received if r.path == "/big"), key=lambda p: p["chunk"]["index"])
    assert [p["chunk"] for p in big_payloads] == [{"index": i, "count": 3} for i in range(3)]
    assert [[item["lot_id"] for item in p["lots"]] for p in big_payloads] == [["k-0", "k-2"], ["k-4", "k-5"], ["k-6"]]
    [small_payload] = [r.json() for r in receiver.received if r.path == "/small"]
    assert "chunk" not in small_payload and [item["lot_id"] for item in small_payload["lots"]] == ["k-1"]
    assert len(receiver.webhook_ids()) == 4


# ---- the pool ------------------------------------------------------------------------------------------

def test_attempts_in_flight_never_exceed_the_pool(make_app, receiver, second_receiver):
    receiver.behaviour.hold = threading.Event()
    second_receiver.behaviour.hold = receiver.behaviour.hold
    app = make_app(WEBHOOK_CONCURRENCY=4)
    job_id = seed_ended_job(runtime_of(app), [(f"q-{i}-{n}", server.url(f"/q{i}")) for i in range(3)
                                              for n, server in enumerate((receiver, second_receiver))])
    wait_until(lambda: len(receiver.received) + len(second_receiver.received) >= 4, 20, "4 attempts")
    time.sleep(0.5)
    assert len(receiver.received) + len(second_receiver.received) == 4
    receiver.behaviour.hold.set()
    settled(app, job_id, count=6)
    assert receiver.max_active + second_receiver.max_active <= 4
    assert len(receiver.received) + len(second_receiver.received) == 6


def test_one_host_with_many_url_strings_holds_at_most_its_share_of_the_pool(make_app, receiver, second_receiver):
    receiver.behaviour.hold = threading.Event()
    app = make_app(WEBHOOK_CONCURRENCY=4)
    crowd = seed_ended_job(runtime_of(app), [(f"n-{i}", receiver.url(f"/hook?n={i}")) for i in range(32)])
    receiver.wait_for(3)
    seed_ended_job(runtime_of(app), [("other-1", second_receiver.url())])
    # the 32 URL strings are one receiver: three quarters of the pool at most, the other host goes on
    second_receiver.wait_for(1)
    assert receiver.max_active == 3 and len(receiver.received) == 3
    receiver.behaviour.hold.set()
    settled(app, crowd, count=32, timeout=60)


def test_receiver_dripping_its_answer_is_cut_at_the_deadline_while_others_are_delivered(
        make_app, receiver, second_receiver):
    receiver.behaviour.drip = 1.0
    app = make_app(WEBHOOK_TIMEOUT=2, WEBHOOK_MAX_RETRIES=1, WEBHOOK_CONCURRENCY=4)
    slow = seed_ended_job(runtime_of(app), [(f"drip-{i}", receiver.url(f"/drip?n={i}")) for i in range(8)])
    receiver.wait_for(3)
    fast = seed_ended_job(runtime_of(app), [("fine-1", second_receiver.url())])
    [delivered] = settled(app, fast)
    assert delivered["status"] == "delivered"
    found = settled(app, slow, count=8, timeout=60)
    assert all(d["status"] == "failed" for d in found)
    assert {a["error"] for d in found for a in d["attempts"]} == {"timeout after 2s"}
    # each answer (~80 bytes at one a second) was abandoned by the client, not waited for
    wait_until(lambda: receiver.cut == 8, 20, "the client to hang up on every dripping answer")


def test_excerpt_of_a_compressed_answer_is_the_raw_bytes_never_inflated(make_app, receiver):
    import gzip
    inflated = b"A" * 1_000_000
    receiver.behaviour.body = gzip.compress(inflated)
    receiver.behaviour.headers = {"Content-Encoding": "gzip"}
    receiver.behaviour.default_status = 500
    app = make_app(WEBHOOK_MAX_RETRIES=1)
    job_id = seed_ended_job(runtime_of(app), [("gz-1", receiver.url())])
    [delivery] = settled(app, job_id)
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 500
    assert "AAAA" not in attempt["response_excerpt"]
    assert len(attempt["response_excerpt"]) <= 1024
    assert receiver.received[0].headers["accept-encoding"] == "identity"


def test_slow_receiver_does_not_hold_up_other_receivers(make_app, receiver, second_receiver):
    receiver.behaviour.hold = threading.Event()
    app = make_app(WEBHOOK_CONCURRENCY=4, WEBHOOK_MAX_LOTS_PER_DELIVERY=1)
    slow_job = seed_ended_job(runtime_of(app), [(f"slow-{i}", receiver.url()) for i in range(6)])
    receiver.wait_for(3)
    seed_ended_job(runtime_of(app), [("fast-1", second_receiver.url())])

    second_receiver.wait_for(1)
    assert len(receiver.received) == 3
    receiver.behaviour.hold.set()
    settled(app, slow_job, count=6)
    assert receiver.max_active == 3 and len(receiver.received) == 6


# ---- restarts, crashes and several instances ---------------------------------------------------------

def test_restart_mid_schedule_sends_the_next_attempt_with_the_same_webhook_id(make_app, receiver):
    receiver.behaviour.statuses = [500]
    first = make_app(WEBHOOK_RETRY_BASE_SECONDS=1.5)
    job_id = seed_ended_job(runtime_of(first), [("m-1", receiver.url())])
    wait_until(lambda: deliveries_of(first, job_id)[0]["attempt_count"] == 1, 20, "attempt 1 to be recorded")
    runtime_of(first).close()
    assert len(receiver.received) == 1

    second = make_app(WEBHOOK_RETRY_BASE_SECONDS=1.5)
    [delivery] = settled(second, job_id)
    assert (delivery["status"], delivery["attempt_count"]) == ("delivered", 2)
    assert [r.headers["x-delivery-attempt"] for r in receiver.received] == ["1", "2"]
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery["webhook_id"]}


def test_closing_the_service_lets_the_attempt_under_way_finish_and_be_recorded(make_app, receiver):
    receiver.behaviour.hold = threading.Event()
    app = make_app()
    job_id = seed_ended_job(runtime_of(app), [("w-1", receiver.url())])
    receiver.wait_for(1)
    runtime_of(app).close()
    receiver.behaviour.hold.set()

    [delivery] = settled(app, job_id)
    assert (delivery["status"], delivery["attempt_count"], delivery["last_status_code"]) == ("delivered", 1, 200)
    assert len(receiver.received) == 1


def test_crash_between_sending_and_recording_resends_with_the_same_webhook_id(make_app, receiver, database_url,
                                                                             sandbox, tmp_path):
    receiver.behaviour.hold = threading.Event()
    app = make_app(WORKER_ENABLED="false", WORKER_LEASE_SECONDS=1)
    job_id = seed_ended_job(runtime_of(app), [("k-1", receiver.url())])
    child = _start_worker_process(database_url, sandbox.url, tmp_path)
    try:
        receiver.wait_for(1, timeout=30)
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    receiver.behaviour.hold = None

    runtime_of(app).start_worker()
    [delivery] = settled(app, job_id)
    assert (delivery["status"], delivery["attempt_count"]) == ("delivered", 1)
    assert [a["attempt"] for a in delivery["attempts"]] == [1]
    assert [r.headers["x-delivery-attempt"] for r in receiver.received] == ["1", "1"]
    assert receiver.webhook_ids() == {delivery["webhook_id"]: 2}


def _start_worker_process(database_url: str, sandbox_url: str, tmp_path) -> subprocess.Popen:
    """The service's worker in a process of its own, to be killed like a crashed host."""
    env = {**os.environ, **base_config(database_url, sandbox_url, tmp_path), "WORKER_LEASE_SECONDS": "1"}
    code = ("import os, time\n"
            "from app.config import Settings\n"
            "from app.runtime import Runtime\n"
            "Runtime(Settings.from_env(os.environ)).start_worker()\n"
            "time.sleep(120)\n")
    with open(tmp_path / "worker.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)


def test_two_instances_on_one_postgresql_never_repeat_an_attempt(pg_database_url, sandbox, tmp_path, receiver):
    receiver.behaviour.statuses = [500] * 15
    receiver.behaviour.delay = 0.02
    config = {**base_config(pg_database_url, sandbox.url, tmp_path), "WEBHOOK_CONCURRENCY": "4",
              "WEBHOOK_MAX_LOTS_PER_DELIVERY": "1"}
    apps = [create_app(config, start_worker=False) for _ in range(2)]
    try:
        jobs = [seed_ended_job(runtime_of(apps[0]), [(f"i{j}-{n}", receiver.url(f"/i{n % 10}")) for n in range(10)])
                for j in range(4)]
        for app in apps:
            runtime_of(app).start_worker()
        found = [d for job_id in jobs for d in settled(apps[0], job_id, count=10, timeout=30)]
    finally:
        for app in apps:
            runtime_of(app).close()

    assert all(d["status"] == "delivered" for d in found) and len(found) == 40
    for delivery in found:
        sent = [r.headers["x-delivery-attempt"] for r in receiver.received
                if r.headers["webhook-id"] == delivery["webhook_id"]]
        assert sent == [str(n) for n in range(1, delivery["attempt_count"] + 1)], delivery
        assert [a["attempt"] for a in delivery["attempts"]] == list(range(1, delivery["attempt_count"] + 1))
    assert len(receiver.received) == sum(d["attempt_count"] for d in found) == 55
    sent_by = [runtime_of(app).metrics.registry.get_sample_value("webhook_deliveries_total", {"status": "success"})
               for app in apps]
    assert all(sent_by), sent_by
