"""Callers of the API: clients, their keys, the nonces of replay-safe signatures, idempotent POSTs.

The implicit client of a deployment with only ``SHARED_KEY`` has no row: it is built from the settings
(services/clients.py). Its jobs carry the client id ``default``.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from database.models.base import Base, UTCDateTime, utcnow


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # accept the reference's signatures (HMAC of the job id, the query or the lots) besides the GS2 scheme
    reference_scheme: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    # the secret before the last rotation: webhooks carry a signature with it too until it expires
    previous_webhook_secret: Mapped[str | None] = mapped_column(String(100))
    previous_webhook_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # limits of its own; NULL: the deployment's setting
    rate_limit_sync: Mapped[str | None] = mapped_column(String(64))
    rate_limit_batch: Mapped[str | None] = mapped_column(String(64))
    rate_limit_polling: Mapped[str | None] = mapped_column(String(64))
    max_queued_lots: Mapped[int | None] = mapped_column(Integer)
    max_daily_cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ClientKey(Base):
    """An API key: the id a GS2 signature names, and the secret both sides hold."""
    __tablename__ = "client_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # a rotated-out key keeps working until then; NULL: no end
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RequestNonce(Base):
    """A GS2 signature's nonce, kept while its timestamp is inside the clock window (replays are refused)."""
    __tablename__ = "request_nonces"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class IdempotencyRecord(Base):
    """A POST sent with ``Idempotency-Key``: what it was (its fingerprint) and, once answered, the answer."""
    __tablename__ = "idempotency_records"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # processing: the first request is being handled (until locked_until); done: its answer is below
    state: Mapped[str] = mapped_column(String(16), default="processing")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_idempotency_records_expires_at", "expires_at"),)
