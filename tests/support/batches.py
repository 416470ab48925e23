"""What the batch-pipeline tests check, read straight from the database and the sandbox's counters."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select

from database import Database, normalize_url
from database.models import BatchJob, BatchLot, BatchResult, OpenAIBatch
from tests.support.client import photo_lots
from tests.support.common import wait_until  # noqa: F401  (the batch tests import it from here)


def distinct_lots(image_server, count: int, prefix: str = "f", photos: int = 2, webhook: str | None = None):
    """Lots whose photo URLs and notes all differ, so each gets its own description from the sandbox."""
    return photo_lots(image_server, count, prefix, photos=range(photos), webhook=webhook)


def open_db(url: str) -> Database:
    return Database(normalize_url(url, "instance"), pool_size=2)


@dataclass(frozen=True)
class Shard:
    kind: str
    shard: int
    attempt: int
    status: str
    openai_status: str | None
    request_count: int
    batch_id: str | None


def shards(db: Database, job_id: str, kind: str | None = None) -> list[Shard]:
    query = select(OpenAIBatch).where(OpenAIBatch.job_id == job_id)
    if kind:
        query = query.where(OpenAIBatch.kind == kind)
    with db.session() as session:
        rows = session.scalars(query.order_by(OpenAIBatch.kind, OpenAIBatch.shard)).all()
    return [Shard(r.kind, r.shard, r.attempt, r.status, r.openai_status, r.request_count, r.batch_id) for r in rows]


def job_row(db: Database, job_id: str) -> BatchJob:
    with db.session() as session:
        return session.get(BatchJob, job_id)


def lot_rows(db: Database, job_id: str) -> list[BatchLot]:
    with db.session() as session:
        return list(session.scalars(select(BatchLot).where(BatchLot.job_id == job_id).order_by(BatchLot.seq)))


def result_counts(db: Database, job_id: str) -> Counter:
    """How many stored descriptions each (lot_id, language) has."""
    with db.session() as session:
        rows = session.execute(select(BatchLot.lot_id, BatchResult.language, func.count())
                               .join(BatchLot, BatchLot.id == BatchResult.lot_pk)
                               .where(BatchResult.job_id == job_id)
                               .group_by(BatchLot.lot_id, BatchResult.language)).all()
    return Counter({(lot_id, language): count for lot_id, language, count in rows})


def assert_one_result_per_language(db: Database, job_id: str, lot_ids, languages) -> None:
    counts = result_counts(db, job_id)
    expected = {(lot_id, language): 1 for lot_id in lot_ids for language in languages}
    assert dict(counts) == expected


def assert_no_batch_created_twice(stats: dict) -> None:
    """Every OpenAI batch the sandbox saw carries its own shard's metadata: none was created twice."""
    repeated = {key: count for key, count in stats["batch_creates_by_metadata"].items() if count != 1}
    assert not repeated, f"batches created more than once: {repeated}"
