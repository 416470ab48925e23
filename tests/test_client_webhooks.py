"""Webhooks of clients of their own, on a live server with a loopback receiver: each client's webhooks are
signed with its own webhook secret (verified here by the `standardwebhooks` library and by the
reference's X-Signature recipe with the secret in place of the key), never with an API key nor with
another client's secret; a secret rotated with a grace period signs beside the new one; redeliveries
and delivery listings stay within the client; the implicit client keeps X-Signature under SHARED_KEY."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
import requests
from standardwebhooks import Webhook, WebhookVerificationError

from services import clients
from tests.support.client import TEST_KEY, Gs2Api, header_signature, lot
from tests.support.common import wait_until
from tests.test_webhooks import KEY_AS_SECRET, SECRET as DERIVED_SECRET, runtime_of, seed_ended_job, \
    spec_recipe_accepts


def whsec(seed: str, size: int = 32) -> str:
    return "whsec_" + base64.b64encode(hashlib.sha256(seed.encode()).digest()[:size]).decode()


SECRET_A = whsec("auction-a webhooks")
SECRET_B = whsec("listing-b webhooks", 24)


def as_whsec(key: str) -> str:
    """An API key in whsec_ form: what a receiver would hold if webhooks were still signed with keys."""
    return "whsec_" + base64.b64encode(key.encode()).decode()


def x_signature(key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def accepts(secret: str, request) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


@pytest.fixture
def two_clients(make_live):
    """A live server (direct strategy) with two clients whose webhook secrets the test chose."""
    server = make_live(BATCH_STRATEGY="direct")
    db = runtime_of(server.app).db
    a = clients.add_client(db, "auction-a", "Auction A", webhook_secret=SECRET_A)
    b = clients.add_client(db, "listing-b", "Listing B", webhook_secret=SECRET_B)
    return server, Gs2Api(server.url, a.client_id, a.key_id, a.secret), Gs2Api(server.url, b.client_id, b.key_id,
                                                                            b.secret)


def deliveries(api: Gs2Api, job_id: str):
    return api.request("GET", f"/api/v1/batch-jobs/{job_id}/webhook-deliveries")


def settled(api: Gs2Api, job_id: str) -> dict:
    """The job's only delivery, once it is no longer pending (as its owner sees it)."""
    def done():
        answer = deliveries(api, job_id)
        assert answer.status_code == 200, answer.text
        [delivery] = answer.json()["deliveries"]
        return delivery if delivery["status"] != "pending" else None
    return wait_until(done, 20, f"the delivery of job {job_id} to settle")


def redeliver(api: Gs2Api, delivery_id) -> requests.Response:
    return api.request("POST", f"/api/v1/webhook-deliveries/{delivery_id}/redeliver")


# ---- each client's secret, and nothing else ------------------------------------------------------------

def test_each_clients_webhooks_verify_with_its_own_secret_and_with_no_key(two_clients, image_server, receiver):
    server, a, b = two_clients
    jobs = {}
    for api, path in ((a, "/a"), (b, "/b")):
        lots = [lot(f"{api.client_id}-{i}", [image_server.url(f"/img/{api.client_id}{i}.jpg")],
                    webhook=receiver.url(path)) for i in range(2)]
        answer = api.generate(lots)
        assert answer.status_code == 201, answer.text
        jobs[path] = answer.json()["job_id"]
    by_path = {request.path: request for request in receiver.wait_for(2, timeout=60)}

    for path, api, secret, other in (("/a", a, SECRET_A, SECRET_B), ("/b", b, SECRET_B, SECRET_A)):
        request = by_path[path]
        assert Webhook(secret).verify(request.body, request.headers)["job_id"] == jobs[path]
        # the reference's X-Signature recipe works with the webhook secret in place of the key
        assert spec_recipe_accepts(request.body.decode(), request.headers["x-signature"], secret)
        wrong = {"the other client's secret": other, "its own API key": as_whsec(api.secret),
                 "SHARED_KEY": KEY_AS_SECRET, "the implicit client's secret": DERIVED_SECRET}
        assert [name for name, candidate in wrong.items() if accepts(candidate, request)] == []
        for key in (api.secret, a.secret, b.secret, TEST_KEY, other):
            assert request.headers["x-signature"] != x_signature(key, request.body)
        assert len(request.headers["webhook-signature"].split()) == 1


