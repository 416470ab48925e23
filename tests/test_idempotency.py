"""Idempotency-Key on the signed POSTs, through a live server: a retry replays the first answer and runs
nothing again, another request under the key is 422, a retry while the first runs is 409, keys are per
client, expire, and survive a request that died after committing its job."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import func, select, update

from database.models import BatchJob, BatchLot, IdempotencyRecord, OpenAIBatch
from services import clients
from services.clock import utcnow
from tests.support.client import Gs2Api, body_signature, header_signature, lot
from tests.support.common import wait_until
from tests.support.image_server import image_bytes

GENERATE = "/api/v1/generate-descriptions"
REPLAYED = "Idempotent-Replayed"


def new_key() -> str:
    return str(uuid.uuid4())


def generate_body(lots, languages=("en",)) -> bytes:
    """A generate-descriptions body signed with the reference's scheme (the implicit client's SHARED_KEY)."""
    return json.dumps({"signature": body_signature(lots), "version": "1.0.0", "languages": list(languages),
                       "lots": lots}).encode()


def post(live, path: str, body: bytes = b"", key: str | None = None, signed_over: str | bytes | None = None,
         headers: dict | None = None, timeout: float = 120):
    """POST ``body`` as JSON; ``signed_over`` puts the reference's X-Signature over that message."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    if signed_over is not None:
        sent["X-Signature"] = header_signature(signed_over)
    return requests.post(f"{live.url}{path}", data=body, headers=sent, timeout=timeout)


def job_count(runtime, client_id: str | None = None) -> int:
    with runtime.db.session() as session:
        query = select(func.count()).select_from(BatchJob)
        if client_id is not None:
            query = query.where(BatchJob.client_id == client_id)
        return session.scalar(query)


def record(runtime, key: str, client_id: str = "default") -> IdempotencyRecord | None:
    with runtime.db.session() as session:
        return session.get(IdempotencyRecord, (client_id, key))


def assert_replayed(first: requests.Response, again: requests.Response) -> None:
    assert REPLAYED not in first.headers
    assert again.headers.get(REPLAYED) == "true"
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Content-Type"] == first.headers["Content-Type"]


# ---- the must-show: a 50,000-lot job retried -------------------------------------------------------

@pytest.mark.parametrize("engine_name", ["postgresql"])  # 50,000 lots end to end: PostgreSQL only, for time
def test_a_50000_lot_post_retried_with_its_key_is_one_job_and_the_sandbox_did_one_jobs_work(make_live, sandbox,
                                                                                            image_server):
    # the sandbox shares this process: on a busy machine its upload of 50,000 lines can outlast the default
    # OpenAI timeout, and a retried upload doubles the work
    live = make_live(BATCH_VALIDATE_IMAGES="false", MAX_CONTENT_LENGTH=str(64 * 1024 * 1024), OPENAI_TIMEOUT="900")
    runtime = live.app.extensions["genservice"]
    url = image_server.url("/img/car.jpg")
    lots = [{"lot_id": f"big-{i}", "images": [{"url": url}]} for i in range(50_000)]
    # two languages, so the translations go through the Batch API too (an English-only job finishes its lots
    # without OpenAI, one direct step per lot, which takes minutes for 50,000)
    body = generate_body(lots, ("en", "de"))
    key = new_key()

    first = post(live, GENERATE, body, key)
    assert first.status_code == 201, first.text
    job_id = first.json()["job_id"]
    retried = post(live, GENERATE, body, key)  # as a client whose connection dropped before the answer would
    assert_replayed(first, retried)

    # the vision batches are the work a duplicate job would pay for first: once one vision request per lot
    # has been sent, the job is cancelled (running it to the end adds minutes and proves no more)
    def vision_sent() -> bool:
        with runtime.db.session() as session:
            return session.scalar(select(func.coalesce(func.sum(OpenAIBatch.request_count), 0))
                                  .where(OpenAIBatch.job_id == job_id, OpenAIBatch.kind == "vision",
                                         OpenAIBatch.batch_id.is_not(None))) >= 50_000
    wait_until(vision_sent, 600, "the vision batches to be sent", interval=0.5)
    cancelled = requests.post(f"{live.url}/api/v1/batch-jobs/{job_id}/cancel",
                              headers={"X-Signature": header_signature(job_id)}, timeout=30)
    assert cancelled.status_code in (200, 400), cancelled.text  # 400: it finished first on a fast machine
    after = post(live, GENERATE, body, key)  # and once more after the job ended: still the first answer
    assert_replayed(first, after)

    assert job_count(runtime) == 1
    with runtime.db.session() as session:
        assert session.scalar(select(BatchJob.idempotency_key).where(BatchJob.id == job_id)) == key
        shards = dict(session.execute(select(OpenAIBatch.kind, func.sum(OpenAIBatch.request_count))
                                      .where(OpenAIBatch.job_id == job_id).group_by(OpenAIBatch.kind)).all())
        batches = session.scalar(select(func.count()).select_from(OpenAIBatch))
        own = session.scalar(select(func.count()).select_from(OpenAIBatch).where(OpenAIBatch.job_id == job_id))
    # one job's work: one vision request per lot, in the batches of that one job only
    assert shards["vision"] == 50_000 and shards.get("translation", 0) <= 50_000
    assert batches == own
    stats = sandbox.stats()
    assert stats["batches_created"] == stats["files_uploaded"] == batches
    assert stats["batch_lines_executed"] <= 50_000 + shards.get("translation", 0)
    assert job_count(runtime) == 1


