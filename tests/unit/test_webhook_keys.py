"""services.clients webhook keys and services.webhooks.signed_headers: which secrets sign a client's
webhooks, how a rotation keeps the previous one for its grace, and that the headers verify with the
Standard Webhooks library under the client's secret only (never under an API key)."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import event
from standardwebhooks import Webhook, WebhookVerificationError

from database.models import Client
from services import clients, webhooks
from services.clock import utcnow
from services.errors import ServiceError
from tests.unit.conftest import UNIT_KEY, add_job
from tests.support.common import wait_until
from tests.unit.test_dispatcher import add_delivery, delivery
from workers.dispatcher import WebhookDispatcher

BODY = '{"event":"batch_job_completed","lots":[{"lot_id":"é-1"}]}'.encode()


def whsec(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(hashlib.sha256(seed).digest()[:24]).decode()


def derived(key: str) -> str:
    """The README's recipe for the implicit client's secret when WEBHOOK_SECRET is unset."""
    return "whsec_" + base64.b64encode(hmac.new(key.encode(), b"genservice webhook secret",
                                                hashlib.sha256).digest()[:24]).decode()


def settings(**changes):
    values = dict(shared_keys=(UNIT_KEY,), webhook_secret=None, webhook_secrets=(), reference_signatures=True)
    values.update(changes)
    return SimpleNamespace(shared_key=values["shared_keys"][0] if values["shared_keys"] else "", **values)


def headers_for(keys: clients.WebhookKeys, timestamp: int | None = None) -> dict[str, str]:
    delivery = SimpleNamespace(id=7, batch_job_id="job-1", message_id="msg_0123456789abcdef")
    return webhooks.signed_headers(keys, BODY, delivery, 1, timestamp)


def verifies(secret: str, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(BODY, headers)
    except WebhookVerificationError:
        return False
    return True


def x_signature(key: str) -> str:
    return "sha256=" + hmac.new(key.encode(), BODY, hashlib.sha256).hexdigest()


# ---- the implicit client ------------------------------------------------------------------------------

def test_implicit_client_signs_x_signature_with_shared_key_and_standard_with_the_derived_secret():
    keys = clients.implicit_webhook_keys(settings())
    headers = headers_for(keys)
    assert headers["X-Signature"] == x_signature(UNIT_KEY)
    assert keys.secrets == (derived(UNIT_KEY),)
    assert verifies(derived(UNIT_KEY), headers)
    assert not verifies("whsec_" + base64.b64encode(UNIT_KEY.encode()).decode(), headers)


def test_implicit_client_uses_webhook_secret_and_keeps_every_secret_a_rotation_needs():
    new, old = whsec(b"new"), whsec(b"old")
    keys = clients.implicit_webhook_keys(settings(webhook_secret=new, webhook_secrets=(old,)))
    assert keys.secrets == (new, old) and keys.x_signature_key == UNIT_KEY
    headers = headers_for(keys)
    assert verifies(new, headers) and verifies(old, headers) and not verifies(derived(UNIT_KEY), headers)
    # while the secret is derived, rotating SHARED_KEYS keeps the old key's derived secret signing
    rotated = clients.implicit_webhook_keys(settings(shared_keys=("k" * 40, UNIT_KEY)))
    assert rotated.secrets == (derived("k" * 40), derived(UNIT_KEY)) and rotated.x_signature_key == "k" * 40
    assert clients.implicit_webhook_keys(settings(shared_keys=())) is None


# ---- named clients ------------------------------------------------------------------------------------

def test_named_client_is_signed_with_its_secret_and_no_api_key(db):
    issued = clients.add_client(db, "auction-a")
    other = clients.add_client(db, "listing-b")
    keys = clients.webhook_secrets(db, settings(), ["auction-a"])["auction-a"]
    secret = clients.get_client(db, settings(), "auction-a").webhook_secret
    headers = headers_for(keys)
    assert keys.secrets == (secret,) and headers["X-Signature"] == x_signature(secret)
    assert verifies(secret, headers)
    other_secret = clients.get_client(db, settings(), other.client_id).webhook_secret
    for wrong in (other_secret, derived(UNIT_KEY), "whsec_" + base64.b64encode(issued.secret.encode()).decode()):
        assert not verifies(wrong, headers)
    assert headers["X-Signature"] not in (x_signature(UNIT_KEY), x_signature(issued.secret))


def test_rotation_keeps_the_previous_secret_for_its_grace_only(db):
    clients.add_client(db, "auction-a")
    first = clients.get_client(db, settings(), "auction-a").webhook_secret
    second = clients.rotate_webhook_secret(db, "auction-a", timedelta(hours=1))
    assert second != first and clients.get_client(db, settings(), "auction-a").webhook_secret == second

    keys = clients.webhook_secrets(db, settings(), ["auction-a"])["auction-a"]
    assert keys.secrets == (second, first) and keys.x_signature_key == second
    headers = headers_for(keys)
    assert verifies(first, headers) and verifies(second, headers)
    later = clients.webhook_secrets(db, settings(), ["auction-a"], now=utcnow() + timedelta(hours=2))["auction-a"]
    assert later.secrets == (second,) and not verifies(first, headers_for(later))

    # rotating again keeps only the secret in use until then; no grace drops it at once
    third = clients.rotate_webhook_secret(db, "auction-a", timedelta(hours=1))
    assert clients.webhook_secrets(db, settings(), ["auction-a"])["auction-a"].secrets == (third, second)
    fourth = clients.rotate_webhook_secret(db, "auction-a", timedelta(0))
    assert clients.webhook_secrets(db, settings(), ["auction-a"])["auction-a"].secrets == (fourth,)


def test_a_webhook_secret_must_be_whsec_form_and_the_implicit_one_is_rotated_by_settings(db):
    clients.add_client(db, "auction-a")
    for bad in ("gsk_an-api-key-is-never-a-webhook-secret", "whsec_not base64!", "whsec_" + "QUJD",
                "whsec_" + base64.b64encode(b"x" * 65).decode()):
        with pytest.raises(ServiceError) as refused:
            clients.rotate_webhook_secret(db, "auction-a", secret=bad)
        assert refused.value.status == 400 and refused.value.details == {"field": "webhook_secret"}
        with pytest.raises(ServiceError):
            clients.add_client(db, "listing-b", webhook_secret=bad)
    chosen = whsec(b"chosen")
    assert clients.rotate_webhook_secret(db, "auction-a", secret=chosen) == chosen
    with pytest.raises(ServiceError) as implicit:
        clients.rotate_webhook_secret(db, clients.IMPLICIT)
    assert implicit.value.status == 400
    with pytest.raises(ServiceError) as unknown:
        clients.rotate_webhook_secret(db, "nobody")
    assert unknown.value.status == 404


# ---- a claim's keys: one statement, whatever the number of deliveries ------------------------------------

def test_keys_of_a_claim_are_read_in_one_statement(db):
    clients.add_client(db, "auction-a")
    clients.add_client(db, "listing-b")
    ids = {}
    for owner in ("auction-a", "listing-b", clients.IMPLICIT):
        job_id = add_job(db, status="completed", stage="done", client_id=owner)
        ids[owner] = [add_delivery(db, job_id, url=f"https://{owner}.test/{n}") for n in range(10)]
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (before_cursor_execute's statement)
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        found = clients.delivery_webhook_keys(db, settings(), [i for group in ids.values() for i in group])
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert len(statements) == 1
    for owner, group in ids.items():
        assert {found[i].client_id for i in group} == {owner}
    assert found[ids["auction-a"][0]].secrets == (clients.get_client(db, settings(), "auction-a").webhook_secret,)
    assert found[ids[clients.IMPLICIT][0]].secrets == (derived(UNIT_KEY),)


def test_a_delivery_whose_client_is_gone_is_not_sent_unsigned(db, runtime):
    clients.add_client(db, "gone")
    job_id = add_job(db, status="completed", stage="done", client_id="gone")
    delivery_id = add_delivery(db, job_id)
    with db.transaction() as session:
        session.delete(session.get(Client, "gone"))
    assert clients.delivery_webhook_keys(db, settings(), [delivery_id]) == {}
    dispatcher = WebhookDispatcher(runtime, "worker-1")
    sent = []
    dispatcher._send = lambda *args: sent.append(args)
    try:
        assert dispatcher.dispatch_due() == 1
        row = wait_until(lambda: (d := delivery(db, delivery_id)).attempt_count and d, 10, "the attempt's record")
    finally:
        dispatcher.close()
    assert sent == [] and row.attempt_count == 1 and row.status == "pending"
    assert row.error_message.startswith("not sent: no webhook secret")


def test_a_claim_of_many_clients_deliveries_reads_their_secrets_once(db, runtime, monkeypatch):
    owners = [clients.add_client(db, f"client-{n}").client_id for n in range(3)] + [clients.IMPLICIT]
    expected = {}
    for owner in owners:
        job_id = add_job(db, status="completed", stage="done", client_id=owner)
        for n in range(2):
            expected[add_delivery(db, job_id, url=f"https://{owner}.test/{n}")] = owner
    dispatcher = WebhookDispatcher(runtime, "worker-1")
    started = {}
    monkeypatch.setattr(dispatcher, "_start", lambda delivery_id, host, keys: started.update({delivery_id: keys}))
    reads = []
    listener = lambda conn, cursor, statement, *rest: reads.append(statement) if " clients" in statement else None  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        assert dispatcher.dispatch_due() == len(expected)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
        dispatcher.close()
    assert len(reads) == 1
    assert {delivery_id: keys.client_id for delivery_id, keys in started.items()} == expected
