"""A stage's shards side by side on PostgreSQL (BATCH_SHARD_CONCURRENCY): one shard's upload does not wait
for another's, and a failure in one still lets the others finish their step first."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from database import Database, normalize_url
from database.models import Base, BatchJob, OpenAIBatch
from tests.unit.conftest import EchoStage, job_with_lots
from workers import leases
from workers.leases import Lease
from workers.shards import ShardManager


class SlowGateway:
    """Stands in for OpenAI at the shard manager's seam: every upload waits until ``parties`` uploads are
    under way at once (a barrier), so uploads made one after another time out instead."""

    def __init__(self, parties: int, fail_upload: int | None = None):
        self.barrier = threading.Barrier(parties, timeout=10)
        self.fail_upload = fail_upload
        self.uploads: list[str] = []
        self._lock = threading.Lock()

    def upload_batch_file(self, path: str, name: str) -> str:
        with self._lock:
            number = len(self.uploads)
            self.uploads.append(name)
        self.barrier.wait()
        if number == self.fail_upload:
            raise RuntimeError("upload refused")
        return f"file-{name}"

    def find_batch(self, tags, created_after=None):
        return None

    def create_batch(self, file_id: str, tags):
        return SimpleNamespace(id=f"batch-{file_id}", status="validating")

    def retrieve_batch(self, batch_id: str):
        return SimpleNamespace(status="in_progress", request_counts=None)


@pytest.fixture
def pg_db(pg_database_url):
    database = Database(normalize_url(pg_database_url, "instance"))
    yield database
    database.dispose()


def manager_for(db, count: int, gateway, concurrency: int) -> tuple[ShardManager, BatchJob]:
    job = job_with_lots(db, count)
    with db.session() as session:
        assert leases.claim(session, BatchJob, BatchJob.id == job.id, BatchJob.id, 1, "worker-1", 30) == [job.id]
    lease = Lease(db, BatchJob, job.id, "worker-1", 30)
    return ShardManager(db, gateway, EchoStage(None, job, 2), 2, 10**6, lease, lambda session, usage: None,
                        concurrency=concurrency), job


def shard_states(db, job_id: str) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(OpenAIBatch.status).where(OpenAIBatch.job_id == job_id)
                                    .order_by(OpenAIBatch.shard)))


def test_three_shards_are_uploaded_at_once(pg_db):
    gateway = SlowGateway(parties=3)
    manager, job = manager_for(pg_db, 6, gateway, concurrency=3)
    assert manager.advance() == "wait"
    assert len(gateway.uploads) == 3
    assert shard_states(pg_db, job.id) == ["submitted"] * 3


def test_one_shard_failing_lets_the_others_finish_their_step_then_raises(pg_db):
    gateway = SlowGateway(parties=2, fail_upload=1)
    manager, job = manager_for(pg_db, 4, gateway, concurrency=2)
    with pytest.raises(RuntimeError, match="upload refused"):
        manager.advance()
    assert sorted(shard_states(pg_db, job.id)) == ["building", "submitted"]  # retried on the next pass


def test_sqlite_takes_its_shards_one_at_a_time(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'shards.db'}")
    Base.metadata.create_all(db.engine)
    manager, _ = manager_for(db, 4, SlowGateway(parties=1), concurrency=4)
    assert manager.concurrency == 1
    assert manager.advance() == "wait"
    db.dispose()


def test_a_shard_is_uploaded_while_the_next_one_is_still_being_cut(pg_db):
    """Cutting shard 1 cannot finish until shard 0's upload has begun: so the upload starts as soon as
    shard 0 is recorded, not once every shard is cut (which would wait here for ever)."""
    uploading = threading.Event()

    class Gateway(SlowGateway):
        def upload_batch_file(self, path: str, name: str) -> str:
            uploading.set()
            return f"file-{name}"

    class WaitingStage(EchoStage):
        def request_body(self, lot):
            if lot.seq == 3 and not uploading.wait(10):
                raise AssertionError("shard 1 was being cut and shard 0's upload had not started")
            return super().request_body(lot)

    job = job_with_lots(pg_db, 4)
    with pg_db.session() as session:
        assert leases.claim(session, BatchJob, BatchJob.id == job.id, BatchJob.id, 1, "worker-1", 30) == [job.id]
    lease = Lease(pg_db, BatchJob, job.id, "worker-1", 30)
    manager = ShardManager(pg_db, Gateway(parties=1), WaitingStage(None, job, 2), 2, 10**6, lease,
                           lambda session, usage: None, concurrency=2)
    assert manager.advance() == "wait"
    assert shard_states(pg_db, job.id) == ["submitted", "submitted"]
