"""Wake-ups between processes: a transaction announces new work and every listening process hears of
it when the transaction commits (PostgreSQL's LISTEN/NOTIFY, on every instance of one database).

Without it an idle process finds work made elsewhere only at its next poll (WORKER_POLL_INTERVAL,
30 s), so a job's photo stage, which every process is meant to share, ran for up to that long on
its owner alone. A notification carries nothing: it only says "look now", and the work itself is
still claimed through the database, so one that is lost (the listener reconnecting) costs at most
one poll interval. SQLite has no such channel; there processes keep to their polls.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "genservice_work"
WAIT_SECONDS = 0.1  # how often the listener looks up from its connection to see whether it must stop (a
# process closing waits for it: at 1 s, every shutdown, and every test app, took 0.7 s longer)
RECONNECT_SECONDS = 2.0


def supported(engine) -> bool:
    return engine.dialect.name == "postgresql"


def announce(session: Session) -> None:
    """Wake every listening process once this session's transaction commits (nothing on SQLite)."""
    if supported(session.get_bind()):
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class Listener:
    """A daemon thread holding one connection that LISTENs, calling ``on_notice`` for each notification.

    ``on_notice`` is also called after every (re)connection: what was announced while nobody listened
    is then looked for at once rather than at the next poll.
    """

    def __init__(self, engine, on_notice: Callable[[], None], stop: threading.Event):
        self.engine = engine
        self.on_notice = on_notice
        self.stop = stop

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="genservice-listen", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # the database restarted or the connection broke: listen again shortly
                log.warning("work notifications: %s; listening again in %.0f s", type(exc).__name__, RECONNECT_SECONDS)
            self.stop.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.exec_driver_sql(f"LISTEN {CHANNEL}")
            raw = connection.connection.driver_connection
            self.on_notice()
            while not self.stop.is_set():
                for _ in raw.notifies(timeout=WAIT_SECONDS):
                    self.on_notice()
        finally:
            # never back to the pool: a pooled connection that still listens would gather notifications
            connection.invalidate()
            connection.close()
