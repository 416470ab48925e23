"""The Python client (genclient) against a live server, and its request shapes against a stub."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genclient import REFERENCE, ApiError, GenerationClient, WaitTimeout, canonical_lots, implicit_key_id, make_lot, \
    sign_lots
from services.clients import add_client
from tests.support.blocked import MARKER as BLOCKED
from tests.support.client import TEST_KEY, body_signature, gs2_authorization, header_signature, photo_lots
from tests.support.common import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def idle(make_live):
    """A live server whose worker is off, so jobs stay pending until a test acts on them."""
    return make_live(WORKER_ENABLED="false")


def photos(image_server, name: str, count: int = 2) -> list[str]:
    return [image_server.url(f"/img/{name}-{i}.jpg") for i in range(count)]


def batch_lots(image_server, prefix: str, count: int = 2):
    return photo_lots(image_server, count, prefix, info="car {i}")


# ---- signing and packaging ----------------------------------------------------------------------

def test_lot_signature_is_the_spec_recipe_including_non_ascii_text():
    lots = [make_lot("ß-1", ["http://127.0.0.1/a.jpg"], "Лада Гранта, удар спереди", "http://127.0.0.1/hook")]
    assert sign_lots(TEST_KEY, lots) == body_signature(lots)
    assert canonical_lots(lots) == json.dumps(lots, separators=(",", ":"), sort_keys=True)


SERVER_SIDE = "flask,werkzeug,jinja2,sqlalchemy,app,services,database,workers"


def run_without_server(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """A fresh interpreter (-I: no cwd or PYTHONPATH on sys.path) in which Flask and the server's packages
    cannot be imported; genclient comes from the project's installation."""
    return subprocess.run([sys.executable, "-I", str(ROOT / "tests" / "support" / "blocked.py"), SERVER_SIDE, *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_client_package_calls_the_service_where_flask_and_the_server_cannot_be_imported(live, image_server,
                                                                                        tmp_path):
    lots = batch_lots(image_server, "bare", 2)
    (tmp_path / "lots.json").write_text(json.dumps({"lots": lots, "languages": ["en", "de"]}), encoding="utf-8")
    submitted = run_without_server("-m", "genclient.cli", "submit", "lots.json", "--wait", "--out", "out.csv",
                                   "--poll-interval", "0.05", "--key", TEST_KEY, "--url", live.url, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert BLOCKED not in submitted.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((row["lot_id"], row["language"], row["status"]) for row in rows) == [
        (lot["lot_id"], language, "completed") for lot in lots for language in ("de", "en")]
    assert all(row["damages"] for row in rows)
    code = ("import sys, genclient\n"
            "with genclient.GenerationClient(sys.argv[1], sys.argv[2]) as client:\n"
            "    print(client.list_jobs(status='completed')['pagination']['total'])")
    listed = run_without_server("-c", code, TEST_KEY, live.url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert BLOCKED not in listed.stderr and int(listed.stdout) >= 1


def test_blocked_imports_are_refused_and_reported(tmp_path):
    """The check above can fail: code that imports the server in that interpreter is refused and named."""
    done = run_without_server("-c", "import app.client", cwd=tmp_path)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr
    assert f"{BLOCKED} app" in done.stderr


def test_the_old_import_path_is_the_same_client():
    import app.client
    import genclient

    assert app.client.GenerationClient is genclient.GenerationClient and app.client.sign is genclient.sign


def test_create_batch_refuses_a_single_lot_before_any_request():
    client = GenerationClient(TEST_KEY, "http://127.0.0.1:9")
    with pytest.raises(ValueError):
        client.create_batch([make_lot("only", ["http://127.0.0.1/a.jpg"])])


# ---- against the live service -------------------------------------------------------------------

def test_generate_sync_describes_one_lot_in_every_language(live, image_server):
    urls = photos(image_server, "sync") + [image_server.url("/missing/gone.jpg")]
    with GenerationClient(TEST_KEY, live.url) as client:
        answer = client.generate_sync(make_lot("cli-sync-1", urls, "2021 BMW X5"), ["en", "ru"])
    assert answer["processing_mode"] == "synchronous"
    lot = answer["lots"][0]
    assert [d["language"] for d in lot["descriptions"]] == ["en", "ru"]
    assert lot["missing_images"] == [urls[-1]]


def test_batch_is_waited_for_with_progress_then_read(live, image_server):
    client = GenerationClient(TEST_KEY, live.url)
    accepted = client.create_batch(batch_lots(image_server, "wait", 3), ["en", "de"])
    assert accepted["status"] == "accepted" and accepted["total_lots"] == 3
    seen = []
    final = client.wait(accepted["job_id"], poll_interval=0.05, timeout=60, on_progress=seen.append)
    assert final["status"] == "completed" and seen[-1] is final
    assert all(s["job_id"] == accepted["job_id"] for s in seen)
    results = client.results(accepted["job_id"])
    assert results["processing_summary"]["processed_lots"] == 3
    assert [lot["lot_id"] for lot in results["results"]["lots"]] == ["wait-0", "wait-1", "wait-2"]


def test_results_are_none_while_the_job_runs(idle, image_server):
    client = GenerationClient(TEST_KEY, idle.url)
    job_id = client.create_batch(batch_lots(image_server, "early"))["job_id"]
    assert client.results(job_id) is None
    assert client.status(job_id)["status"] == "pending"


def test_wait_gives_up_after_its_timeout_with_the_last_status(idle, image_server):
    client = GenerationClient(TEST_KEY, idle.url)
    job_id = client.create_batch(batch_lots(image_server, "slow"))["job_id"]
    with pytest.raises(WaitTimeout) as caught:
        client.wait(job_id, poll_interval=0.05, timeout=0.3)
    assert caught.value.job_id == job_id and caught.value.last["status"] == "pending"


def test_wait_rides_out_rate_limits(make_live, image_server):
    live = make_live(RATELIMIT_ENABLED="true", RATE_LIMIT_POLLING="4/second")
    client = GenerationClient(TEST_KEY, live.url)
    job_id = client.create_batch(batch_lots(image_server, "limited"))["job_id"]
    hits = []
    original = client.status

    def counting_status(job):
        try:
            return original(job)
        except ApiError as exc:
            hits.append(exc.status)
            raise

    # the window is spent before the wait starts (the limit is a sliding window, so the wait's first poll is
    # refused too): a small job can otherwise be over before the wait has polled five times (it was, under load)
    for _ in range(50):
        try:
            original(job_id)
        except ApiError as exc:
            assert exc.status == 429
            break
    else:
        raise AssertionError("the polling limit never refused")
    client.status = counting_status
    assert client.wait(job_id, poll_interval=0.01, timeout=60)["status"] == "completed"
    assert 429 in hits


def test_download_streams_the_results_file(live, image_server, tmp_path):
    client = GenerationClient(TEST_KEY, live.url)
    job_id = client.create_batch(batch_lots(image_server, "dl"))["job_id"]
    client.wait(job_id, poll_interval=0.05, timeout=60)
    folder = tmp_path / "downloads"
    folder.mkdir()
    chosen = client.download(job_id, folder / "mine.json")
    assert chosen == folder / "mine.json"
    named = client.download(job_id, folder)
    assert named == folder / f"batch_results_{job_id}.json"
    for path in (chosen, named):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert [lot["lot_id"] for lot in document["results"]["lots"]] == ["dl-0", "dl-1"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([chosen.name, named.name])


def test_download_of_a_running_job_raises_and_leaves_no_file(idle, image_server, tmp_path):
    client = GenerationClient(TEST_KEY, idle.url)
    job_id = client.create_batch(batch_lots(image_server, "dl-early"))["job_id"]
    folder = tmp_path / "downloads"
    folder.mkdir()
    with pytest.raises(ApiError) as caught:
        client.download(job_id, folder / "out.json")
    assert caught.value.status == 202
    assert list(folder.iterdir()) == []


def test_list_jobs_filters_and_pages_with_a_signed_query(idle, image_server):
    client = GenerationClient(TEST_KEY, idle.url)
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    ids = [client.create_batch(batch_lots(image_server, f"list{i}"))["job_id"] for i in range(3)]
    client.cancel(ids[0])

    everything = client.list_jobs()
    assert {job["id"] for job in everything["jobs"]} == set(ids)
    cancelled = client.list_jobs(status="cancelled")
    assert [job["id"] for job in cancelled["jobs"]] == [ids[0]]
    page = client.list_jobs(status="pending", limit=1, offset=1)
    assert len(page["jobs"]) == 1 and page["pagination"] == {"limit": 1, "offset": 1, "total": 2, "has_more": False}
    # "+00:00" and ":" travel percent-encoded; the signature must cover exactly those bytes
    recent = client.list_jobs(created_after=before, created_before=before + timedelta(hours=1))
    assert recent["pagination"]["total"] == 3
    assert client.list_jobs(created_before=before)["pagination"]["total"] == 0
    assert client.list_jobs(created_after=before.strftime("%Y-%m-%dT%H:%M:%SZ"))["pagination"]["total"] == 3


def test_cancel_answers_cancelled_then_refuses_a_second_time(idle, image_server):
    client = GenerationClient(TEST_KEY, idle.url)
    job_id = client.create_batch(batch_lots(image_server, "stop"))["job_id"]
    answer = client.cancel(job_id)
    assert answer["status"] == "cancelled" and answer["job_id"] == job_id
    with pytest.raises(ApiError) as caught:
        client.cancel(job_id)
    assert caught.value.status == 400 and caught.value.code == "JOB_NOT_CANCELLABLE"


def test_errors_carry_status_code_message_and_details(live, image_server):
    with pytest.raises(ApiError) as wrong_key:
        GenerationClient("a-wrong-key-that-is-long-enough-0123456789", live.url).status("some-job")
    assert wrong_key.value.status == 403 and wrong_key.value.code == "INVALID_SIGNATURE"
    with pytest.raises(ApiError) as unknown:
        GenerationClient(TEST_KEY, live.url).status("no-such-job")
    assert unknown.value.status == 404 and unknown.value.code == "JOB_NOT_FOUND"
    assert unknown.value.details == {"job_id": "no-such-job"}
    assert unknown.value.to_dict()["status"] == 404 and unknown.value.message


def test_webhook_deliveries_are_listed_and_redelivered(make_live, image_server, receiver):
    live = make_live()
    client = GenerationClient(TEST_KEY, live.url)
    first, second = receiver.url("/first"), receiver.url("/second")
    lots = [make_lot("hook-0", photos(image_server, "hook0"), webhook=first),
            make_lot("hook-1", photos(image_server, "hook1"), webhook=second)]
    job_id = client.create_batch(lots)["job_id"]
    client.wait(job_id, poll_interval=0.05, timeout=60)
    receiver.wait_for(2)
    wait_until(lambda: {d["status"] for d in client.webhook_deliveries(job_id)["deliveries"]} == {"delivered"}, 20,
               lambda: f"every delivery delivered: {client.webhook_deliveries(job_id)}")
    listing = client.webhook_deliveries(job_id)
    assert {d["webhook_url"] for d in listing["deliveries"]} == {first, second}
    page = client.webhook_deliveries(job_id, limit=1, offset=1)
    assert len(page["deliveries"]) == 1 and page["pagination"]["total"] == 2
    again = client.redeliver(listing["deliveries"][0]["id"])
    assert again["status"] == "pending"
    assert receiver.wait_for(3)[2].path == listing["deliveries"][0]["webhook_url"].removeprefix(receiver.url(""))
    with pytest.raises(ApiError) as unknown:
        client.redeliver(987654)
    assert unknown.value.status == 404


# ---- request shapes against a stub --------------------------------------------------------------

class Stub:
    """Records each request and answers 200 with a small JSON body."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        self.bodies: list[bytes] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                stub.bodies.append(body)
                body = b'{"deliveries": [], "ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def stub():
    server = Stub()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_delivery_calls_use_the_documented_paths_and_signatures(stub):
    client = GenerationClient(TEST_KEY, stub.url, scheme=REFERENCE)
    client.webhook_deliveries("job-42", limit=5)
    client.redeliver(17)
    (m1, p1, h1), (m2, p2, h2) = stub.requests
    assert (m1, p1) == ("GET", "/api/v1/batch-jobs/job-42/webhook-deliveries?limit=5")
    assert h1["x-signature"] == header_signature("job-42")
    assert (m2, p2) == ("POST", "/api/v1/webhook-deliveries/17/redeliver")
    assert h2["x-signature"] == header_signature("17")


def test_list_jobs_signs_the_query_string_as_it_is_sent(stub):
    client = GenerationClient(TEST_KEY, stub.url, scheme=REFERENCE)
    client.list_jobs(status="completed", limit=5, created_after="2026-01-01T00:00:00+02:00")
    client.list_jobs()
    (_, with_query, headers), (_, bare, bare_headers) = stub.requests
    path, query = with_query.split("?", 1)
    assert path == "/api/v1/batch-jobs" and "%2B02%3A00" in query
    assert headers["x-signature"] == header_signature(query)
    assert bare == "/api/v1/batch-jobs" and bare_headers["x-signature"] == header_signature("")



# ---- GS2 ----------------------------------------------------------------------------------------

GS2_HEADER = re.compile(r"GS2-HMAC-SHA256 Credential=([^/]+)/([^,]+), Timestamp=(\d+), Nonce=([^,]+), Signature=(\w+)")


def gs2_parts(header: str) -> dict:
    match = GS2_HEADER.fullmatch(header)
    assert match, header
    return dict(zip(("client_id", "key_id", "timestamp", "nonce", "signature"), match.groups()))


def assert_gs2_signed(stub: Stub, index: int, secret: str) -> dict:
    """The request's Authorization is what the README's recipe (tests/support) makes of the path, query and
    body bytes the stub received."""
    method, target, headers = stub.requests[index]
    path, _, query = target.partition("?")
    parts = gs2_parts(headers["authorization"])
    expected = gs2_authorization(secret, parts["client_id"], parts["key_id"], method, path, query,
                                 stub.bodies[index], timestamp=int(parts["timestamp"]), nonce=parts["nonce"])
    assert headers["authorization"] == expected
    assert "x-signature" not in headers
    return parts


def test_a_shared_key_signs_gs2_as_the_implicit_client(stub):
    client = GenerationClient(TEST_KEY, stub.url)
    client.status("job-42")
    client.list_jobs(status="completed", created_after="2026-01-01T00:00:00+02:00")
    client.redeliver(17)
    for index in range(3):
        parts = assert_gs2_signed(stub, index, TEST_KEY)
        assert (parts["client_id"], parts["key_id"]) == ("default", implicit_key_id(TEST_KEY))
    assert "%2B02%3A00" in stub.requests[1][1], "the query is signed as sent, percent-encoded"
    nonces = {gs2_parts(headers["authorization"])["nonce"] for _m, _p, headers in stub.requests}
    assert len(nonces) == 3, "every request has a nonce of its own"


def test_the_implicit_key_id_is_the_services_fingerprint():
    from services.clients import implicit_key_id as service_key_id

    for key in (TEST_KEY, "ключ-" + "x" * 40):
        assert implicit_key_id(key) == service_key_id(key)


def test_a_clients_key_signs_every_request_and_the_signed_body_is_the_one_sent(stub):
    client = GenerationClient(base_url=stub.url, client_id="auction-a", key_id="key_0123456789abcdef",
                              secret="gsk_secret-of-auction-a")
    lots = [make_lot("del-\u007f-1", ["http://127.0.0.1/a.jpg"], "Škoda \u007f Лада 🚗"),
            make_lot("del-2", ["http://127.0.0.1/b.jpg"])]
    with pytest.raises(ApiError):  # the stub answers 200 where a job's 201 is expected; the request is what counts
        client.create_batch(lots, ["en", "ru"], idempotency_key="retry-me-1")
    client.cancel("job-7")
    parts = assert_gs2_signed(stub, 0, "gsk_secret-of-auction-a")
    assert (parts["client_id"], parts["key_id"]) == ("auction-a", "key_0123456789abcdef")
    sent = json.loads(stub.bodies[0])
    assert sent == {"version": "1.0.0", "languages": ["en", "ru"], "lots": lots}, "no reference signature in the body"
    assert "\u007f".encode() in stub.bodies[0] and "Лада".encode() in stub.bodies[0]
    assert stub.requests[0][2]["idempotency-key"] == "retry-me-1"
    assert_gs2_signed(stub, 1, "gsk_secret-of-auction-a")
    assert stub.requests[1][:2] == ("POST", "/api/v1/batch-jobs/job-7/cancel")


@pytest.mark.parametrize("kwargs, complaint", [
    ({}, "a key is required"),
    ({"shared_key": TEST_KEY, "secret": "s"}, "not both"),
    ({"client_id": "auction-a", "secret": "s"}, "key_id is required"),
    ({"shared_key": TEST_KEY, "client_id": "auction-a", "key_id": "k"}, "implicit client"),
    ({"shared_key": TEST_KEY, "scheme": "v3"}, "scheme must be"),
])
def test_a_client_without_a_usable_credential_is_refused_at_once(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        GenerationClient(**kwargs)


def test_a_clients_gs2_requests_are_accepted_by_the_service(live, image_server):
    issued = add_client(live.app.extensions["genservice"].db, "gs2-client", "GS2")
    client = GenerationClient(base_url=live.url, client_id=issued.client_id, key_id=issued.key_id,
                              secret=issued.secret, timeout=30)
    lots = [make_lot(f"gs2-{i}", photos(image_server, f"gs2-{i}"), "Citro\u00ebn \u007f — удар спереди")
            for i in range(2)]
    job = client.create_batch(lots, ["en", "de"])
    final = client.wait(job["job_id"], poll_interval=0.05, timeout=60)
    assert final["status"] == "completed"
    assert len(client.results(job["job_id"])["results"]["lots"]) == 2
    assert [j["id"] for j in client.list_jobs(status="completed")["jobs"]] == [job["job_id"]]
    one = client.generate_sync(make_lot("gs2-sync", photos(image_server, "gs2-sync"), "DEL \u007f, ß"), ["en"])
    assert one["lots"][0]["status"] == "completed"
    # the implicit client does not see this client's job
    with pytest.raises(ApiError) as hidden:
        GenerationClient(TEST_KEY, live.url).status(job["job_id"])
    assert hidden.value.status == 404


def test_the_reference_scheme_still_works_for_the_implicit_client(live, image_server):
    client = GenerationClient(TEST_KEY, live.url, scheme=REFERENCE)
    job = client.create_batch(batch_lots(image_server, "ref", 2))
    assert client.status(job["job_id"])["job_id"] == job["job_id"]
    assert GenerationClient(TEST_KEY, live.url).status(job["job_id"])["job_id"] == job["job_id"], "one client"
