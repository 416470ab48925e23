"""The background worker of one process: a job thread and a webhook thread, both daemons.

Each is woken at once by work created in this process (``wake()``) and, on PostgreSQL, by work
other processes announce (a new job, a photo stage to share: database/notify.py), otherwise when
the next piece of recorded work falls due, and at the latest every WORKER_POLL_INTERVAL seconds,
which is how work created by other processes is found on SQLite or when a notification was lost.
Everything it does is claimed through the database, so any number of processes can run one.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from database import notify
from database.models import BatchJob, WorkerHeartbeat
from services import lifecycle
from services.clock import utcnow
from workers.dispatcher import WebhookDispatcher
from workers.jobs import JobRunner
from workers.leases import lease_free
from workers.watchdog import Watchdog

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
PHOTO_HELP_SECONDS = 1.0


class Worker:
    def __init__(self, runtime):
        self.rt = runtime
        self.settings = runtime.settings
        self.pid = os.getpid()
        self.owner = runtime.instance_id
        self._stop = threading.Event()
        self._job_wake = threading.Event()
        self._hook_wake = threading.Event()
        self.jobs = JobRunner(runtime, self.owner)
        self.webhooks = WebhookDispatcher(runtime, self.owner, on_free_slot=self._hook_wake.set)
        self.watchdog = Watchdog(runtime, self.jobs)
        self._threads: list[threading.Thread] = []
        self._listener: notify.Listener | None = None
        self.last_beat: float | None = None
        self._last_db_beat = 0.0
        self.started_at = utcnow()

    # ---- control -----------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (("genservice-jobs", self._job_loop), ("genservice-webhooks", self._webhook_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if notify.supported(self.rt.db.engine):
            # work announced by other processes (a new job, a photo stage to share) wakes the job loop at once
            self._listener = notify.Listener(self.rt.db.engine, self._job_wake.set, self._stop)
            self._threads.append(self._listener.start())
        log.info("Background worker started (%s)", self.owner)

    def wake(self) -> None:
        self._job_wake.set()
        self._hook_wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        if self._listener is not None:
            self._listener.interrupt()
        for thread in self._threads:
            thread.join(timeout)
        self.jobs.close()
        self.webhooks.close()
        try:
            with self.rt.db.transaction() as session:
                session.execute(WorkerHeartbeat.__table__.delete().where(WorkerHeartbeat.worker_id == self.owner))
        except Exception:
            log.info("could not remove heartbeat of %s", self.owner)
        log.info("Background worker stopped (%s)", self.owner)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads) and not self._stop.is_set()

    # ---- loops -------------------------------------------------------------------------------
    def _job_loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                self._beat()
                for job_id in self.jobs.claim(limit=1):
                    busy = True
                    self.jobs.run(job_id, self._stop)
                if not busy:
                    # a job another process holds may still have photos to check: take a page of them
                    busy = self.jobs.help_with_photos()
                self.watchdog.maybe_run()
            except Exception:
                log.exception("Background worker: job loop iteration failed")
                self._stop.wait(1.0)
            if not busy:
                self._sleep(self._job_wake, self._due_or_none(self._next_job_due))

    def _webhook_loop(self) -> None:
        while not self._stop.is_set():
            started = 0
            try:
                self._beat()
                started = self.webhooks.dispatch_due()
            except Exception:
                log.exception("Background worker: webhook loop iteration failed")
                self._stop.wait(1.0)
            if not started:
                self._sleep(self._hook_wake, None if self.webhooks.busy >= self.webhooks.size
                            else self._due_or_none(self.webhooks.next_due))

    @staticmethod
    def _due_or_none(next_due):
        """When work next falls due; None (sleep one poll interval) if the database cannot say.

        It is asked outside the loops' error handling, and an exception there would end the
        thread for good: one database restart would stop this process's worker forever.
        """
        try:
            return next_due()
        except Exception:
            log.exception("Background worker: could not read when work is next due")
            return None

    def _sleep(self, event: threading.Event, next_due) -> None:
        timeout = self.settings.worker_poll_interval
        if next_due is not None:
            timeout = max(0.05, min(timeout, (next_due - utcnow()).total_seconds()))
        event.wait(timeout)
        event.clear()

    def _next_job_due(self):
        """When a free job falls due; while any job checks photos, within a second, so idle
        processes join in with its pages soon after it starts."""
        now = utcnow()
        with self.rt.db.session() as session:
            due = session.scalar(select(func.min(BatchJob.next_run_at)).where(
                lifecycle.wants_worker(), lease_free(BatchJob, now)))
            photos = self.settings.batch_validate_images and session.scalar(
                select(BatchJob.id).where(lifecycle.checking_photos()).limit(1))
        if photos:
            soon = now + timedelta(seconds=PHOTO_HELP_SECONDS)
            due = soon if due is None else min(due, soon)
        return due

    def _beat(self) -> None:
        now = time.monotonic()
        self.last_beat = time.time()
        self.rt.metrics.worker_beat.set(self.last_beat)
        if now - self._last_db_beat < HEARTBEAT_SECONDS:
            return
        self._last_db_beat = now
        with self.rt.db.transaction() as session:
            updated = session.execute(update(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == self.owner)
                                      .values(last_beat_at=utcnow())).rowcount
            if not updated:
                session.add(WorkerHeartbeat(worker_id=self.owner, hostname=socket.gethostname()[:255],
                                            pid=self.pid, started_at=self.started_at, last_beat_at=utcnow()))
