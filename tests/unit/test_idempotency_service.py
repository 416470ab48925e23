"""services.idempotency: the header's forms, the request fingerprint, and the record's states on SQLite."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from services import idempotency
from services.clock import utcnow
from services.errors import ServiceError
from services.idempotency import Claim, SavedAnswer


# ---- the header ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, key", [
    ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ("  padded\t", "padded"),
    ('"with space and \\"quotes\\" and \\\\"', 'with space and "quotes" and \\'),
    ("a", "a"),
    ("k" * 255, "k" * 255),
    ('"' + "q" * 255 + '"', "q" * 255),
    ("order:42/attempt=1", "order:42/attempt=1"),
])
def test_a_bare_or_quoted_key_is_read(raw, key):
    assert idempotency.parse_key(raw) == key


def test_no_header_is_no_key():
    assert idempotency.parse_key(None) is None


@pytest.mark.parametrize("raw", [
    "", "   ", '""', "k" * 256, '"' + "q" * 256 + '"', "caf\u00e9", "tab\tinside", "line\x7f", '"unterminated',
    '"bad \\n escape"', '"inner " quote"', '"', "\x00",
])
def test_a_malformed_key_is_400(raw):
    with pytest.raises(ServiceError) as refused:
        idempotency.parse_key(raw)
    assert (refused.value.status, refused.value.code) == (400, "INVALID_IDEMPOTENCY_KEY")


def test_the_fingerprint_covers_method_path_query_and_body():
    base = idempotency.fingerprint("POST", "/api/v1/estimate", b"a=1", b'{"lots": []}')
    assert base == idempotency.fingerprint("post", "/api/v1/estimate", "a=1", b'{"lots": []}')
    others = {idempotency.fingerprint("PUT", "/api/v1/estimate", b"a=1", b'{"lots": []}'),
              idempotency.fingerprint("POST", "/api/v1/generate-descriptions", b"a=1", b'{"lots": []}'),
              idempotency.fingerprint("POST", "/api/v1/estimate", b"a=2", b'{"lots": []}'),
              idempotency.fingerprint("POST", "/api/v1/estimate", b"", b'{"lots": []}'),
              idempotency.fingerprint("POST", "/api/v1/estimate", b"a=1", b'{"lots":[]}')}
    assert base not in others and len(others) == 5
    # the parts are separated, so moving text between them changes the fingerprint
    assert idempotency.fingerprint("POST", "/a", b"b", b"") != idempotency.fingerprint("POST", "/a\nb", b"", b"")
    text = "\n".join(["POST", "/x", "q", hashlib.sha256(b"body").hexdigest()])
    assert idempotency.fingerprint("POST", "/x", b"q", b"body") == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("status, saved", [(200, True), (201, True), (202, True), (400, True), (404, True),
                                           (409, True), (422, True), (429, False), (500, False), (502, False),
                                           (503, False), (504, False)])
def test_which_answers_are_kept(status, saved):
    assert idempotency.should_save(status) is saved


# ---- the records ---------------------------------------------------------------------------------

def begin(db, key="k1", print_="f" * 64, client="c1", now=None, ttl=3600.0, lock=60.0):
    return idempotency.begin(db, client, key, print_, ttl_seconds=ttl, lock_seconds=lock, now=now)


def test_the_first_request_claims_and_a_retry_replays_its_answer(db):
    claim = begin(db)
    assert isinstance(claim, Claim) and not claim.taken_over
    with pytest.raises(ServiceError) as busy:
        begin(db)
    assert (busy.value.status, busy.value.code) == (409, "IDEMPOTENCY_KEY_IN_USE")
    assert 1 <= busy.value.retry_after <= idempotency.MAX_RETRY_AFTER
    assert idempotency.finish(db, claim, 201, "application/json", b'{"job_id": "j"}')
    assert begin(db) == SavedAnswer(201, "application/json", b'{"job_id": "j"}')


def test_another_request_under_the_key_is_422_whatever_the_state(db):
    claim = begin(db)
    for _ in range(2):
        with pytest.raises(ServiceError) as refused:
            begin(db, print_="0" * 64)
        assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
        idempotency.finish(db, claim, 200, "application/json", b"{}")


def test_keys_are_per_client(db):
    assert isinstance(begin(db, client="a"), Claim)
    assert isinstance(begin(db, client="b"), Claim)


def test_a_released_key_runs_again(db):
    claim = begin(db)
    idempotency.release(db, claim)
    assert isinstance(begin(db), Claim)


def test_a_dead_requests_key_is_taken_over_once_its_lock_ran_out(db):
    start = utcnow()
    dead = begin(db, now=start, lock=10)
    later = start + timedelta(seconds=11)
    taken = begin(db, now=later, lock=10)
    assert isinstance(taken, Claim) and taken.taken_over and taken.since == dead.since
    # the dead request's late answer is not saved over the one that took the key over
    assert not idempotency.finish(db, dead, 500, "application/json", b"late")
    idempotency.release(db, dead)
    with pytest.raises(ServiceError) as busy:
        begin(db, now=later + timedelta(seconds=1), lock=10)
    assert busy.value.status == 409
    assert idempotency.finish(db, taken, 201, "application/json", b"new")
    assert begin(db, now=later + timedelta(seconds=2)).body == b"new"


def test_an_expired_key_is_a_new_request_and_is_pruned(db):
    start = utcnow()
    first = begin(db, now=start, ttl=60)
    idempotency.finish(db, first, 201, "application/json", b"old")
    after = start + timedelta(seconds=61)
    second = begin(db, print_="0" * 64, now=after, ttl=60)  # another request: not 422 once the key expired
    assert isinstance(second, Claim) and not second.taken_over and second.since == after
    idempotency.finish(db, second, 200, "application/json", b"new")
    assert idempotency.prune(db, after + timedelta(seconds=30)) == 0
    assert begin(db, print_="0" * 64, now=after + timedelta(seconds=30), ttl=60).body == b"new"
    assert idempotency.prune(db, after + timedelta(seconds=61)) == 1
    assert isinstance(begin(db, now=after + timedelta(seconds=62)), Claim)


def test_a_running_request_renews_its_lock_and_loses_it_once_taken_over(db):
    start = utcnow()
    claim = begin(db, now=start, lock=10)
    renewed = idempotency.renew(db, claim, 10, now=start + timedelta(seconds=8))
    assert renewed is not None and renewed.locked_until == start + timedelta(seconds=18)
    with pytest.raises(ServiceError) as busy:  # past the first lock, still held: the renewal counts
        begin(db, now=start + timedelta(seconds=12), lock=10)
    assert busy.value.status == 409
    assert idempotency.renew(db, claim, 10) is None  # the stale claim names a lock the record no longer has
    taken = begin(db, now=start + timedelta(seconds=19), lock=10)
    assert taken.taken_over
    assert idempotency.renew(db, renewed, 10, now=start + timedelta(seconds=20)) is None
    assert not idempotency.finish(db, renewed, 200, "application/json", b"late")
    assert idempotency.finish(db, taken, 201, "application/json", b"mine")
