"""Engine and session factory, shared by the web app, the worker and the CLI."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str | None, instance_path: str) -> str:
    """Map the spec's ``postgresql://`` form to psycopg 3 and default to SQLite under instance/."""
    if not url:
        os.makedirs(instance_path, exist_ok=True)
        return "sqlite:///" + os.path.join(os.path.abspath(instance_path), "genservice.db")
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # transactions are begun by us (below), so that they can take the write lock up front
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn) -> None:
    """SQLite cannot upgrade a read transaction to a write one while another writer went first
    ("database is locked" at once, not after busy_timeout); taking the lock at BEGIN avoids that."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine per process and the sessions made from it."""

    def __init__(self, url: str, echo: bool = False, pool_size: int = 10):
        self.url = url
        if url.startswith("sqlite"):
            engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        else:
            engine = create_engine(
                url, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size,
                pool_recycle=1800, pool_timeout=30,
            )
        self.engine: Engine = engine
        self.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False, future=True)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def session(self) -> Session:
        return self.sessionmaker()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
