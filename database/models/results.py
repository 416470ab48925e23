"""One description per lot and language; the unique key makes storing a result idempotent."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from database.models.base import Base, UTCDateTime, utcnow


class BatchResult(Base):
    __tablename__ = "batch_results"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), index=True)
    lot_pk: Mapped[int] = mapped_column(ForeignKey("batch_lots.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(16))
    damages: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("lot_pk", "language"),)