# ---- replays on every signed POST -----------------------------------------------------------------

def test_every_signed_post_replays_its_first_answer_and_runs_once(live, sandbox, image_server):
    runtime = live.app.extensions["genservice"]
    one = [lot("sync-1", [image_server.url("/img/s1.jpg")])]
    sync_body = generate_body(one, languages=("en", "de"))
    key = new_key()
    first = post(live, GENERATE, sync_body, key)
    assert first.status_code == 200, first.text
    calls = sandbox.stats()["responses_calls"]
    assert calls >= 2  # one vision call, one translation
    again = post(live, GENERATE, sync_body, key)
    assert_replayed(first, again)
    assert sandbox.stats()["responses_calls"] == calls  # OpenAI was not paid again

    two = [lot(f"est-{i}", [image_server.url(f"/img/e{i}.jpg")]) for i in range(2)]
    estimate_body = generate_body(two)
    photo = f"/img/v-{uuid.uuid4().hex}.jpg"
    urls_body = json.dumps({"urls": [image_server.url(photo), image_server.url("/missing/v.jpg")]}).encode()
    for path, body, signed_over in [("/api/v1/estimate", estimate_body, None),
                                    ("/api/v1/test-image-validation", urls_body, urls_body)]:
        key = new_key()
        first = post(live, path, body, key, signed_over=signed_over)
        assert first.status_code == 200, (path, first.text)
        assert_replayed(first, post(live, path, body, key, signed_over=signed_over))
    # the photos were checked by the first validation only (a HEAD, or a GET where HEAD is refused)
    assert len([path for _method, path in image_server.requests if path == photo]) == 1

    # a refusal of the view itself is an answer too: the same 422 again, marked as replayed
    bad = generate_body([lot("lang", [image_server.url("/img/l.jpg")])], languages=("xx",))
    key = new_key()
    refused = post(live, GENERATE, bad, key)
    assert (refused.status_code, refused.json()["code"]) == (422, "UNSUPPORTED_LANGUAGE")
    assert_replayed(refused, post(live, GENERATE, bad, key))
    assert job_count(runtime) == 0


def test_a_batch_retried_with_its_key_is_the_same_job_and_without_it_another(live, image_server):
    runtime = live.app.extensions["genservice"]
    lots = [lot(f"b-{i}", [image_server.url(f"/img/b{i}.jpg")]) for i in range(3)]
    body = generate_body(lots)
    key = new_key()
    first = post(live, GENERATE, body, key)
    assert first.status_code == 201, first.text
    assert_replayed(first, post(live, GENERATE, body, key))
    assert job_count(runtime) == 1
    # the same key quoted as the draft's structured-field string is the same key
    assert_replayed(first, post(live, GENERATE, body, f'"{key}"'))
    without = post(live, GENERATE, body)
    assert without.status_code == 201 and REPLAYED not in without.headers
    assert without.json()["job_id"] != first.json()["job_id"] and job_count(runtime) == 2


