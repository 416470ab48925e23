"""Clients of their own: each job belongs to the client whose key created it, GS2 signatures are
refused when replayed, late or moved to another route, and the reference's recipes keep working for
the implicit client of SHARED_KEY."""
from __future__ import annotations

import json
import time

import pytest

from services import clients
from tests.support.client import TEST_KEY, Api, Gs2Api, gs2_authorization, header_signature, lot


@pytest.fixture
def two_clients(live):
    rt = live.app.extensions["genservice"]
    a = clients.add_client(rt.db, "auction-a", "Auction A")
    b = clients.add_client(rt.db, "listing-b", "Listing B")
    return (Gs2Api(live.url, a.client_id, a.key_id, a.secret), Gs2Api(live.url, b.client_id, b.key_id, b.secret))


def _job(api: Gs2Api, image_server, count: int = 2) -> str:
    answer = api.generate([lot(f"{api.client_id}-{i}", [image_server.url("/img/a.jpg")]) for i in range(count)])
    assert answer.status_code == 201, answer.text
    return answer.json()["job_id"]


def test_another_clients_job_is_not_found_on_every_route(live, two_clients, image_server):
    a, b = two_clients
    job_id = _job(a, image_server)
    routes = [("GET", f"/api/v1/batch-status/{job_id}"), ("GET", f"/api/v1/batch-results/{job_id}"),
              ("GET", f"/api/v1/batch-results/{job_id}/download"),
              ("GET", f"/api/v1/batch-jobs/{job_id}/webhook-deliveries"),
              ("POST", f"/api/v1/batch-jobs/{job_id}/cancel")]
    for method, path in routes:
        answer = b.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["code"] == "JOB_NOT_FOUND"
    # the implicit client (SHARED_KEY, reference recipes) does not see it either
    implicit = Api(live.url)
    assert implicit.status(job_id).status_code == 404
    assert implicit.cancel(job_id).status_code == 404
    # and the owner still does, untouched: the cancels above did not take (a two-lot job may
    # already have completed by now, so its end is awaited rather than assumed to be ahead)
    assert a.status(job_id).status_code == 200
    deadline = time.monotonic() + 60
    while (status := a.status(job_id).json()["status"]) in ("pending", "processing") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == "completed"


