"""A stage through direct Responses calls: bounded concurrency, backoff on 429, same storage as batches.

For small jobs (minutes instead of hours) and for OpenAI-compatible servers without a Batch API.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sqlalchemy import select

from database import Database
from database.models import BatchLot
from services.errors import UpstreamError
from services.openai_client import OpenAIGateway, Usage
from workers.stages import Outcome, Stage


class DirectRunner:
    def __init__(self, db: Database, ai: OpenAIGateway, stage: Stage, pool: ThreadPoolExecutor, concurrency: int,
                 add_usage: Callable[[Usage], None]):
        self.db = db
        self.ai = ai
        self.stage = stage
        self.pool = pool
        self.concurrency = concurrency
        self.add_usage = add_usage

    def _call(self, lot: BatchLot) -> Outcome | UpstreamError:
        try:
            return Outcome(lot.seq, body=self.ai.call(self.stage.kind, self.stage.request_body(lot)))
        except UpstreamError as exc:
            if exc.rate_limited:
                return exc
            return Outcome(lot.seq, error=(exc.details or {}).get("openai_error") or exc.message)

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
            answers = list(self.pool.map(self._call, lots))
            outcomes = [a for a in answers if isinstance(a, Outcome)]
            limited = [a for a in answers if not isinstance(a, Outcome)]
        if outcomes:
            with self.db.transaction() as session:
                usage = self.stage.apply(session, outcomes, None)
            self.add_usage(usage)
        return "backoff" if limited else "again"
