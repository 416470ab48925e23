"""A job's lots on their way into ``batch_lots``: pages of compact JSON when the job is accepted, rows
once a worker takes the job up.

Writing 50,000 rows into ``batch_lots`` (four B-tree indexes, a foreign key per row, JSONB input) cost
PostgreSQL about as much CPU as the rest of the accept together. A page of ``PAGE_LOTS`` lots is one
short row instead (its text compressed with lz4 where the server has it), so the request stores its
lots in a few inserts and answers 201 with them durable. The rows are written by ``expand``, in the
transaction that starts the job or ends it (whichever comes first): one INSERT ... SELECT that the
database itself expands from the stored JSON, so no process holds the lots in memory again, and a
crash part-way rolls the whole expansion back, to be done again.

A page's text is a JSON array with one object per lot, in request order:
``{"lot_id": ..., "additional_info": ..., "image_urls": [...], "webhook": url or null}``, written by
orjson straight from the validated lot records (dataclasses), so storing 50,000 lots creates no Python
object per lot: with the parsed request in memory, every allocation risks a pass of the cyclic
collector over its million objects.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from database.models import BatchLotPage

PAGE_LOTS = 1000
PAGES_PER_INSERT = 8  # so the request holds a few pages of text at a time, not all of them

_COLUMNS = ("job_id, seq, lot_id, additional_info, image_urls, webhook_url, status, processed_images, "
            "vision_attempts, translation_attempts")

# the pages are deleted as they are read (DELETE ... RETURNING), so two processes expanding the same job
# at once cannot both write its lots: the second waits for the first's row locks and then finds none
_EXPAND_POSTGRESQL = f"""
WITH pages AS (DELETE FROM batch_lot_pages WHERE job_id = :job_id RETURNING job_id, first_seq, lots)
INSERT INTO batch_lots ({_COLUMNS})
SELECT pages.job_id, pages.first_seq + lot.n - 1, lot.value ->> 'lot_id', lot.value ->> 'additional_info',
       lot.value -> 'image_urls', lot.value ->> 'webhook', 'pending', 0, 0, 0
FROM pages CROSS JOIN LATERAL jsonb_array_elements(pages.lots::jsonb) WITH ORDINALITY AS lot(value, n)
ORDER BY pages.first_seq, lot.n
"""

# SQLite has one writer at a time, so the read and the delete cannot interleave with another expansion
_EXPAND_SQLITE = f"""
INSERT INTO batch_lots ({_COLUMNS})
SELECT pages.job_id, pages.first_seq + lot.key, json_extract(lot.value, '$.lot_id'),
       json_extract(lot.value, '$.additional_info'), json_extract(lot.value, '$.image_urls'),
       json_extract(lot.value, '$.webhook'), 'pending', 0, 0, 0
FROM batch_lot_pages AS pages, json_each(pages.lots) AS lot
WHERE pages.job_id = :job_id
ORDER BY pages.first_seq, lot.key
"""


def page_texts(lots: Sequence[Any]) -> Iterable[tuple[int, str]]:
    """(first seq, JSON text) of each page of ``lots``: dataclass records with the fields lot_id,
    additional_info, image_urls and webhook (services.lots.LotInput)."""
    for first in range(0, len(lots), PAGE_LOTS):
        yield first, orjson.dumps(lots[first:first + PAGE_LOTS]).decode()


def store(session: Session, job_id: str, lots: Sequence[Any]) -> None:
    """Keep a new job's lots (validated records, in request order) as pages, in the caller's transaction."""
    pages: list[dict[str, Any]] = []
    for first, page in page_texts(lots):
        pages.append({"job_id": job_id, "first_seq": first, "lots": page})
        if len(pages) == PAGES_PER_INSERT:
            session.execute(insert(BatchLotPage), pages)
            pages = []
    if pages:
        session.execute(insert(BatchLotPage), pages)


def expand(connection: Connection | Session, job_id: str) -> int:
    """Write the job's stored pages into ``batch_lots`` and drop them, in the caller's transaction; the
    number of lots written (0 when they were written before, or the job never had pages)."""
    dialect = connection.get_bind().dialect if isinstance(connection, Session) else connection.dialect
    if dialect.name == "postgresql":
        return connection.execute(text(_EXPAND_POSTGRESQL), {"job_id": job_id}).rowcount
    written = connection.execute(text(_EXPAND_SQLITE), {"job_id": job_id}).rowcount
    connection.execute(text("DELETE FROM batch_lot_pages WHERE job_id = :job_id"), {"job_id": job_id})
    return written


def pending_jobs(connection: Connection | Session) -> list[str]:
    """Jobs whose lots are still pages."""
    return list(connection.execute(text("SELECT DISTINCT job_id FROM batch_lot_pages")).scalars())


def expand_all(connection: Connection | Session) -> int:
    """Every job's pages written out (the migration that drops the pages runs this first)."""
    return sum(expand(connection, job_id) for job_id in pending_jobs(connection))


def has_pages(session: Session, job_id: str) -> bool:
    return session.execute(text("SELECT 1 FROM batch_lot_pages WHERE job_id = :job_id LIMIT 1"),
                           {"job_id": job_id}).first() is not None


def read(session: Session, job_id: str, offset: int, limit: int) -> list[tuple[int, dict]]:
    """Lots ``offset`` .. ``offset + limit - 1`` (in request order) of a job whose lots are still pages,
    as (seq, the lot's fields as stored); only the pages that hold them are decoded."""
    last = offset + limit - 1
    found: list[tuple[int, dict]] = []
    pages = session.execute(text("SELECT first_seq, lots FROM batch_lot_pages WHERE job_id = :job_id "
                                 "AND first_seq <= :last ORDER BY first_seq DESC"), {"job_id": job_id, "last": last})
    for first_seq, page in pages:
        lots = orjson.loads(page)
        found[:0] = [(first_seq + index, lot) for index, lot in enumerate(lots)
                     if offset <= first_seq + index <= last]
        if first_seq <= offset:
            break
    return found