def test_the_same_key_with_another_request_is_422(live, image_server):
    runtime = live.app.extensions["genservice"]
    lots = [lot(f"r-{i}", [image_server.url(f"/img/r{i}.jpg")]) for i in range(2)]
    key = new_key()
    assert post(live, GENERATE, generate_body(lots), key).status_code == 201
    others = [("languages differ (outside the reference's signature)", GENERATE, generate_body(lots, ("en", "fr"))),
              ("lots differ", GENERATE, generate_body(lots[:1] + [lot("r-9", [image_server.url("/img/r9.jpg")])])),
              ("another route", "/api/v1/estimate", generate_body(lots))]
    for why, path, body in others:
        answer = post(live, path, body, key)
        assert (answer.status_code, answer.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED"), why
        assert answer.json()["details"]["idempotency_key"] == key
    assert job_count(runtime) == 1


def test_keys_are_scoped_per_client(live, image_server):
    runtime = live.app.extensions["genservice"]
    a = clients.add_client(runtime.db, "auction-a", "Auction A")
    b = clients.add_client(runtime.db, "listing-b", "Listing B")
    lots = [lot(f"c-{i}", [image_server.url(f"/img/c{i}.jpg")]) for i in range(2)]
    key = new_key()
    answers = [Gs2Api(live.url, c.client_id, c.key_id, c.secret).generate(lots, headers={"Idempotency-Key": key})
               for c in (a, b)]
    answers.append(post(live, GENERATE, generate_body(lots), key))  # the implicit client
    assert [answer.status_code for answer in answers] == [201, 201, 201]
    assert len({answer.json()["job_id"] for answer in answers}) == 3
    assert not any(REPLAYED in answer.headers for answer in answers)
    assert [job_count(runtime, c) for c in ("auction-a", "listing-b", "default")] == [1, 1, 1]
    # and within one client the key still replays, under a fresh GS2 signature
    again = Gs2Api(live.url, a.client_id, a.key_id, a.secret).generate(lots, headers={"Idempotency-Key": key})
    assert_replayed(answers[0], again)


# ---- concurrency and crashes ----------------------------------------------------------------------

class GatedImages:
    """A loopback image server whose answers wait until ``open()``: holds a sync request mid-flight."""

    def __init__(self):
        self.gate = threading.Event()
        gate = self.gate

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def _answer(self, head):
                gate.wait(60)
                body = image_bytes(1024)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_retry_while_the_first_is_running_is_409_then_gets_its_answer(make_live, sandbox):
    live = make_live(IMAGE_TIMEOUT="60")
    runtime = live.app.extensions["genservice"]
    with GatedImages() as images:
        body = generate_body([lot("slow-1", [images.url("/held.jpg")])])
        key = new_key()
        first: list[requests.Response] = []
        request = threading.Thread(target=lambda: first.append(post(live, GENERATE, body, key)))
        request.start()
        try:
            wait_until(lambda: record(runtime, key), 30, "the first request to claim its key")
            busy = post(live, GENERATE, body, key)
            assert (busy.status_code, busy.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_USE")
            assert 1 <= int(busy.headers["Retry-After"]) <= 300
            # another request under a key in use is still a misuse of the key
            other = post(live, GENERATE, generate_body([lot("slow-2", [images.url("/held.jpg")])]), key)
            assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
        finally:
            images.gate.set()
            request.join(60)
    assert first and first[0].status_code == 200, first and first[0].text
    assert_replayed(first[0], post(live, GENERATE, body, key))
    assert sandbox.stats()["responses_vision_calls"] == 1


def test_a_request_running_longer_than_its_lock_renews_it_and_is_never_taken_over(make_live, sandbox):
    live = make_live(IMAGE_TIMEOUT="60", IDEMPOTENCY_LOCK_SECONDS="3")
    runtime = live.app.extensions["genservice"]
    with GatedImages() as images:
        body = generate_body([lot("long-1", [images.url("/held.jpg")])])
        key = new_key()
        first: list[requests.Response] = []
        request = threading.Thread(target=lambda: first.append(post(live, GENERATE, body, key)))
        request.start()
        try:
            claimed = wait_until(lambda: record(runtime, key), 30, "the first request to claim its key")
            # wait until the first lock would have run out, and the record shows a later one
            wait_until(lambda: utcnow() > claimed.locked_until and record(runtime, key).locked_until > utcnow(), 30,
                       "the running request to renew its lock")
            busy = post(live, GENERATE, body, key)
            assert (busy.status_code, busy.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_USE")
        finally:
            images.gate.set()
            request.join(60)
    assert first and first[0].status_code == 200
    assert_replayed(first[0], post(live, GENERATE, body, key))
    assert sandbox.stats()["responses_vision_calls"] == 1


def test_a_request_that_died_after_committing_its_job_is_answered_with_that_job(live, image_server):
    """The first attempt committed its job and was killed before saving its answer: the record is left
    'processing'. A retry inside the lock is 409; once the lock ran out it takes the key over and answers
    the committed job (201) instead of accepting a second one."""
    runtime = live.app.extensions["genservice"]
    lots = [lot(f"crash-{i}", [image_server.url(f"/img/x{i}.jpg")]) for i in range(4)]
    body = generate_body(lots)
    key = new_key()
    first = post(live, GENERATE, body, key)
    assert first.status_code == 201
    job_id = first.json()["job_id"]

    def crashed(locked_until):
        with runtime.db.transaction() as session:
            session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == key).values(
                state="processing", locked_until=locked_until, status_code=None, content_type=None,
                response_body=None))

    crashed(utcnow() + timedelta(minutes=5))  # killed a moment ago: its lock still holds
    busy = post(live, GENERATE, body, key)
    assert (busy.status_code, busy.json()["code"]) == (409, "IDEMPOTENCY_KEY_IN_USE")

    crashed(utcnow() - timedelta(seconds=1))  # its lock ran out
    taken_over = post(live, GENERATE, body, key)
    assert taken_over.status_code == 201, taken_over.text
    assert REPLAYED not in taken_over.headers  # it ran, and found the job rather than making one
    # the job as accepted; only its estimate may have moved since (the worker refines it from progress)
    assert taken_over.json()["job_id"] == job_id
    assert {**taken_over.json(), "estimated_completion": None} == {**first.json(), "estimated_completion": None}
    assert job_count(runtime) == 1

    def lot_rows() -> int:
        with runtime.db.session() as session:
            return session.scalar(select(func.count()).select_from(BatchLot).where(BatchLot.job_id == job_id))
    # its 4 lots, once the worker has written them out of their pages (a loaded machine starts the job later)
    wait_until(lambda: lot_rows() == 4, 20, "the job's 4 lots to be written out")
    assert_replayed(taken_over, post(live, GENERATE, body, key))  # and its answer is kept now


def test_a_5xx_answer_is_not_kept_and_the_retry_runs_for_real(live, sandbox, image_server):
    body = generate_body([lot("upstream", [image_server.url("/img/u.jpg")])])
    key = new_key()
    sandbox.configure(fail_next=[500])
    failed = post(live, GENERATE, body, key)
    assert failed.status_code == 502, failed.text
    assert record(live.app.extensions["genservice"], key) is None
    retried = post(live, GENERATE, body, key)
    assert retried.status_code == 200 and REPLAYED not in retried.headers
    assert_replayed(retried, post(live, GENERATE, body, key))


def test_a_full_queue_503_is_not_kept_and_the_retry_is_accepted_once_there_is_room(make_live, image_server):
    live = make_live(MAX_QUEUED_LOTS=3, WORKER_ENABLED="false")
    runtime = live.app.extensions["genservice"]
    filler = post(live, GENERATE, generate_body([lot(f"f-{i}", [image_server.url("/img/f.jpg")]) for i in range(2)]))
    assert filler.status_code == 201
    body = generate_body([lot(f"q-{i}", [image_server.url("/img/q.jpg")]) for i in range(2)])
    key = new_key()
    full = post(live, GENERATE, body, key)
    assert (full.status_code, full.json()["code"]) == (503, "QUEUE_FULL")
    assert record(runtime, key) is None
    assert post(live, GENERATE, body, key).status_code == 503  # run again, refused again: not a replay
    with runtime.db.transaction() as session:
        session.execute(update(BatchJob).values(status="cancelled"))  # the queue empties
    accepted = post(live, GENERATE, body, key)
    assert accepted.status_code == 201 and REPLAYED not in accepted.headers
    assert job_count(runtime) == 2


# ---- cancel and redeliver -------------------------------------------------------------------------

def test_cancel_is_replayed_and_not_run_again(live, sandbox, image_server):
    sandbox.configure(batch_in_progress_seconds=30)
    lots = [lot(f"k-{i}", [image_server.url(f"/img/k{i}.jpg")]) for i in range(2)]
    job_id = post(live, GENERATE, generate_body(lots)).json()["job_id"]
    path = f"/api/v1/batch-jobs/{job_id}/cancel"
    key = new_key()
    cancelled = post(live, path, key=key, signed_over=job_id)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_replayed(cancelled, post(live, path, key=key, signed_over=job_id))
    # run for real, a second cancel is refused: the replay above did not run the view
    assert post(live, path, signed_over=job_id).status_code == 400


def test_redeliver_is_replayed_and_not_queued_again(live, image_server, receiver):
    lots = [lot(f"h-{i}", [image_server.url(f"/img/h{i}.jpg")], webhook=receiver.url()) for i in range(2)]
    job_id = post(live, GENERATE, generate_body(lots)).json()["job_id"]

    def deliveries():
        answer = requests.get(f"{live.url}/api/v1/batch-jobs/{job_id}/webhook-deliveries",
                              headers={"X-Signature": header_signature(job_id)}, timeout=30)
        return answer.json()["deliveries"]

    wait_until(lambda: deliveries() and all(d["status"] == "delivered" for d in deliveries()), 60,
               lambda: f"the webhook delivered: {deliveries()}")
    delivery = deliveries()[0]
    path = f"/api/v1/webhook-deliveries/{delivery['id']}/redeliver"
    key = new_key()
    queued = post(live, path, key=key, signed_over=str(delivery["id"]))
    assert queued.status_code == 202 and queued.json()["status"] == "pending", queued.text
    receiver.wait_for(2)
    wait_until(lambda: deliveries()[0]["status"] == "delivered", 30, "the redelivery delivered")
    again = post(live, path, key=key, signed_over=str(delivery["id"]))
    assert_replayed(queued, again)
    # had it run, the delivery would be pending again with a bigger attempt budget
    now = deliveries()[0]
    assert now["status"] == "delivered" and len(now["attempts"]) == 2


# ---- the key's form, its time to live -------------------------------------------------------------

@pytest.mark.parametrize("raw", ["", '""', "k" * 256, "caf\u00e9", '"open', '"a\\nb"'])
def test_a_malformed_key_is_400_and_nothing_is_created(live, image_server, raw):
    runtime = live.app.extensions["genservice"]
    lots = [lot(f"m-{i}", [image_server.url(f"/img/m{i}.jpg")]) for i in range(2)]
    answer = requests.post(f"{live.url}{GENERATE}", data=generate_body(lots), timeout=30,
                           headers={"Content-Type": "application/json", "Idempotency-Key": raw.encode("latin-1")})
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_IDEMPOTENCY_KEY"), answer.text
    assert job_count(runtime) == 0


def test_a_key_past_its_time_to_live_is_a_new_request_and_is_pruned_by_the_watchdog(live, image_server):
    runtime = live.app.extensions["genservice"]
    lots = [lot(f"t-{i}", [image_server.url(f"/img/t{i}.jpg")]) for i in range(2)]
    key = new_key()
    first = post(live, GENERATE, generate_body(lots), key)
    saved = record(runtime, key)
    assert saved.state == "done" and saved.status_code == 201
    ttl = saved.expires_at - saved.created_at
    assert ttl == timedelta(hours=runtime.settings.idempotency_ttl_hours) == timedelta(hours=24)

    def expire():
        with runtime.db.transaction() as session:
            session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == key)
                            .values(expires_at=utcnow() - timedelta(seconds=1)))

    expire()
    # past its time, the key is free: even another request under it is accepted, as a new job
    other = post(live, GENERATE, generate_body(lots, ("en", "de")), key)
    assert other.status_code == 201 and REPLAYED not in other.headers
    assert other.json()["job_id"] != first.json()["job_id"] and job_count(runtime) == 2
    assert_replayed(other, post(live, GENERATE, generate_body(lots, ("en", "de")), key))

    expire()
    wait_until(lambda: record(runtime, key) is None, 30, "the watchdog to forget the expired key")


def test_the_document_offers_the_key_on_every_signed_post_and_nowhere_else():
    from app.config import Settings
    from app.openapi import build_document

    doc = build_document(Settings(testing=True))
    keyed = set()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            offered = {"$ref": "#/components/parameters/IdempotencyKey"} in operation.get("parameters", [])
            assert offered == (method == "post" and any(operation.get("security") or [])), f"{method} {path}"
            if offered:
                keyed.add(path)
                assert {"400", "409", "422"} <= set(operation["responses"]), path
    assert keyed == {GENERATE, "/api/v1/estimate", "/api/v1/test-image-validation",
                     "/api/v1/batch-jobs/{job_id}/cancel", "/api/v1/webhook-deliveries/{delivery_id}/redeliver"}
    assert doc["components"]["parameters"]["IdempotencyKey"]["in"] == "header"
