"""Engine and session factory, shared by the web app, the worker and the CLI."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import Select, create_engine, event, exc, text
from sqlalchemy.engine import Connection, Engine, make_url
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


_READ_OPTION = "genservice_read"


def _sqlite_begin_immediate(conn) -> None:
    """SQLite cannot upgrade a read transaction to a write one while another writer went first
    ("database is locked" at once, not after busy_timeout); taking the lock at BEGIN avoids that.
    Connections from ``Database.read()`` run each statement on its own and take no lock."""
    if not conn.get_execution_options().get(_READ_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class _PingWhenIdle:
    """Pessimistic disconnect handling that costs nothing under load: a connection coming out of the
    pool is pinged (``SELECT 1``) only if it sat unused for ``idle_seconds`` or more. That is when a
    database restart or a dropped TCP connection goes unnoticed; a connection that was used a moment
    ago is handed out as is, and should the server be gone anyway the statement fails, the engine
    invalidates the whole pool, and the next checkout connects afresh. A failed ping makes the pool
    replace the connection (DisconnectionError), so callers never see it."""

    def __init__(self, idle_seconds: float):
        self.idle_seconds = idle_seconds
        self.pings = 0

    def checkin(self, _dbapi_connection, record) -> None:
        if record is not None:
            record.info["returned_at"] = time.monotonic()

    def checkout(self, dbapi_connection, record, _proxy) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < self.idle_seconds:
            return  # a new connection, or one in use a moment ago
        self.pings += 1
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            if not getattr(dbapi_connection, "autocommit", True):
                dbapi_connection.rollback()  # psycopg opened a transaction for the SELECT
        except Exception as error:
            raise exc.DisconnectionError(f"connection failed its ping: {error}") from error


_CURSOR_KEY = "genservice_one_row_cursor"


class OneRowQuery:
    """A SELECT of at most one row, compiled once and run straight on a pooled driver connection.

    For the hottest read of the service (a job's status, polled by every client): profiled under load,
    SQLAlchemy's per-call work around one statement (building and caching the statement, the
    Connection, the result object and its column metadata) cost four times the driver's own execute.
    Here SQLAlchemy still compiles the statement for the dialect and supplies each column's result
    processing (time zones, JSON), and the pool still hands out, pings and takes back the connection;
    per call only the driver runs. The statement runs on its own, outside a transaction (autocommit on
    PostgreSQL; SQLite's driver runs each statement on its own here), like ``Database.read()``. Driver
    errors come out as SQLAlchemy's (``exc.OperationalError`` when the database is unreachable), and a
    connection the database dropped is discarded instead of going back to the pool.
    """

    def __init__(self, database: "Database", statement: Select):
        engine = database.engine
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positions = tuple(compiled.positiontup or ()) if compiled.positional else None
        self._fixed = dict(compiled.params)  # the values the statement carries itself (literals)
        # built from the driver's column types on the first row (PostgreSQL's numeric processors need them):
        # (column index, processor) for the columns that have one
        self._processors: tuple | None = None
        self.statement = statement
        self._database = database
        self._postgres = dialect.name == "postgresql"

    def _result_processors(self, dialect, description) -> tuple:
        processors = (column.type.dialect_impl(dialect).result_processor(dialect, described[1])
                      for column, described in zip(self.statement.selected_columns, description))
        return tuple((index, processor) for index, processor in enumerate(processors) if processor)

    def one_or_none(self, **params) -> tuple | None:
        """The row for these bind parameters (by name, passed to the driver as they are), or None."""
        values = {**self._fixed, **params}
        arguments = tuple(values[name] for name in self._positions) if self._positions is not None else values
        database = self._database
        dialect = database.engine.dialect
        try:
            raw = database.engine.raw_connection()
        except dialect.loaded_dbapi.Error as error:  # cannot connect: the pool does not wrap that here
            raise exc.DBAPIError.instance(None, None, error, dialect.loaded_dbapi.Error, dialect=dialect) from error
        try:
            driver = raw.driver_connection
            cursor = None
            try:
                if self._postgres:
                    driver.autocommit = True  # a client-side switch while the connection is idle
                cursor = self._cursor(raw, driver) if self._postgres else raw.cursor()
                cursor.execute(self.sql, arguments)
                row = cursor.fetchone()
                if self._processors is None:
                    self._processors = self._result_processors(dialect, cursor.description)
            except dialect.loaded_dbapi.Error as error:
                raw.info.pop(_CURSOR_KEY, None)
                if dialect.is_disconnect(error, driver, cursor):
                    raw.invalidate(error)
                raise exc.DBAPIError.instance(self.sql, arguments, error, dialect.loaded_dbapi.Error,
                                              dialect=dialect) from error
            finally:
                if cursor is not None and not self._postgres:
                    cursor.close()  # SQLite: a statement left open would hold its read snapshot
                if self._postgres and raw.dbapi_connection is not None and not driver.closed:
                    driver.autocommit = False  # as the pool's other users expect it
        finally:
            raw.close()  # back to the pool
        if database.on_raw_read is not None:
            database.on_raw_read()
        if row is None or not self._processors:
            return row
        values = list(row)
        for index, processor in self._processors:
            values[index] = processor(values[index])
        return tuple(values)

    @staticmethod
    def _cursor(raw, driver):
        """The pooled PostgreSQL connection's own cursor for these reads, made once: psycopg sets up a new
        cursor's adapters and loaders each time, which cost half as much again as the statement itself.
        psycopg has fetched the whole result when ``execute`` returns, so the cursor holds nothing open."""
        cached = raw.info.get(_CURSOR_KEY)
        if cached is not None and cached[0] is driver:
            return cached[1]
        cursor = driver.cursor()
        raw.info[_CURSOR_KEY] = (driver, cursor)
        return cursor


class Database:
    """One engine per process and the sessions made from it."""

    def __init__(self, url: str, echo: bool = False, pool_size: int = 10, ping_idle_seconds: float = 1.0):
        self.url = url
        self._ping = _PingWhenIdle(ping_idle_seconds)
        if url.startswith("sqlite"):
            engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            # the driver runs each statement on its own (isolation_level None, set on connect)
            self._reader = engine.execution_options(**{_READ_OPTION: True})
        else:
            engine = create_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, pool_timeout=30,
            )
            event.listen(engine, "checkin", self._ping.checkin)
            event.listen(engine, "checkout", self._ping.checkout)
            # autocommit: a single SELECT needs no BEGIN and no ROLLBACK round trip
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT", **{_READ_OPTION: True})
        self.engine: Engine = engine
        self.sessionmaker = sessionmaker(bind=engine, expire_on_commit=False, future=True)
        # called after each OneRowQuery (which the engine's statement events do not see)
        self.on_raw_read: Callable[[], None] | None = None
        self._one_row_queries: dict[int, OneRowQuery] = {}

    @property
    def pings(self) -> int:
        """Connections pinged before use so far (PostgreSQL)."""
        return self._ping.pings

    @property
    def ping_idle_seconds(self) -> float:
        return self._ping.idle_seconds

    @ping_idle_seconds.setter
    def ping_idle_seconds(self, seconds: float) -> None:
        self._ping.idle_seconds = seconds

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def session(self) -> Session:
        return self.sessionmaker()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads that are one statement each (no transaction around them): the
        cheapest way to answer a hot read-only endpoint such as a job's status."""
        with self._reader.connect() as conn:
            yield conn

    def one_row_query(self, statement: Select) -> OneRowQuery:
        """``statement`` (a module-level constant, with bind parameters for what changes per call)
        compiled for this database on first use, then reused."""
        query = self._one_row_queries.get(id(statement))
        if query is None or query.statement is not statement:
            query = self._one_row_queries[id(statement)] = OneRowQuery(self, statement)
        return query

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
