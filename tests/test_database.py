"""The database layer's connection handling: idle connections are pinged before use (and replaced when
the server dropped them), busy ones are not; single-statement reads take no transaction, so on SQLite
they do not wait for a writer's lock."""
from __future__ import annotations

import threading

from sqlalchemy import text

from database.session import Database, normalize_url


def _select_one(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(text("SELECT 1")).scalar_one()


def test_a_connection_dropped_while_idle_is_replaced_before_anyone_uses_it(db_proxy):
    proxy, url = db_proxy
    db = Database(normalize_url(url, "instance"), pool_size=2, ping_idle_seconds=0.0)
    try:
        assert _select_one(db) == 1
        accepted = proxy.accepted
        proxy.cut()  # resets the pooled connection, as a database restart would
        proxy.restore()
        # the ping finds the pooled connection dead and the pool connects afresh: no error reaches us
        assert _select_one(db) == 1
        with db.session() as session:
            assert session.execute(text("SELECT 2")).scalar_one() == 2
        assert proxy.accepted > accepted
        assert db.pings >= 1
    finally:
        db.dispose()


def test_a_connection_in_use_a_moment_ago_is_not_pinged_again(pg_url):
    db = Database(normalize_url(pg_url, "instance"), pool_size=1, ping_idle_seconds=60.0)
    try:
        for _ in range(5):
            assert _select_one(db) == 1
        assert db.pings == 0  # one round trip per read under load, not two
        db.ping_idle_seconds = 0.0
        assert _select_one(db) == 1
        assert db.pings == 1
    finally:
        db.dispose()


def test_postgresql_reads_run_outside_a_transaction(pg_url):
    db = Database(normalize_url(pg_url, "instance"), pool_size=1)
    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
            # autocommit: the server holds no transaction (no snapshot kept, no ROLLBACK owed)
            assert conn.connection.dbapi_connection.info.transaction_status.name == "IDLE"
        with db.session() as session:
            session.execute(text("SELECT 1"))
            assert session.connection().connection.dbapi_connection.info.transaction_status.name == "INTRANS"
    finally:
        db.dispose()


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path):
    db = Database(normalize_url(None, str(tmp_path)))
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (n INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        holding = threading.Event()
        reader_done = threading.Event()
        seen: list[int] = []

        def writer() -> None:
            with db.transaction() as session:  # BEGIN IMMEDIATE: the write lock, held until commit
                session.execute(text("INSERT INTO t VALUES (2)"))
                holding.set()
                reader_done.wait(10)
                seen.append(1 if reader_done.is_set() else 0)

        thread = threading.Thread(target=writer)
        thread.start()
        assert holding.wait(10)
        with db.read() as conn:  # would block on BEGIN IMMEDIATE until the writer commits
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
        reader_done.set()
        thread.join(10)
        assert seen == [1]  # the read finished while the writer still held its lock
    finally:
        db.dispose()
