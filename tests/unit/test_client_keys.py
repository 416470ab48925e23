"""services/clients.py: keys found by id while active, rotation with a grace, nonces seen once."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from services import clients
from services.clock import utcnow
from services.errors import ServiceError

SHARED = "unit-test-shared-key-of-at-least-32-chars"
SETTINGS = SimpleNamespace(shared_keys=(SHARED,), shared_key=SHARED, reference_signatures=True, webhook_secret=None)


def test_a_key_is_found_by_client_and_id_and_not_by_another_client(db):
    a = clients.add_client(db, "acme")
    clients.add_client(db, "other")
    client, secret = clients.find_key(db, SETTINGS, "acme", a.key_id)
    assert (client.id, secret, client.enabled, client.implicit) == ("acme", a.secret, True, False)
    assert clients.find_key(db, SETTINGS, "other", a.key_id) is None
    assert clients.find_key(db, SETTINGS, "acme", "key_0000000000000000") is None


def test_the_implicit_client_is_made_from_the_settings(db):
    client, secret = clients.find_key(db, SETTINGS, "default", clients.implicit_key_id(SHARED))
    assert (client.id, client.implicit, secret) == ("default", True, SHARED)
    assert client.webhook_secret.startswith("whsec_") and SHARED not in client.webhook_secret
    assert clients.find_key(db, SETTINGS, "default", "sk_" + "0" * 16) is None


def test_rotation_keeps_the_old_key_for_the_grace_only(db):
    first = clients.add_client(db, "acme")
    second = clients.rotate_key(db, "acme", grace=timedelta(minutes=10))
    now = utcnow()
    assert clients.find_key(db, SETTINGS, "acme", first.key_id, now) is not None
    assert clients.find_key(db, SETTINGS, "acme", second.key_id, now) is not None
    later = now + timedelta(minutes=11)
    assert clients.find_key(db, SETTINGS, "acme", first.key_id, later) is None
    assert clients.find_key(db, SETTINGS, "acme", second.key_id, later) is not None
    third = clients.rotate_key(db, "acme", grace=timedelta(0))
    assert clients.find_key(db, SETTINGS, "acme", second.key_id, utcnow() + timedelta(seconds=1)) is None
    assert clients.find_key(db, SETTINGS, "acme", third.key_id) is not None


def test_a_nonce_is_accepted_once_per_client_until_pruned(db):
    expires = utcnow() + timedelta(minutes=5)
    assert clients.remember_nonce(db, "acme", "n" * 16, expires)
    assert not clients.remember_nonce(db, "acme", "n" * 16, expires)
    assert clients.remember_nonce(db, "other", "n" * 16, expires)
    assert clients.prune(db, utcnow()) == 0
    assert clients.prune(db, expires + timedelta(seconds=1)) == 2
    assert clients.remember_nonce(db, "acme", "n" * 16, expires)


@pytest.mark.parametrize("client_id", ["default", "", "Acme", "-x", "a" * 65, "a b", "ключ"])
def test_client_ids_are_short_lower_case_tokens(db, client_id):
    with pytest.raises(ServiceError) as refused:
        clients.add_client(db, client_id)
    assert refused.value.status == 400


def test_a_client_id_is_taken_once(db):
    clients.add_client(db, "acme")
    with pytest.raises(ServiceError) as refused:
        clients.add_client(db, "acme")
    assert refused.value.status == 409


def test_reference_candidates_are_the_implicit_keys_and_clients_that_accept_the_scheme(db):
    clients.add_client(db, "gs2-only")
    legacy = clients.add_client(db, "legacy", reference_scheme=True)
    found = [(client.id, secret) for client, secret in clients.reference_candidates(db, SETTINGS)]
    assert found == [("default", SHARED), ("legacy", legacy.secret)]
    off = SimpleNamespace(**{**SETTINGS.__dict__, "reference_signatures": False})
    assert [c.id for c, _ in clients.reference_candidates(db, off)] == ["legacy"]
