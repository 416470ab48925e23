"""A stage through direct Responses calls: bounded concurrency, backoff on 429, same storage as batches.

For small jobs (minutes instead of hours) and for OpenAI-compatible servers without a Batch API.
"""
from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from database import Database
from database.models import BatchLot
from services.errors import UpstreamError
from services.openai_client import OpenAIGateway, Usage
from workers.leases import Lease, LeaseLost
from workers.stages import Outcome, Stage


class DirectRunner:
    def __init__(self, db: Database, ai: OpenAIGateway, stage: Stage, pool: ThreadPoolExecutor, concurrency: int,
                 lease: Lease, add_usage: Callable[[Session, Usage], None]):
        self.db = db
        self.ai = ai
        self.stage = stage
        self.pool = pool
        self.concurrency = concurrency
        self.lease = lease
        self.add_usage = add_usage

    def _call(self, lot: BatchLot) -> Outcome | UpstreamError:
        try:
            return Outcome(lot.seq, body=self.ai.call(self.stage.kind, self.stage.request_body(lot)))
        except UpstreamError as exc:
            if exc.rate_limited:
                return exc
            return Outcome(lot.seq, error=(exc.details or {}).get("openai_error") or exc.message,
                           refused=exc.refused)

    def _answers(self, lots: list[BatchLot]) -> list[Outcome | UpstreamError]:
        """Call the model for each lot, renewing the lease while the calls run.

        A page of slow calls can outlast the lease; without renewing, another worker would take
        the job over and pay for the same lots again. Each renewal also checks that the job is
        still wanted: once it is cancelled or failed, the calls not yet started are dropped.
        """
        self.lease.check_active()
        futures: list[Future] = [self.pool.submit(self._call, lot) for lot in lots]
        try:
            while True:
                done, pending = wait(futures, timeout=self.lease.seconds / 4, return_when=FIRST_EXCEPTION)
                if not pending or any(f.exception() is not None for f in done):
                    break
                self.lease.check_active()
        except LeaseLost:
            for future in futures:  # calls not started yet would be paid for nothing
                future.cancel()
            raise
        return [future.result() for future in futures]

    def advance(self) -> str:
        """Run one page of waiting lots; ``again``, ``backoff`` (rate limited) or ``done``."""
        with self.db.session() as session:
            lots = session.scalars(select(BatchLot).where(self.stage.waiting()).order_by(BatchLot.seq)
                                   .limit(self.concurrency * 2)).all()
        if not lots:
            return "done"
        if not self.stage.needs_api:
            outcomes = [Outcome(lot.seq, body={}) for lot in lots]
            limited = []
        else:
            answers = self._answers(lots)
            outcomes = [a for a in answers if isinstance(a, Outcome)]
            limited = [a for a in answers if not isinstance(a, Outcome)]
        if outcomes:
            with self.db.transaction() as session:
                self.lease.fence(session)
                self.add_usage(session, self.stage.apply(session, outcomes, None))
        if self.stage.refused:
            return "refused"
        return "backoff" if limited else "again"
