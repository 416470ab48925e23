"""Route policies: every route declares how its caller proves who it is and which rate limit counts it.

A view carries its policy next to its route::

    @bp.get("/batch-status/<job_id>")
    @policy(signature=Signature.JOB_ID, limit=Limit.POLLING)
    def batch_status(job_id): ...

``enforce`` (called once the routes are registered) wraps each view with its signature check (before
the view reads anything) and its rate limit: for a signed route, the client's own rate inside the check
and a count of the address's failed checks outside it (so a flood without a key is refused before any
signature work); for an unsigned one, the address's rate. A signed POST also answers a retried
``Idempotency-Key`` (app/idempotency.py), inside the client's rate, once the signature has named the
client the key belongs to. A route without a declaration stops the app
from starting, so none can be added unprotected; ``Signature.NONE`` and ``Limit.NONE`` say so on
purpose (health, pages, the dashboard, which has its own sign-in).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from flask import Flask


class Signature(enum.Enum):
    """What the HMAC signature of a request is computed over."""

    NONE = "none"                # public, or guarded otherwise (the dashboard's sign-in)
    LOTS = "lots"                # canonical JSON of body.lots, in body.signature or X-Signature
    JOB_ID = "job_id"            # X-Signature over the job id in the path
    DELIVERY_ID = "delivery_id"  # X-Signature over the delivery id in the path
    QUERY = "query"              # X-Signature over the raw query string
    BODY = "body"                # X-Signature over the raw request body


class Limit(enum.Enum):
    """Which rate limit counts a request: per client when signed, else per address (see app/limits.py)."""

    NONE = "none"
    GENERATE = "sync/batch"      # RATE_LIMIT_SYNC for one lot, RATE_LIMIT_BATCH for several
    POLLING = "polling"          # RATE_LIMIT_POLLING, one budget for every polling route
    VALIDATION = "validation"    # RATE_LIMIT_SYNC's rate, counted apart from generate-descriptions
    LOGIN = "dashboard-login"    # dashboard sign-in attempts, when the dashboard is on


@dataclass(frozen=True)
class Policy:
    signature: Signature
    limit: Limit


#: Routes Flask adds itself (a static folder), which serve files only.
BUILT_IN = {"static": Policy(Signature.NONE, Limit.NONE)}

_ATTRIBUTE = "route_policy"
_ENFORCED = "genservice_policies"


def policy(*, signature: Signature, limit: Limit) -> Callable:
    """Declare a view's signature kind and rate limit; put it below the route decorator."""
    if not isinstance(signature, Signature) or not isinstance(limit, Limit):
        raise TypeError("policy() takes a Signature and a Limit")

    def declare(view: Callable) -> Callable:
        setattr(view, _ATTRIBUTE, Policy(signature, limit))
        return view
    return declare


def declared(view: Callable) -> Policy | None:
    return getattr(view, _ATTRIBUTE, None)


def enforced(app: Flask) -> dict[str, Policy]:
    """The policy of every endpoint enforced so far, by endpoint name."""
    return app.extensions.setdefault(_ENFORCED, {})


def _posts(app: Flask, endpoint: str) -> bool:
    return any("POST" in (rule.methods or ()) for rule in app.url_map.iter_rules(endpoint))


def enforce(app: Flask) -> None:
    """Wrap every registered view not wrapped yet with its signature check and its rate limit.

    Raises RuntimeError for a view without a declaration, or signed over a path variable its route
    lacks. Called after the blueprints are registered (app/limits.py, and app/dashboard.py, which
    registers later); calling it again only handles what was added since.
    """
    from app import auth, idempotency, limits

    done = enforced(app)
    for endpoint, view in list(app.view_functions.items()):
        if endpoint in done:
            continue
        found = BUILT_IN.get(endpoint) or declared(view)
        if found is None:
            raise RuntimeError(f"route {endpoint!r} declares no policy: add @policy(signature=..., limit=...) "
                               "below its route decorator")
        variable = auth.PATH_VARIABLES.get(found.signature)
        if variable and any(variable not in rule.arguments for rule in app.url_map.iter_rules(endpoint)):
            raise RuntimeError(f"route {endpoint!r} is signed over {variable!r}, which its path does not have")
        if found.signature is Signature.NONE:
            view = limits.limited(app, endpoint, found.limit, view, by_client=False)
        else:
            if _posts(app, endpoint):
                view = idempotency.idempotent(view)  # inside the signature check: keys are the client's
            # the client's own rate once its signature named it; before the check, only the address's
            # failed checks, so a flood without a key is refused without any signature work
            view = limits.limited(app, endpoint, found.limit, view)
            view = limits.guarded(app, endpoint, found.limit, auth.signed(found.signature, view))
        app.view_functions[endpoint] = view
        done[endpoint] = found
