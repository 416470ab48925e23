"""Claiming work through the database so that any number of processes share it safely.

A row is claimed by writing our name and an expiry into it, inside a transaction that locked it
with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers instead). The UPDATE
repeats the "lease is free" test, so a claim is exclusive on both engines. A process that dies
simply stops renewing; its rows become free when the lease expires.
"""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Sequence

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from services.clock import utcnow


class LeaseLost(Exception):
    """Another process holds the work now (our lease lapsed and was claimed), or the work may no longer go on."""


def lease_free(model, now):
    return or_(model.lease_expires_at.is_(None), model.lease_expires_at < now)


def freed() -> dict[str, None]:
    """The lease columns of a row given back, for a bulk UPDATE that also writes the row's outcome."""
    return {"lease_owner": None, "lease_expires_at": None}


def keep(row, owner: str, seconds: float) -> None:
    """Hold a row loaded in the caller's transaction for ``seconds`` more (written at commit)."""
    row.lease_owner = owner
    row.lease_expires_at = utcnow() + timedelta(seconds=seconds)


def give_back(row) -> None:
    """Free a row loaded in the caller's transaction (written at commit), with the outcome written beside it."""
    row.lease_owner = None
    row.lease_expires_at = None


def claim(session: Session, model, due_condition, order_by, limit: int, owner: str, seconds: float) -> list[Any]:
    """Claim up to ``limit`` due rows of ``model``; returns their primary keys. Commits."""
    now = utcnow()
    ids = session.scalars(
        select(model.__mapper__.primary_key[0])
        .where(due_condition, lease_free(model, now))
        .order_by(order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        session.rollback()
        return []
    pk = model.__mapper__.primary_key[0]
    session.execute(
        update(model).where(pk.in_(ids), lease_free(model, now))
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    claimed = session.scalars(select(pk).where(pk.in_(ids), model.lease_owner == owner)).all()
    session.commit()
    return list(claimed)


def renew(session: Session, model, ids: Sequence[Any], owner: str, seconds: float) -> int:
    """Extend our leases; returns how many we still hold (0 means someone took the work over)."""
    pk = model.__mapper__.primary_key[0]
    result = session.execute(
        update(model).where(pk.in_(ids), model.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount


def release(session: Session, model, ids: Sequence[Any], owner: str, **values) -> None:
    pk = model.__mapper__.primary_key[0]
    session.execute(
        update(model).where(and_(pk.in_(ids), model.lease_owner == owner))
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


class Lease:
    """A row this process claimed, and the proof, inside each write made for it, that it still holds it.

    A worker can stall (a pause, a slow call) past its lease while another takes the work over;
    when it wakes up, whatever it was about to write is stale. So every write for leased work
    starts with ``fence(session)``: an UPDATE that extends the lease only WHERE the owner is still
    us, in the same transaction. If the row is no longer ours the write is abandoned
    (``LeaseLost``); on PostgreSQL the UPDATE also holds the row until commit, so a takeover cannot
    slip in between the proof and the write.
    """

    def __init__(self, db, model, key: Any, owner: str, seconds: float, active=None):
        self.db = db
        self.model = model
        self.key = key
        self.owner = owner
        self.seconds = seconds
        self.active = active
        self._renewed = time.monotonic()

    def fence(self, session: Session, *conditions) -> None:
        """Prove ownership (and ``conditions``) in ``session``'s transaction, extending the lease; else LeaseLost."""
        pk = self.model.__mapper__.primary_key[0]
        result = session.execute(
            update(self.model).where(pk == self.key, self.model.lease_owner == self.owner, *conditions)
            .values(lease_expires_at=utcnow() + timedelta(seconds=self.seconds))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:
            raise LeaseLost(self.key)
        self._renewed = time.monotonic()

    def renew(self) -> None:
        """Extend the lease if a third of it has passed since the last proof; LeaseLost if it is gone."""
        if time.monotonic() - self._renewed < self.seconds / 3:
            return
        with self.db.transaction() as session:
            self.fence(session)

    def check_active(self) -> None:
        """Before anything that costs money: the lease is ours and the work is still wanted (e.g. not cancelled)."""
        with self.db.transaction() as session:
            self.fence(session, *([] if self.active is None else [self.active]))
