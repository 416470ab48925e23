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
import os
import selectors
import threading
from typing import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "genservice_work"
# the listener sleeps on its connection's socket and on a pipe that ``interrupt`` writes to, so it wakes
# for a notification, a broken connection or a stop, and otherwise only this often (it used to look up
# every 0.1 s to see whether it must stop: ten wake-ups a second in every process, for nothing)
IDLE_SECONDS = 30.0
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
    is then looked for at once rather than at the next poll. Whoever sets ``stop`` calls ``interrupt``
    so the thread ends at once rather than at its next look.
    """

    def __init__(self, engine, on_notice: Callable[[], None], stop: threading.Event):
        self.engine = engine
        self.on_notice = on_notice
        self.stop = stop
        self.wakeups = 0  # times the thread woke on its connection (notifications, or a look after IDLE_SECONDS)
        self._wake_read = self._wake_write = -1
        self._pipe_lock = threading.Lock()  # a closed pipe's numbers may be reused: never write to them then

    def start(self) -> threading.Thread:
        """Start the thread; the pipe that wakes it is made here and closed when it ends."""
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        thread = threading.Thread(target=self._run, name="genservice-listen", daemon=True)
        thread.start()
        return thread

    def interrupt(self) -> None:
        """Wake the thread now (it ends if ``stop`` is set)."""
        with self._pipe_lock:
            if self._wake_write < 0:  # not started, or ended
                return
            try:
                os.write(self._wake_write, b"x")
            except BlockingIOError:  # the pipe is full: it is awake already
                pass

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._listen()
                except Exception as exc:  # the database restarted or the connection broke: listen again shortly
                    log.warning("work notifications: %s; listening again in %.0f s", type(exc).__name__,
                                RECONNECT_SECONDS)
                self.stop.wait(RECONNECT_SECONDS)
        finally:
            with self._pipe_lock:
                read, write, self._wake_read, self._wake_write = self._wake_read, self._wake_write, -1, -1
            os.close(read)
            os.close(write)

    def _listen(self) -> None:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.exec_driver_sql(f"LISTEN {CHANNEL}")
            raw = connection.connection.driver_connection
            self.on_notice()
            with selectors.DefaultSelector() as selector:
                selector.register(raw.fileno(), selectors.EVENT_READ, "database")
                selector.register(self._wake_read, selectors.EVENT_READ, "interrupt")
                while not self.stop.is_set():
                    ready = {key.data for key, _ in selector.select(IDLE_SECONDS)}
                    if "interrupt" in ready:
                        os.read(self._wake_read, 64)
                        continue
                    self.wakeups += 1
                    # what arrived, without waiting; a broken connection raises here
                    for _ in raw.notifies(timeout=0):
                        self.on_notice()
        finally:
            # never back to the pool: a pooled connection that still listens would gather notifications
            connection.invalidate()
            connection.close()
