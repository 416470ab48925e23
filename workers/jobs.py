"""Runs the job state machine (statuses, stages and transitions are in services.lifecycle).

Each call of a stage does a bounded piece of work and records it; the runner keeps calling stages
while the job has work it can do now, and hands the job back with ``next_run_at`` when it must wait.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select, update

from database.models import BatchJob, BatchLot, OpenAIBatch
from database.models.openai_batches import SHARD_OPEN
from services import costs, lifecycle, webhooks, workforce
from services.clock import utcnow
from services.images import required_images
from services.lifecycle import ACTIVE, JobStatus
from services.lifecycle import Stage as JobStage
from services.openai_client import Usage
from workers import faults, leases
from workers.direct import DirectRunner
from workers.leases import LeaseLost
from workers.shards import ShardManager
from workers.stages import Stage, TranslationStage, VisionStage

log = logging.getLogger(__name__)

IMAGE_PAGE = 1000  # lots per photo-check call: enough URLs to keep the checker's slots busy
PHOTO_WAIT_SECONDS = 0.5  # how soon a job's owner looks again while other processes check its last pages
BACKOFF_SECONDS = 5.0
TIME_SLICE_SECONDS = 20.0


class JobRunner:
    def __init__(self, runtime, owner: str):
        self.rt = runtime
        self.db = runtime.db
        self.settings = runtime.settings
        self.owner = owner
        self.pool = ThreadPoolExecutor(max_workers=self.settings.direct_concurrency, thread_name_prefix="direct")
        # long calls (a shard's upload) run here while the caller renews the job's lease: one per shard side by side
        self._io = ThreadPoolExecutor(max_workers=self.settings.batch_shard_concurrency, thread_name_prefix="job-io")
        self.lease: leases.Lease | None = None
        self.time_slice = TIME_SLICE_SECONDS
        faults.check(self.settings.crash_after)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)

    # ---- claiming ----------------------------------------------------------------------------
    def claim(self, limit: int = 1) -> list[str]:
        with self.db.session() as session:
            return leases.claim(session, BatchJob, lifecycle.due(utcnow()), BatchJob.next_run_at, limit,
                                self.owner, self.settings.worker_lease_seconds)

    def hold(self, job_id: str) -> leases.Lease:
        """The lease of a job this runner just claimed; paid work needs the job still active."""
        self.lease = leases.Lease(self.db, BatchJob, job_id, self.owner, self.settings.worker_lease_seconds,
                                  active=BatchJob.status.in_(ACTIVE))
        return self.lease

    def heartbeat(self, job_id: str) -> None:
        self.lease.renew()

    def _renewing(self, fn, *args):
        """Run ``fn`` on the side and renew the lease until it returns (``fn`` must bound its own time)."""
        return self._while(fn, args, self.lease.renew, self.lease.seconds / 4)

    def _while(self, fn, args, renew, every: float):
        """Run ``fn(*args)`` on the side, calling ``renew()`` every ``every`` seconds until it returns."""
        future = self._io.submit(fn, *args)
        while True:
            try:
                return future.result(timeout=every)
            except TimeoutError:
                renew()

    # ---- running -----------------------------------------------------------------------------
    def run(self, job_id: str, stop: threading.Event | None = None) -> None:
        """Advance one claimed job as far as it can go now (within a time slice), then hand it back."""
        self.hold(job_id)
        started = time.monotonic()
        delay = 0.0
        try:
            while (stop is None or not stop.is_set()) and time.monotonic() - started < self.time_slice:
                with self.db.session() as session:
                    job = session.get(BatchJob, job_id)
                if job is None or job.lease_owner != self.owner:
                    return
                if not lifecycle.needs_worker(job):
                    break
                delay = self.step(job)
                if delay is not None:
                    break
                self.heartbeat(job_id)
        except LeaseLost:
            # either another worker holds the job (then the release below changes nothing), or the job
            # was cancelled or failed under us: hand it back at once so its batches are cancelled now
            log.warning("job %s: lease lost or job ended; handing it back", job_id)
        except Exception:
            log.exception("job %s: step failed; retrying later", job_id)
            delay = max(self.settings.worker_poll_interval, BACKOFF_SECONDS)
        with self.db.session() as session:
            leases.release(session, BatchJob, [job_id], self.owner,
                           next_run_at=utcnow() + timedelta(seconds=delay or 0))

    def step(self, job: BatchJob) -> float | None:
        """Run the job's current stage once; None to go on at once, else seconds to wait."""
        handler = getattr(self, f"stage_{job.stage}")
        return handler(job)

    def _move(self, transition, job: BatchJob, *args) -> None:
        """Apply a transition to an active job we hold; LeaseLost when a concurrent ending won."""
        with self.db.transaction() as session:
            if not transition(session, job.id, self.owner, *args):
                raise LeaseLost(job.id)

    def _add_usage(self, job: BatchJob):
        """Tokens are added in the transaction that stores the answers, so a crash cannot lose or repeat them."""
        def add(session, usage: Usage) -> None:
            if not usage.empty:
                session.execute(update(BatchJob).where(BatchJob.id == job.id).values(
                    input_tokens=BatchJob.input_tokens + usage.input_tokens,
                    output_tokens=BatchJob.output_tokens + usage.output_tokens,
                    cached_input_tokens=BatchJob.cached_input_tokens + usage.cached_input_tokens,
                    reasoning_tokens=BatchJob.reasoning_tokens + usage.reasoning_tokens,
                    cost_usd=BatchJob.cost_usd + usage.cost_usd))
                costs.record(session, usage.cost_usd, mode="batch", client_id=job.client_id)
        return add

    # ---- stages ------------------------------------------------------------------------------
    def stage_queued(self, job: BatchJob) -> float | None:
        with self.db.transaction() as session:
            if not lifecycle.start(session, job.id, self.owner):
                raise LeaseLost(job.id)
            faults.crash_point(self.settings.crash_after, "lots_expanded")
        self.rt.metrics.jobs.labels(status=JobStatus.PROCESSING).inc()
        return None

    def stage_images(self, job: BatchJob) -> float | None:
        if not self.settings.batch_validate_images:
            # nothing to fetch: every lot is ready with the photos as sent, in one statement
            with self.db.transaction() as session:
                self.lease.fence(session)
                session.execute(update(BatchLot).where(BatchLot.job_id == job.id, BatchLot.status == "pending")
                                .values(status="ready", usable_images=BatchLot.image_urls, missing_images=[])
                                .execution_options(synchronize_session=False))
        else:
            ended, worked = self._paid_stages_ahead(job)
            if ended is not None:
                return ended
            # while other processes check this job's photos, its owner sends the lots already checked to
            # OpenAI rather than check photos too (its threads would only contend with its event loop),
            # and checks a page only when OpenAI had nothing for it to do
            if (not worked or not self._photos_helped(job.id)) and self.check_photo_page(job.id, self.lease):
                self._refresh(job)
                return None
        self._refresh(job)
        with self.db.session() as session:
            helped = session.scalar(select(func.count()).select_from(BatchLot).where(
                BatchLot.job_id == job.id, BatchLot.status == "pending"))
        if helped:
            # the rest are being checked by other processes (leased pages): look again shortly
            return PHOTO_WAIT_SECONDS
        self._move(lifecycle.move, job, JobStage.VISION)
        return None

    def _paid_stages_ahead(self, job: BatchJob) -> tuple[float | None, bool]:
        """While photos are still being checked, send the full vision shards of the lots already checked
        (and the full translation shards of those already described). Returns (0.0 if the job ended
        because OpenAI refused its requests, else None; whether there was any work to do)."""
        if job.strategy == "direct":
            return None, False
        attempts = self.settings.batch_resubmit_attempts + 1
        worked = False
        for stage in (VisionStage(self.rt.ai, job, attempts), TranslationStage(self.rt.ai, job, attempts)):
            if not stage.needs_api:
                continue
            shards = self._shards(job, stage)
            if shards.advance(early=True) == "refused":
                self._fail_refused(job, stage)
                return 0.0, True
            worked = worked or shards.worked
        return None, worked

    def _fail_refused(self, job: BatchJob, stage: Stage) -> None:
        """OpenAI refused ``stage``'s requests as configured: every other lot would be refused (and billed) too."""
        log.error("job %s: %s", job.id, stage.refused)
        self.finish(job, JobStatus.FAILED, stage.refused)

    def _photos_helped(self, job_id: str) -> bool:
        """Whether another process holds a page of this job's photos right now."""
        with self.db.session() as session:
            return session.scalar(select(BatchLot.id).where(
                BatchLot.job_id == job_id, BatchLot.status == "pending", BatchLot.lease_owner != self.owner,
                BatchLot.lease_expires_at > utcnow()).limit(1)) is not None

    def check_photo_page(self, job_id: str, job_lease: leases.Lease | None = None) -> int:
        """Claim a page of the job's unchecked lots, check their photos and record the verdicts.

        The job's owner passes its lease (its writes are fenced by it); any other process may help
        without it: the page is its own through the lots' leases, renewed while the checks run, and
        a verdict is written only for a lot still pending and still leased by this process. Returns
        the number of lots checked, 0 when no free page was left.
        """
        seconds = self.settings.worker_lease_seconds
        with self.db.session() as session:
            ids = leases.claim(session, BatchLot, (BatchLot.job_id == job_id) & (BatchLot.status == "pending"),
                               BatchLot.seq, IMAGE_PAGE, self.owner, seconds)
        if not ids:
            return 0
        with self.db.session() as session:
            # plain rows of the two columns used (ORM objects would hydrate every column of 1,000 lots)
            lots = session.execute(select(BatchLot.id, BatchLot.image_urls).where(BatchLot.id.in_(ids))
                                   .order_by(BatchLot.seq)).all()

        def renew() -> None:
            if job_lease is not None:
                job_lease.renew()
            with self.db.session() as session:
                leases.renew(session, BatchLot, ids, self.owner, seconds)

        checks = self._while(functools.partial(self.rt.images.check_many_lots, host_limit=self._host_share()),
                             ([lot.image_urls for lot in lots],), renew, seconds / 4)
        rows = []
        for lot, check in zip(lots, checks):
            valid, missing = check.valid_urls, check.missing_urls
            row = {"id": lot.id, "usable_images": valid, "missing_images": missing, "status": "ready",
                   **leases.freed()}
            if len(valid) < required_images(len(lot.image_urls), self.settings.image_min_ratio) or not valid:
                row.update(status="failed", processed_at=utcnow(),
                           error_message=f"not enough usable images: {len(valid)} of {len(lot.image_urls)} "
                                         f"reachable (missing: {', '.join(missing[:5])})")
            rows.append(row)
        with self.db.transaction() as session:
            if job_lease is not None:
                job_lease.fence(session)
            session.execute(update(BatchLot).where(BatchLot.status == "pending", BatchLot.lease_owner == self.owner)
                            .execution_options(synchronize_session=None), rows)
        return len(lots)

    def _host_share(self) -> int | None:
        """This process's part of IMAGE_HOST_CONCURRENCY_TOTAL (None: no cap for the whole deployment).

        Shared out among the live worker processes as their heartbeats show, so that however many processes
        and instances check one job's photos, a host has no more than the total in flight from all of them."""
        total = self.settings.image_host_concurrency_total
        if not total:
            return None
        with self.db.session() as session:
            live = workforce.live_workers(session, utcnow(), self.settings.worker_poll_interval)
        return workforce.share(total, live)

    def help_with_photos(self) -> bool:
        """Check a page of photos of a job another process holds, if one is in its photo stage."""
        if not self.settings.batch_validate_images:
            return False
        with self.db.session() as session:
            job_id = session.scalar(
                select(BatchLot.job_id).join(BatchJob, BatchJob.id == BatchLot.job_id)
                .where(lifecycle.checking_photos(), BatchLot.status == "pending",
                       leases.lease_free(BatchLot, utcnow()))
                .limit(1))
        return job_id is not None and self.check_photo_page(job_id) > 0

    def _shards(self, job: BatchJob, stage: Stage) -> ShardManager:
        return ShardManager(self.db, self.rt.ai, stage, self.settings.batch_shard_max_requests,
                            self.settings.batch_shard_max_bytes, self.lease, self._add_usage(job),
                            self.settings.crash_after, self._renewing, self.settings.batch_shard_concurrency)

    def _stage_paid(self, job: BatchJob, stage: Stage, following: Stage | None = None) -> float | None:
        """Advance ``stage``; ``following`` (the next paid stage, on the Batch API) gets its full shards of
        the lots this stage has finished so far, so the two stages overlap rather than take turns."""
        managers: list[ShardManager] = []
        if job.strategy == "direct" or not stage.needs_api:
            state = DirectRunner(self.db, self.rt.ai, stage, self.pool, self.settings.direct_concurrency, self.lease,
                                 self._add_usage(job)).advance()
        else:
            managers.append(self._shards(job, stage))
            state = managers[0].advance()
        if following is not None and state != "refused":
            managers.append(self._shards(job, following))
            if managers[-1].advance(early=True) == "refused":
                stage, state = following, "refused"
        self._refresh(job)
        if state == "refused":
            self._fail_refused(job, stage)
            return 0.0
        if state == "done":
            self._move(lifecycle.move, job, *lifecycle.after(JobStage(job.stage), job.languages))
            return None
        if state == "again":
            return None
        if state == "backoff":
            return BACKOFF_SECONDS
        if managers:
            # OpenAI is working on the shards: look again soon while they are young, then less often
            return min(manager.poll_delay(self.settings.worker_poll_interval) for manager in managers)
        return self.settings.worker_poll_interval

    def stage_vision(self, job: BatchJob) -> float | None:
        attempts = self.settings.batch_resubmit_attempts + 1
        stage = VisionStage(self.rt.ai, job, attempts)
        following = TranslationStage(self.rt.ai, job, attempts)
        overlap = job.strategy != "direct" and following.needs_api
        return self._stage_paid(job, stage, following if overlap else None)

    def stage_translation(self, job: BatchJob) -> float | None:
        stage = TranslationStage(self.rt.ai, job, self.settings.batch_resubmit_attempts + 1)
        return self._stage_paid(job, stage)

    def stage_finalizing(self, job: BatchJob) -> float | None:
        with self.db.session() as session:
            counts = lifecycle.lot_counts(session, job.id)
        self.finish(job, *lifecycle.outcome(counts))
        return 0.0

    def finish(self, job: BatchJob, status: JobStatus, error_message: str | None) -> None:
        """End the job (see lifecycle.end: counters, ledger and webhook deliveries in one transaction);
        nothing happens if it has ended already. Its OpenAI work is then stopped by the cancelling stage."""
        now = utcnow()
        with self.db.transaction() as session:
            if lifecycle.end(session, job.id, status, error_message, webhooks.final_hook(self.settings)) is None:
                return
        self.rt.metrics.jobs.labels(status=status).inc()
        self.rt.metrics.duration.labels(mode="batch").observe((now - job.created_at).total_seconds())
        log.info("job %s %s", job.id, status)

    def stage_cancelling(self, job: BatchJob) -> float | None:
        for stage in (VisionStage(self.rt.ai, job, 1), TranslationStage(self.rt.ai, job, 1)):
            ShardManager(self.db, self.rt.ai, stage, 1, 1, self.lease, lambda session, usage: None).cancel_open()
        with self.db.transaction() as session:
            self.lease.fence(session)
            lifecycle.cancelled_batches_closed(session, job.id)
        return 0.0

    def stage_done(self, job: BatchJob) -> float | None:
        return 0.0

    # ---- counters ----------------------------------------------------------------------------
    def _counters(self, session, job: BatchJob) -> dict:
        """An active job's counters computed from its lots (the status endpoint only ever reads the job row)."""
        counts, images = lifecycle.lot_counts_and_images(session, job.id)
        completed = counts.get("completed", 0)
        described = counts.get("described", 0)
        failed = counts.get("failed", 0)
        values = {"processed_lots": completed + described, "failed_lots": failed, "translated_lots": completed,
                  "images_checked_lots": job.total_lots - counts.get("pending", 0), "updated_at": utcnow()}
        values["total_images_processed"] = images
        inflight = session.scalar(select(func.coalesce(func.sum(OpenAIBatch.completed_count), 0)).where(
            OpenAIBatch.job_id == job.id, OpenAIBatch.kind == "vision", OpenAIBatch.status.in_(SHARD_OPEN))) or 0
        values["processed_lots"] = min(job.total_lots - failed, values["processed_lots"] + int(inflight))
        values["estimated_completion"] = self._estimate(job, values)
        return values

    def _refresh(self, job: BatchJob) -> None:
        """Bring an active job's counters up to date; an ended job keeps the counts it ended with."""
        with self.db.transaction() as session:
            session.execute(update(BatchJob).where(BatchJob.id == job.id, BatchJob.status.in_(ACTIVE))
                            .values(**self._counters(session, job)))

    def _estimate(self, job: BatchJob, values: dict[str, int]):
        """Project the finish from the share of work done so far; keep the first guess until 5% is done."""
        fraction = lifecycle.progress(job.total_lots, values["processed_lots"], values["failed_lots"],
                                      values["translated_lots"], job.languages)
        started = job.started_at or job.created_at
        if fraction < 0.05:
            return job.estimated_completion
        now = utcnow()
        elapsed = (now - started).total_seconds()
        return now + timedelta(seconds=elapsed * (1 - fraction) / fraction)
