"""A batch job and its lots: what the client sent and where each lot stands."""
from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from database.models.base import Base, JSONType, UTCDateTime, utcnow

JOB_ACTIVE = ("pending", "processing", "translating")
JOB_FINAL = ("completed", "failed", "cancelled")
JOB_STATUSES = JOB_ACTIVE + JOB_FINAL


class BatchJob(Base):
    __tablename__ = "batch_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # the client whose key created it ("default": the implicit client of SHARED_KEY); no other client sees it
    client_id: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    # the Idempotency-Key it was created with, so a retry after a crash finds it rather than making another
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    # where the state machine stands: queued, images, vision, translation, finalizing, done
    stage: Mapped[str] = mapped_column(String(24), default="queued")
    strategy: Mapped[str] = mapped_column(String(16), default="openai_batch")
    version: Mapped[str] = mapped_column(String(32), default="1.0.0")
    languages: Mapped[list] = mapped_column(JSONType)
    total_lots: Mapped[int] = mapped_column(Integer)
    processed_lots: Mapped[int] = mapped_column(Integer, default=0)
    failed_lots: Mapped[int] = mapped_column(Integer, default=0)
    translated_lots: Mapped[int] = mapped_column(Integer, default=0)
    total_images: Mapped[int] = mapped_column(Integer, default=0)
    total_images_processed: Mapped[int] = mapped_column(Integer, default=0)
    images_checked_lots: Mapped[int] = mapped_column(Integer, default=0)  # lots past the photo stage
    webhook_configured: Mapped[bool] = mapped_column(Boolean, default=False)
    openai_vision_batch_id: Mapped[str | None] = mapped_column(String(64))
    openai_translation_batch_id: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # US dollars priced from the model registry as answers arrive; the estimate is fixed at acceptance
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    estimated_cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    estimated_completion: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # worker bookkeeping: when to look again, and who holds the job now
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_batch_jobs_due", "status", "next_run_at"),
                      Index("ix_batch_jobs_client_created", "client_id", "created_at"),
                      UniqueConstraint("client_id", "idempotency_key", name="uq_batch_jobs_client_idempotency_key"))

    @property
    def is_active(self) -> bool:
        return self.status in JOB_ACTIVE

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job as its views show it, read in one statement and attached to no session: what the status,
    results and delivery endpoints answer from (the worker's bookkeeping columns are left out)."""
    id: str
    client_id: str
    status: str
    stage: str
    strategy: str
    version: str
    languages: list
    total_lots: int
    processed_lots: int
    failed_lots: int
    translated_lots: int
    total_images: int
    total_images_processed: int
    webhook_configured: bool
    openai_vision_batch_id: str | None
    openai_translation_batch_id: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: float
    estimated_cost_usd: float
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    cancelled_at: datetime | None
    estimated_completion: datetime | None
    images_checked_lots: int

    is_active = BatchJob.is_active
    total_tokens = BatchJob.total_tokens


SNAPSHOT_COLUMNS = tuple(BatchJob.__table__.c[f.name] for f in fields(JobSnapshot))
# what a view of a job accepts: the ORM object (the worker, the dashboard) or a snapshot (the polling API)
AnyJob = BatchJob | JobSnapshot


LOT_STATUSES = ("pending", "ready", "described", "completed", "failed")


class BatchLot(Base):
    __tablename__ = "batch_lots"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    lot_id: Mapped[str] = mapped_column(String(128))
    additional_info: Mapped[str | None] = mapped_column(Text)
    image_urls: Mapped[list] = mapped_column(JSONType)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # pending -> ready (images checked) -> described (English written) -> completed | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    usable_images: Mapped[list | None] = mapped_column(JSONType)
    missing_images: Mapped[list | None] = mapped_column(JSONType)
    processed_images: Mapped[int] = mapped_column(Integer, default=0)
    description_en: Mapped[str | None] = mapped_column(Text)
    findings: Mapped[dict | None] = mapped_column(JSONType)
    vision_shard: Mapped[int | None] = mapped_column(Integer)
    vision_attempts: Mapped[int] = mapped_column(Integer, default=0)
    translation_shard: Mapped[int | None] = mapped_column(Integer)
    translation_attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # held while one process checks the lot's photos, so the processes of every instance share a job's checks
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("job_id", "seq"),
        UniqueConstraint("job_id", "lot_id"),
        Index("ix_batch_lots_job_status", "job_id", "status"),
    )

    @property
    def custom_id(self) -> str:
        return f"lot-{self.seq}"


class BatchLotPage(Base):
    """A page of a job's lots as they were accepted, kept until a worker takes the job up and writes them
    into ``batch_lots`` (database/lot_pages.py). Accepting 50,000 lots then costs a few compact inserts in
    the request instead of 50,000 indexed rows; the rows are written off the request path, in the
    transaction that starts the job (or ends it, if it ends first)."""
    __tablename__ = "batch_lot_pages"

    job_id: Mapped[str] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True)
    first_seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # JSON, one array per lot in request order: [lot_id, additional_info, [image url, ...], webhook url or null]
    lots: Mapped[str] = mapped_column(Text)
