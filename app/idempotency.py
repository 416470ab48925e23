"""``Idempotency-Key`` on signed POSTs: the HTTP side of services/idempotency.py.

``enforce`` (app/policies.py) wraps every signed POST view with ``idempotent``, inside the signature
check (a key belongs to the client the signature named, ``g.client``) and so inside the rate limit.
Without the header the view runs as before. With it, a retry of an answered request gets the saved
status and body with ``Idempotent-Replayed: true``, and the view does not run.

A view that creates something keyed by the request reads the claim with ``current_claim()`` (job
creation passes it to services.jobs.create_job, which finds the job a dead first attempt committed).
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Callable

from flask import Response, current_app, g, request

from app.auth import current_client, request_path
from app.errors import service_error_response
from services import idempotency
from services.errors import ServiceError
from services.idempotency import Claim

log = logging.getLogger(__name__)


def current_claim() -> Claim | None:
    """The key this request holds, None when it was sent without one."""
    return g.get("idempotency_claim")


def _replay(saved: idempotency.SavedAnswer) -> Response:
    response = Response(saved.body, status=saved.status_code, content_type=saved.content_type)
    response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


class KeepAlive:
    """Renews a claim's lock every third of IDEMPOTENCY_LOCK_SECONDS while its request runs, in a thread of
    its own; ``stop`` ends it and gives the claim as last renewed (what finish and release must name)."""

    def __init__(self, db, claim: Claim, lock_seconds: float):
        self.db, self.claim, self.lock_seconds = db, claim, lock_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idempotency-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.lock_seconds / 3):
            try:
                renewed = idempotency.renew(self.db, self.claim, self.lock_seconds)
            except Exception as error:  # the database away for a moment: try again at the next beat
                log.warning("could not renew the lock of an Idempotency-Key (%s)", type(error).__name__)
                continue
            if renewed is None:
                return
            self.claim = renewed

    def stop(self) -> Claim:
        self._stopped.set()
        self._thread.join()
        return self.claim


def idempotent(view: Callable) -> Callable:
    """``view``, answering a retried ``Idempotency-Key`` from what its first request answered."""

    @functools.wraps(view)
    def keyed(*args, **kwargs):
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        if key is None:
            return view(*args, **kwargs)
        rt = current_app.extensions["genservice"]
        s = rt.settings
        request_print = idempotency.fingerprint(request.method, request_path(), request.query_string,
                                         request.get_data(cache=True))
        found = idempotency.begin(rt.db, current_client().id, key, request_print, ttl_seconds=s.idempotency_ttl_hours * 3600,
                                  lock_seconds=s.idempotency_lock_seconds)
        if isinstance(found, idempotency.SavedAnswer):
            return _replay(found)
        g.idempotency_claim = found
        alive = KeepAlive(rt.db, found, s.idempotency_lock_seconds)
        try:
            try:
                response = current_app.make_response(view(*args, **kwargs))
            except ServiceError as exc:  # the view's own refusal: saved like any other answer it gives
                response = service_error_response(exc)
        except BaseException:
            idempotency.release(rt.db, alive.stop())
            raise
        held = alive.stop()
        if idempotency.should_save(response.status_code) and not response.is_streamed:
            idempotency.finish(rt.db, held, response.status_code, response.content_type or "application/json",
                               response.get_data())
        else:
            idempotency.release(rt.db, held)
        return response
    return keyed
