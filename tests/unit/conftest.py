"""Unit tests of services/ and workers/: SQLite in a temporary directory, no server, no network.

The objects under test get a runtime built here from what they read of it (a database, a few
settings, metrics); nothing they do is replaced, only the OpenAI calls, which cannot run here.
"""
from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from database import Database
from database.models import Base, BatchJob, BatchLot
from services.clock import utcnow
from services.metrics import Metrics
from services.errors import ServiceError
from services.netguard import OutboundPolicy
from services.openai_client import Usage
from workers.stages import Stage

UNIT_KEY = "unit-test-key-of-at-least-32-characters"
SETTINGS = dict(shared_keys=(UNIT_KEY,), shared_key=UNIT_KEY, webhook_secret=None, webhook_secrets=(),
                reference_signatures=True,
                worker_lease_seconds=30.0, worker_poll_interval=1.0, direct_concurrency=2, batch_shard_concurrency=2,
                crash_after=None,
                webhook_concurrency=8, webhook_timeout=5.0, webhook_max_retries=5, webhook_retry_base_seconds=30.0,
                webhook_max_lots_per_delivery=1000, job_deadline_hours=24, job_deadline_margin_hours=0,
                result_retention_days=0, batch_validate_images=False)


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'unit.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def runtime(db):
    return SimpleNamespace(db=db, settings=SimpleNamespace(**SETTINGS), metrics=Metrics(), policy=OutboundPolicy(),
                           ai=None)


@pytest.fixture
def runner(runtime):
    from workers.jobs import JobRunner

    runner = JobRunner(runtime, "worker-1")
    yield runner
    runner.close()


def add_job(db, lots: int = 0, languages=("en", "de"), lot_status: str = "pending", webhook: str | None = None,
            **values) -> str:
    """A job row (pending, queued, due now unless ``values`` say otherwise) and ``lots`` lots."""
    now = utcnow()
    job = dict(id=str(uuid.uuid4()), status="pending", stage="queued", strategy="openai_batch",
               languages=list(languages), total_lots=lots, created_at=now, updated_at=now, next_run_at=now,
               estimated_completion=now + timedelta(hours=1), deadline_at=now + timedelta(hours=24))
    job.update(values)
    with db.transaction() as session:
        session.add(BatchJob(**job))
        session.flush()
        for seq in range(lots):
            session.add(BatchLot(job_id=job["id"], seq=seq, lot_id=f"lot-{seq}", image_urls=[f"http://img/{seq}.jpg"],
                                 webhook_url=webhook, status=lot_status, processed_images=0, vision_attempts=0,
                                 translation_attempts=0))
    return job["id"]


def job_row(db, job_id: str) -> BatchJob:
    with db.session() as session:
        return session.get(BatchJob, job_id)


def lots_of(db, job_id: str) -> list[BatchLot]:
    with db.session() as session:
        return list(session.scalars(select(BatchLot).where(BatchLot.job_id == job_id).order_by(BatchLot.seq)))


class EchoStage(Stage):
    """The vision stage's columns and statuses; the request is the lot's note, the answer's text its description."""
    kind = "vision"
    waiting_status = "ready"
    done_status = "described"

    def request_body(self, lot):
        return {"note": lot.additional_info or ""}

    def success_values(self, lot, body):
        if not body.get("text"):
            raise ServiceError(502, "BAD_ANSWER", "empty answer")
        return {"status": "described", "description_en": body["text"]}, [], Usage(input_tokens=10, output_tokens=5)


def job_with_lots(db, count, status="ready") -> BatchJob:
    """A job in its vision stage whose ``count`` lots wait for it."""
    job_id = add_job(db, lots=count, lot_status=status, status="processing", stage="vision")
    return job_row(db, job_id)