def test_the_listing_shows_only_the_callers_jobs(live, two_clients, image_server):
    a, b = two_clients
    mine = {_job(a, image_server), _job(a, image_server)}
    theirs = _job(b, image_server)
    implicit = Api(live.url)
    implicit_job = implicit.generate([lot(f"d-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]).json()["job_id"]

    def listed(api, query=""):
        answer = api.request("GET", "/api/v1/batch-jobs", query) if isinstance(api, Gs2Api) else \
            api.get(f"/api/v1/batch-jobs{'?' + query if query else ''}", sign=query)
        assert answer.status_code == 200, answer.text
        return {job["job_id"] for job in answer.json()["jobs"]}, answer.json()["pagination"]["total"]

    assert listed(a) == (mine, 2)
    assert listed(b) == ({theirs}, 1)
    assert listed(implicit) == ({implicit_job}, 1)
    assert listed(a, "limit=100&offset=0") == (mine, 2)


def test_a_gs2_signature_is_refused_when_replayed_late_or_moved(live, two_clients, image_server):
    a, _b = two_clients
    job_id = _job(a, image_server)
    path = f"/api/v1/batch-status/{job_id}"
    auth = gs2_authorization(a.secret, a.client_id, a.key_id, "GET", path)
    first = a.http.get(live.url + path, headers={"Authorization": auth}, timeout=10)
    again = a.http.get(live.url + path, headers={"Authorization": auth}, timeout=10)
    assert first.status_code == 200
    assert (again.status_code, again.json()["code"]) == (403, "SIGNATURE_REPLAYED")

    late = a.request("GET", path, timestamp=int(time.time()) - 301)
    early = a.request("GET", path, timestamp=int(time.time()) + 301)
    assert [(r.status_code, r.json()["code"]) for r in (late, early)] == [(403, "SIGNATURE_EXPIRED")] * 2
    assert a.request("GET", path, timestamp=int(time.time()) - 240).status_code == 200

    # a fresh signature of the status poll is not valid for the cancel, the results, or another job
    for method, other in [("POST", f"/api/v1/batch-jobs/{job_id}/cancel"), ("GET", f"/api/v1/batch-results/{job_id}"),
                          ("GET", "/api/v1/batch-status/" + _job(a, image_server))]:
        moved = gs2_authorization(a.secret, a.client_id, a.key_id, "GET", path)
        answer = a.http.request(method, live.url + other, headers={"Authorization": moved}, timeout=10)
        assert (answer.status_code, answer.json()["code"]) == (403, "INVALID_SIGNATURE"), other
    assert a.status(job_id).json()["status"] != "cancelled"


def test_gs2_covers_the_whole_body_and_the_query(live, two_clients, image_server):
    a, _b = two_clients
    lots = [lot(f"body-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]
    signed = json.dumps({"version": "1.0.0", "languages": ["en"], "lots": lots}).encode()
    changed = json.dumps({"version": "1.0.0", "languages": ["en", "de", "fr"], "lots": lots}).encode()
    auth = gs2_authorization(a.secret, a.client_id, a.key_id, "POST", "/api/v1/generate-descriptions", body=signed)
    answer = a.http.post(live.url + "/api/v1/generate-descriptions", data=changed, timeout=30,
                         headers={"Authorization": auth, "Content-Type": "application/json"})
    assert (answer.status_code, answer.json()["code"]) == (403, "INVALID_SIGNATURE")

    auth = gs2_authorization(a.secret, a.client_id, a.key_id, "GET", "/api/v1/batch-jobs", "status=pending")
    answer = a.http.get(live.url + "/api/v1/batch-jobs?status=completed", headers={"Authorization": auth}, timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (403, "INVALID_SIGNATURE")


def test_a_reference_signature_never_passes_for_gs2_nor_the_other_way(live, two_clients, image_server):
    a, _b = two_clients
    job_id = _job(a, image_server)
    path = f"/api/v1/batch-status/{job_id}"
    # the client's own secret in the reference's recipe: refused (this client accepts GS2 only)
    answer = a.http.get(live.url + path, headers={"X-Signature": header_signature(job_id, a.secret)}, timeout=10)
    assert answer.status_code == 403
    # a GS2 header whose signature is the reference's HMAC of the string to sign, keyed with the secret itself
    import hashlib
    import hmac
    stamp, nonce = int(time.time()), "n" * 24
    text = "\n".join(["GS2-HMAC-SHA256", f"{a.client_id}/{a.key_id}", str(stamp), nonce, "GET", path, "",
                      hashlib.sha256(b"").hexdigest()])
    raw = hmac.new(a.secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    forged = (f"GS2-HMAC-SHA256 Credential={a.client_id}/{a.key_id}, Timestamp={stamp}, Nonce={nonce}, "
              f"Signature={raw}")
    answer = a.http.get(live.url + path, headers={"Authorization": forged}, timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (403, "INVALID_SIGNATURE")


def test_the_implicit_client_signs_gs2_with_shared_key(live, image_server):
    implicit = Gs2Api(live.url, "default", clients.implicit_key_id(TEST_KEY), TEST_KEY)
    job_id = _job(implicit, image_server)
    assert Api(live.url).status(job_id).status_code == 200  # the same client under either scheme
    wrong = Gs2Api(live.url, "default", "sk_0000000000000000", TEST_KEY)
    assert wrong.status(job_id).status_code == 403


def test_a_disabled_client_is_refused_and_its_keys_fail(live, two_clients, image_server):
    a, _b = two_clients
    job_id = _job(a, image_server)
    clients.set_enabled(live.app.extensions["genservice"].db, a.client_id, False)
    answer = a.status(job_id)
    assert (answer.status_code, answer.json()["code"]) == (403, "CLIENT_DISABLED")


def test_reference_scheme_only_can_be_turned_off_for_the_implicit_client(make_live, image_server):
    live = make_live(REFERENCE_SIGNATURES="false")
    api = Api(live.url)
    refused = api.generate([lot(f"r-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)])
    assert refused.status_code == 403
    implicit = Gs2Api(live.url, "default", clients.implicit_key_id(TEST_KEY), TEST_KEY)
    assert _job(implicit, image_server)


def test_the_listing_refuses_unknown_parameters(live, image_server):
    api = Api(live.url)
    job_id = api.generate([lot(f"q-{i}", [image_server.url("/img/a.jpg")]) for i in range(2)]).json()["job_id"]
    # a poller's signature (over the job id) sent as the listing's query string
    answer = api.get(f"/api/v1/batch-jobs?{job_id}", sign=job_id)
    assert (answer.status_code, answer.json()["code"]) == (400, "VALIDATION_ERROR")
    assert api.get("/api/v1/batch-jobs?status=pending&foo=1", sign="status=pending&foo=1").status_code == 400
    assert api.get("/api/v1/batch-jobs?status=pending", sign="status=pending").status_code == 200
