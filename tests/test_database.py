"""The database layer's connection handling: idle connections are pinged before use (and replaced when
the server dropped them), busy ones are not; single-statement reads take no transaction, so on SQLite
they do not wait for a writer's lock."""
from __future__ import annotations

import threading
from dataclasses import fields

import pytest
from sqlalchemy import String, bindparam, event, exc, literal_column, select, text

from database.models import BatchJob, JobSnapshot
from database.session import Database, normalize_url
from services import jobs
from tests.support.client import body_signature, lot


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


# ---- one-row reads (the status poll's path: compiled once, run on the pooled driver connection) ----

def _echo_query(db: Database):
    return db.one_row_query(ECHO)


ECHO = select(literal_column("1").label("one"), bindparam("value", type_=String).label("echo"))


def test_one_row_query_reads_like_the_orm(make_app):
    """Same values (time-zone-aware timestamps, JSON lists) as the ORM read, on PostgreSQL and SQLite;
    an unknown id is None; each read is counted as a database read."""
    app = make_app(WORKER_ENABLED="false")
    rt = app.extensions["genservice"]
    client = app.test_client()
    lots = [lot(f"orq-{i}", ["http://127.0.0.1:9/a.jpg"]) for i in range(2)]
    answer = client.post("/api/v1/generate-descriptions", json={
        "signature": body_signature(lots), "languages": ["en", "de"], "lots": lots})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    job_id = answer.get_json()["job_id"]
    with rt.db.session() as session:
        job = session.get(BatchJob, job_id)
        expected = JobSnapshot(*(getattr(job, f.name) for f in fields(JobSnapshot)))
    reads = rt.metrics.db_ops.labels(operation="read")._value.get()
    snapshot = jobs.get_job(rt.db, job_id)
    assert snapshot == expected
    assert snapshot.languages == ["en", "de"] and snapshot.created_at.tzinfo is not None
    # a float column (the estimate in dollars) needs the driver's column type on PostgreSQL
    assert isinstance(snapshot.estimated_cost_usd, float) and snapshot.estimated_cost_usd > 0
    assert rt.metrics.db_ops.labels(operation="read")._value.get() == reads + 1
    assert rt.db.one_row_query(jobs.JOB_SNAPSHOT).one_or_none(job_id="no-such-job") is None
    assert _echo_query(rt.db).one_or_none(value="x") == (1, "x")
    assert rt.db.one_row_query(jobs.JOB_SNAPSHOT) is rt.db.one_row_query(jobs.JOB_SNAPSHOT)  # compiled once


def test_one_row_query_runs_outside_a_transaction_and_hands_back_a_normal_connection(pg_url):
    db = Database(normalize_url(pg_url, "instance"), pool_size=1)
    try:
        seen = []
        event.listen(db.engine, "checkin", lambda dbapi, record: seen.append(
            (dbapi.info.transaction_status.name, dbapi.autocommit)))
        assert _echo_query(db).one_or_none(value="a") == (1, "a")
        # nothing left open on the server, and the pool's next user gets a transactional connection
        assert seen == [("IDLE", False)]
        with db.session() as session:
            session.execute(text("SELECT 1"))
            assert session.connection().connection.dbapi_connection.info.transaction_status.name == "INTRANS"
    finally:
        db.dispose()


def test_one_row_query_on_a_dropped_connection_raises_sqlalchemy_errors_then_recovers(db_proxy):
    """What the error handlers turn into 503: SQLAlchemy's OperationalError, never the driver's own;
    the dead connection is not returned to the pool, so the read after the outage succeeds."""
    proxy, url = db_proxy
    db = Database(normalize_url(url, "instance"), pool_size=1, ping_idle_seconds=60.0)  # no ping: the read sees it
    try:
        assert _echo_query(db).one_or_none(value="a") == (1, "a")
        proxy.cut()
        with pytest.raises(exc.OperationalError):  # the pooled connection was reset
            _echo_query(db).one_or_none(value="b")
        with pytest.raises(exc.OperationalError):  # and no new one can be made while it is cut
            _echo_query(db).one_or_none(value="c")
        proxy.restore()
        assert _echo_query(db).one_or_none(value="d") == (1, "d")
    finally:
        db.dispose()