# ---- rotation --------------------------------------------------------------------------------------------

def test_a_rotated_webhook_secret_signs_beside_the_new_one_until_the_grace_ends(two_clients, receiver):
    server, a, _b = two_clients
    db = runtime_of(server.app).db
    job_id = seed_ended_job(runtime_of(server.app), [("r-1", receiver.url())], client_id="auction-a")
    [first] = receiver.wait_for(1)
    assert accepts(SECRET_A, first)
    delivery = settled(a, job_id)

    second_secret = clients.rotate_webhook_secret(db, "auction-a", timedelta(hours=1))
    assert redeliver(a, delivery["id"]).status_code == 202
    second = receiver.wait_for(2)[1]
    # receivers still holding the old secret and those already on the new one both accept it
    assert accepts(SECRET_A, second) and accepts(second_secret, second)
    assert len(second.headers["webhook-signature"].split()) == 2
    assert second.headers["x-signature"] == x_signature(second_secret, second.body)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]

    settled(a, job_id)
    third_secret = clients.rotate_webhook_secret(db, "auction-a", timedelta(0))
    assert redeliver(a, delivery["id"]).status_code == 202
    third = receiver.wait_for(3)[2]
    assert accepts(third_secret, third)
    assert not accepts(SECRET_A, third) and not accepts(second_secret, third)


# ---- redelivery stays within the client -------------------------------------------------------------------

def test_only_the_owner_can_list_or_redeliver_its_deliveries(two_clients, receiver):
    server, a, b = two_clients
    rt = runtime_of(server.app)
    job_a = seed_ended_job(rt, [("own-a", receiver.url("/a"))], client_id="auction-a")
    job_b = seed_ended_job(rt, [("own-b", receiver.url("/b"))], client_id="listing-b")
    receiver.wait_for(2)
    delivery_a, delivery_b = settled(a, job_a), settled(b, job_b)

    for api, job_id, delivery in ((b, job_a, delivery_a), (a, job_b, delivery_b)):
        refused = redeliver(api, delivery["id"])
        assert (refused.status_code, refused.json()["code"]) == (404, "DELIVERY_NOT_FOUND"), refused.text
        assert deliveries(api, job_id).status_code == 404
    implicit = requests.post(f"{server.url}/api/v1/webhook-deliveries/{delivery_a['id']}/redeliver",
                             headers={"X-Signature": header_signature(str(delivery_a["id"]))}, timeout=30)
    assert (implicit.status_code, implicit.json()["code"]) == (404, "DELIVERY_NOT_FOUND")

    # nothing was queued by the refusals: the owner's redelivery is accepted (a queued one would be 409)
    assert redeliver(a, delivery_a["id"]).status_code == 202
    again = receiver.wait_for(3)[2]
    assert again.path == "/a" and accepts(SECRET_A, again) and not accepts(SECRET_B, again)
    assert settled(a, job_a)["attempt_count"] == 2 and settled(b, job_b)["attempt_count"] == 1


# ---- the implicit client -----------------------------------------------------------------------------------

def test_implicit_client_signs_with_webhook_secret_and_keeps_x_signature_under_shared_key(make_live, receiver):
    current, previous = whsec("implicit current"), whsec("implicit previous")
    server = make_live(WEBHOOK_SECRET=current, WEBHOOK_SECRETS=previous)
    seed_ended_job(runtime_of(server.app), [("d-1", receiver.url())])
    [request] = receiver.wait_for(1)
    assert spec_recipe_accepts(request.body.decode(), request.headers["x-signature"], TEST_KEY)
    assert accepts(current, request) and accepts(previous, request)
    assert not accepts(DERIVED_SECRET, request) and not accepts(KEY_AS_SECRET, request)
