"""A stage on the OpenAI Batch API: plan shards, upload, submit, poll, collect — each step recorded.

A shard row is written before anything is paid for and updated after every call, so a
process killed at any point leaves enough behind for the next one to carry on:
- ``building``: lots are assigned; the JSONL is (re)built from them and uploaded;
- ``uploaded``: the file id is known; the batch is looked up by its metadata before one is created;
- ``submitted``: the batch id is known; it is polled until OpenAI ends it;
- ``collected``: its answers are stored (collection only touches lots still waiting, so repeating it is harmless).
"""
from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from database import Database
from database.models import BatchJob, BatchLot, OpenAIBatch
from database.models.openai_batches import SHARD_OPEN
from services.batches import ShardCutter, parse_output_line, request_line
from services.clock import utcnow
from services.errors import UpstreamError
from services.openai_client import REFUSED_CODES, OpenAIGateway, Usage, refusal_reason
from workers import faults
from workers.leases import Lease
from workers.stages import Outcome, Stage

log = logging.getLogger(__name__)

PAGE = 500
TERMINAL = ("completed", "failed", "expired", "cancelled")
# a batch is looked at again after a tenth of its age, at least a second and at most the poll interval:
# one of a few hundred lines can end within seconds, one of 50,000 takes hours, and a batch polled
# every second for its first ten seconds, then less and less often, costs a few dozen retrieves in all
POLL_AGE_SHARE = 0.1
POLL_MIN_SECONDS = 1.0


