"""Housekeeping: fail jobs past their deadline, purge old records (jobs past their retention, expired
idempotency keys and signature nonces), forget dead workers' heartbeats."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import delete, select

from database.models import BatchJob, WorkerHeartbeat
from services import clients, idempotency
from services.clock import utcnow
from services.lifecycle import ACTIVE, FINAL, JobStatus

log = logging.getLogger(__name__)

PURGE_JOBS_PER_TRANSACTION = 20


class Watchdog:
    def __init__(self, runtime, job_runner, interval: float = 60.0):
        self.rt = runtime
        self.db = runtime.db
        self.settings = runtime.settings
        self.jobs = job_runner
        self.interval = min(interval, max(1.0, self.settings.worker_poll_interval))
        self._last = 0.0

    def maybe_run(self) -> None:
        if time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        self.fail_overdue()
        self.purge_expired()
        self.purge_request_records()
        self.forget_dead_workers()

    def fail_overdue(self) -> int:
        now = utcnow()
        with self.db.session() as session:
            overdue = session.scalars(select(BatchJob).where(BatchJob.status.in_(ACTIVE),
                                                             BatchJob.deadline_at < now).limit(100)).all()
        for job in overdue:
            hours = self.settings.job_deadline_hours + self.settings.job_deadline_margin_hours
            self.jobs.finish(job, JobStatus.FAILED, f"Job did not finish within its deadline of {hours:g} hours")
            log.warning("job %s failed by the watchdog: deadline passed", job.id)
        return len(overdue)

    def purge_expired(self) -> int:
        """Delete ended jobs older than the retention period (lots, results and deliveries go with them)."""
        if self.settings.result_retention_days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=self.settings.result_retention_days)
        purged = 0
        while True:
            with self.db.transaction() as session:
                ids = session.scalars(select(BatchJob.id).where(BatchJob.status.in_(FINAL),
                                                                BatchJob.created_at < cutoff)
                                      .limit(PURGE_JOBS_PER_TRANSACTION)).all()
                if ids:
                    session.execute(delete(BatchJob).where(BatchJob.id.in_(ids)))
            if not ids:
                return purged
            purged += len(ids)
            log.info("purged %d jobs older than %d days", len(ids), self.settings.result_retention_days)

    def purge_request_records(self) -> int:
        """Forget idempotency keys past IDEMPOTENCY_TTL_HOURS and GS2 nonces past their clock window."""
        now = utcnow()
        keys = idempotency.prune(self.db, now)
        nonces = clients.prune(self.db, now)
        if keys or nonces:
            log.info("forgot %d expired idempotency keys and %d signature nonces", keys, nonces)
        return keys + nonces

    def forget_dead_workers(self) -> None:
        cutoff = utcnow() - timedelta(seconds=max(300, 10 * self.settings.worker_poll_interval))
        with self.db.transaction() as session:
            session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_beat_at < cutoff))
