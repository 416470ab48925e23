"""Work notifications between processes (database/notify.py): heard at once, silent while idle, stopped at once."""
from __future__ import annotations

import threading
import time

from sqlalchemy import text

from database import Database
from database.notify import CHANNEL, Listener
from database.session import normalize_url
from tests.support.common import wait_until


def test_the_listener_hears_a_notice_sleeps_while_idle_and_stops_at_once(pg_database_url):
    db = Database(normalize_url(pg_database_url, "instance"))
    heard: list[float] = []
    stop = threading.Event()
    listener = Listener(db.engine, lambda: heard.append(time.monotonic()), stop)
    thread = listener.start()
    try:
        wait_until(lambda: len(heard) == 1, 10, "the call after connecting")
        time.sleep(1.0)
        # idle: it looked at its connection not once (it used to every 0.1 s)
        assert (listener.wakeups, len(heard)) == (0, 1)
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            connection.commit()
        wait_until(lambda: len(heard) == 2, 5, "the notice")
        assert listener.wakeups == 1
        started = time.monotonic()
        stop.set()
        listener.interrupt()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 1.0
    finally:
        stop.set()
        listener.interrupt()
        db.dispose()
