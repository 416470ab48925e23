"""INSERT that skips rows whose unique key already exists, on PostgreSQL and SQLite alike."""
from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, model):
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing()


def insert_ignore(session: Session, model, rows: list[dict]) -> None:
    if not rows:
        return
    session.execute(_insert(session, model), rows)


def insert_if_absent(session: Session, model, values: dict) -> bool:
    """Insert one row unless its unique key exists already; True when this call inserted it."""
    key = next(iter(model.__table__.primary_key.columns))
    return session.execute(_insert(session, model).returning(key), values).first() is not None