class ShardManager:
    """Drives one stage of one job through the Batch API.

    Every write goes through ``lease.fence`` (a worker that lost the job writes nothing) and
    everything that costs money is preceded by ``lease.check_active`` (a cancelled or failed job
    creates no more batches). ``add_usage(session, usage)`` records tokens in the transaction that
    stores the answers they paid for.
    """

    def __init__(self, db: Database, ai: OpenAIGateway, stage: Stage, max_requests: int, max_bytes: int,
                 lease: Lease, add_usage: Callable[[Session, Usage], None], crash_after: str | None = None,
                 renewing: Callable[..., Any] = lambda fn, *args: fn(*args), concurrency: int = 1):
        self.db = db
        self.ai = ai
        self.stage = stage
        self.job = stage.job
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.lease = lease
        self.add_usage = add_usage
        self.crash_after = crash_after
        self.renewing = renewing
        # set once this manager planned, uploaded, submitted or collected anything (work for this process's CPU)
        self.worked = False
        # SQLite has one writer: shards side by side would only queue for it (and time out waiting)
        self.concurrency = 1 if db.engine.dialect.name == "sqlite" else max(1, concurrency)
        stage.batch_api = True

    def _crash_point(self, step: str) -> None:
        faults.crash_point(self.crash_after, f"{self.stage.kind}_{step}")

    # ---- queries ------------------------------------------------------------------------------
    def _pages(self, condition):
        """Waiting lots matching ``condition``, in request order, a page at a time."""
        last = -1
        while True:
            with self.db.session() as session:
                lots = session.execute(self.stage.lots_query().where(condition, BatchLot.seq > last)
                                       .order_by(BatchLot.seq).limit(PAGE)).all()
            if not lots:
                return
            last = lots[-1].seq
            yield lots
            self.lease.renew()

    def open_shards(self) -> list[OpenAIBatch]:
        with self.db.session() as session:
            return list(session.scalars(select(OpenAIBatch).where(
                OpenAIBatch.job_id == self.job.id, OpenAIBatch.kind == self.stage.kind,
                OpenAIBatch.status.in_(SHARD_OPEN)).order_by(OpenAIBatch.shard)).all())

    def unassigned_waiting(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(BatchLot).where(
                self.stage.waiting(), self.stage.shard_column.is_(None))) or 0

    # ---- steps --------------------------------------------------------------------------------
    def plan(self, full_only: bool = False, planned: Callable[[OpenAIBatch], None] = lambda shard: None,
             unassigned: int | None = None) -> int:
        """Cut the waiting, unassigned lots into shards and assign them; returns shards created.
        ``full_only`` leaves a last shard that is not full unassigned (more lots are still to come);
        ``planned`` is handed each shard once it is recorded, so its upload can start while the next is cut;
        ``unassigned`` is the caller's count of waiting, unassigned lots, if it has one."""
        cutter = ShardCutter(self.max_requests, self.max_bytes)
        created = 0
        first = last = None
        attempt = 0
        # with full shards only, the lots past the last full one are not even read (they would be read,
        # and their requests built, again and again while more lots arrive)
        if full_only and unassigned is None:
            unassigned = self.unassigned_waiting()
        most = unassigned // self.max_requests if full_only else None
        with self.db.session() as session:
            next_shard = session.scalar(select(func.coalesce(func.max(OpenAIBatch.shard), -1)).where(
                OpenAIBatch.job_id == self.job.id, OpenAIBatch.kind == self.stage.kind)) + 1
        for lots in self._pages(self.stage.shard_column.is_(None)):
            if most is not None and created >= most:
                break
            for lot in lots:
                if most is not None and created >= most:
                    break
                size = len(request_line(lot.seq, self.stage.request_body(lot)))
                if not cutter.fits(size):
                    planned(self._assign(next_shard + created, first, last, cutter.count, attempt))
                    created += 1
                    cutter.reset()
                    first = None
                    attempt = 0
                if first is None:
                    first = lot.seq
                last = lot.seq
                attempt = max(attempt, getattr(lot, self.stage.attempts_column.key))
                cutter.add(size)
        if cutter.count and (not full_only or cutter.count >= self.max_requests):
            planned(self._assign(next_shard + created, first, last, cutter.count, attempt))
            created += 1
        return created

    def _assign(self, shard: int, first: int, last: int, count: int, attempt: int) -> OpenAIBatch:
        row = OpenAIBatch(job_id=self.job.id, kind=self.stage.kind, shard=shard, attempt=attempt, status="building",
                          request_count=count)
        with self.db.transaction() as session:
            self.lease.fence(session)
            session.add(row)
            session.execute(update(BatchLot).where(self.stage.waiting(), self.stage.shard_column.is_(None),
                                                   BatchLot.seq.between(first, last))
                            .values({self.stage.shard_column.key: shard})
                            .execution_options(synchronize_session=False))
        log.info("job %s: %s shard %d planned with %d requests", self.job.id, self.stage.kind, shard, count)
        self.worked = True
        self._crash_point("planned")  # a shard is recorded and nothing of it uploaded yet
        return row

    def upload(self, shard: OpenAIBatch) -> None:
        fd, path = tempfile.mkstemp(prefix=f"genservice-{self.stage.kind}-", suffix=".jsonl")
        count = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for lots in self._pages(self.stage.shard_column == shard.shard):
                    for lot in lots:
                        out.write(request_line(lot.seq, self.stage.request_body(lot)))
                        count += 1
            if count == 0:
                self._set(shard, status="collected")
                return
            self.lease.check_active()
            # a shard file can be 190 MB: keep the lease while it goes up, or another worker uploads it again
            file_id = self.renewing(self.ai.upload_batch_file, path,
                                    f"{self.job.id}-{self.stage.kind}-{shard.shard}.jsonl")
        finally:
            os.unlink(path)
        self._crash_point("uploaded")
        self._set(shard, status="uploaded", input_file_id=file_id, request_count=count)

    def submit(self, shard: OpenAIBatch) -> None:
        """Find the batch this shard already created (a crash after creating it), or create it."""
        batch = self._find(shard)
        if batch is None:
            self.lease.check_active()
            batch = self.ai.create_batch(shard.input_file_id, shard.metadata_tags)
            self._crash_point("batch_created")
        else:
            log.warning("job %s: found %s shard %d batch %s again by its metadata", self.job.id,
                        self.stage.kind, shard.shard, batch.id)
        column = BatchJob.openai_vision_batch_id if self.stage.kind == "vision" else BatchJob.openai_translation_batch_id
        # the shard and the job learn the batch id together, so the status endpoint can never miss it
        with self.db.transaction() as session:
            self.lease.fence(session)
            self._update_shard(session, shard, status="submitted", batch_id=batch.id, openai_status=batch.status)
            session.execute(update(BatchJob).where(BatchJob.id == self.job.id, column.is_(None))
                            .values({column.key: batch.id}))

    def _find(self, shard: OpenAIBatch):
        created_after = int((shard.created_at - timedelta(minutes=5)).timestamp())
        return self.ai.find_batch(shard.metadata_tags, created_after=created_after)

    def poll(self, shard: OpenAIBatch) -> None:
        batch = self.ai.retrieve_batch(shard.batch_id)
        counts = batch.request_counts
        self._set(shard, openai_status=batch.status, completed_count=counts.completed if counts else 0,
                  failed_count=counts.failed if counts else 0)
        if batch.status in TERMINAL:
            self.collect(shard, batch)

    def collect(self, shard: OpenAIBatch, batch) -> None:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                self._collect_file(shard, file_id)
        reason, refused = self._unanswered_reason(batch)
        if refused:
            self.stage.refused = self.stage.refused or reason
        for lots in self._pages(self.stage.shard_column == shard.shard):
            with self.db.transaction() as session:
                self.lease.fence(session)
                for lot in lots:
                    self.stage.fail_or_retry(session, lot, reason, refused=refused)
        self._set(shard, status="collected", output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
                  error_message=None if batch.status == "completed" else reason)
        log.info("job %s: %s shard %d collected (%s)", self.job.id, self.stage.kind, shard.shard, batch.status)

    def _collect_file(self, shard: OpenAIBatch, file_id: str) -> None:
        page: list[Outcome] = []
        for raw in self.ai.iter_file_lines(file_id):
            line = parse_output_line(raw)
            if line.seq is None:
                continue
            if line.code in REFUSED_CODES:
                reason = refusal_reason(self.stage.kind, self.ai.models.model_for(self.stage.kind), line.code,
                                        line.param, line.error or "")
                page.append(Outcome(line.seq, error=reason, refused=True))
            else:
                page.append(Outcome(line.seq, body=line.body, error=line.error))
            if len(page) >= PAGE:
                self._apply(page, shard.shard)
                page = []
        if page:
            self._apply(page, shard.shard)

    def _apply(self, outcomes: list[Outcome], shard: int) -> None:
        with self.db.transaction() as session:
            self.lease.fence(session)
            self.add_usage(session, self.stage.apply(session, outcomes, shard))
        self._crash_point("lines_applied")

    def _unanswered_reason(self, batch) -> tuple[str, bool]:
        """Why the lots still waiting got no answer, and whether OpenAI refused them as configured
        (a batch failed at validation for its model or parameters: resubmitting would fail again)."""
        if batch.status == "expired":
            return "the OpenAI batch expired before this request ran", False
        if batch.status == "failed":
            errors = getattr(batch, "errors", None)
            data = getattr(errors, "data", None) or []
            first = data[0] if data else None
            message = getattr(first, "message", None) or "no reason given"
            code = getattr(first, "code", None)
            if code in REFUSED_CODES:
                model = self.ai.models.model_for(self.stage.kind)
                return refusal_reason(self.stage.kind, model, code, getattr(first, "param", None), message), True
            return f"the OpenAI batch failed: {message}", False
        if batch.status == "cancelled":
            return "the OpenAI batch was cancelled", False
        return "the OpenAI batch returned no answer for this request", False

    def cancel_open(self) -> None:
        """Cancel the OpenAI batch of every open shard, including one created but not recorded before a crash."""
        for shard in self.open_shards():
            batch_id = shard.batch_id
            if batch_id is None and shard.status == "uploaded":
                found = self._find(shard)
                batch_id = found.id if found is not None else None
            if batch_id:
                try:
                    self.ai.cancel_batch(batch_id)
                except UpstreamError as exc:
                    log.warning("job %s: could not cancel batch %s: %s", self.job.id, batch_id, exc.message)
            self._set(shard, status="cancelled", batch_id=batch_id)

    def _set(self, shard: OpenAIBatch, **values) -> None:
        with self.db.transaction() as session:
            self.lease.fence(session)
            self._update_shard(session, shard, **values)

    @staticmethod
    def _update_shard(session: Session, shard: OpenAIBatch, **values) -> None:
        session.execute(update(OpenAIBatch).where(OpenAIBatch.id == shard.id).values(**values))
        for key, value in values.items():
            setattr(shard, key, value)

    # ---- one pass -----------------------------------------------------------------------------
    def advance(self, early: bool = False) -> str:
        """Move every shard of this stage one step: ``again`` (more to do now), ``wait`` (OpenAI is working)
        or ``done`` (``refused`` when OpenAI refused the requests as configured).

        ``early``: the stage before is still running, so only full shards are cut from the lots ready so
        far; the rest wait for more lots (or for this stage's own turn)."""
        unassigned = self.unassigned_waiting()
        wanted = unassigned >= self.max_requests if early else unassigned > 0
        if self.concurrency > 1:
            # each shard's step on a thread of its own, a shard's as soon as it is planned: while OpenAI
            # (or the database) works for one, this process cuts, builds or reads another; a failure in
            # one is raised once all of them have returned
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.stage.kind}-shard") \
                    as pool:
                futures = {}

                def start(shard: OpenAIBatch) -> None:
                    futures[shard.id] = pool.submit(self._step, shard)

                if wanted:
                    self.plan(full_only=early, planned=start, unassigned=unassigned)
                for shard in self.open_shards():
                    if shard.id not in futures:
                        start(shard)
                for future in list(futures.values()):
                    future.result()
        else:
            if wanted:
                self.plan(full_only=early, unassigned=unassigned)
            for shard in self.open_shards():
                self._step(shard)
                if self.stage.refused:
                    break
        if self.stage.refused:
            return "refused"
        if self.unassigned_waiting():
            return "again"
        return "wait" if self.open_shards() else "done"

    def _step(self, shard: OpenAIBatch) -> None:
        """Move one shard as far as it goes now: build and upload, submit, poll (and collect)."""
        if self.stage.refused:
            return
        if shard.status == "building":
            self.upload(shard)
            self.worked = True
        if shard.status == "uploaded":
            self.submit(shard)
            self.worked = True
        if shard.status == "submitted":
            self.poll(shard)
            self.worked = self.worked or shard.status != "submitted"
        self.lease.renew()

    def poll_delay(self, longest: float) -> float:
        """Seconds until the open shards should be looked at again: a tenth of the youngest one's age,
        within [POLL_MIN_SECONDS, longest] (``longest`` is WORKER_POLL_INTERVAL)."""
        now = utcnow()
        ages = [(now - shard.created_at).total_seconds() for shard in self.open_shards()]
        if not ages:
            return longest
        return max(min(POLL_MIN_SECONDS, longest), min(longest, min(ages) * POLL_AGE_SHARE))
