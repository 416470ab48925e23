"""The processes of the deployment that run a background worker, as their heartbeats show.

Every worker writes its row in ``worker_heartbeats`` every few seconds (workers/loop.py). A row seen
within the last ``max(30 s, 3 x WORKER_POLL_INTERVAL)`` is a live process: /health reports the count,
and a cap meant for the whole deployment is shared out by it (``share``).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from database.models import WorkerHeartbeat

MIN_LIVE_SECONDS = 30.0


def live_cutoff(now: datetime, poll_interval: float) -> datetime:
    """Heartbeats older than this are of processes taken for dead (a busy loop beats at least once a poll)."""
    return now - timedelta(seconds=max(MIN_LIVE_SECONDS, 3 * poll_interval))


def live_workers(session: Session, now: datetime, poll_interval: float) -> int:
    return session.scalar(select(func.count()).select_from(WorkerHeartbeat)
                          .where(WorkerHeartbeat.last_beat_at >= live_cutoff(now, poll_interval))) or 0


def share(total: int, live: int) -> int:
    """One process's part of a deployment-wide cap of ``total``: the live processes' parts add up to at
    most ``total`` (at least 1 each, so a cap below the number of processes lets each one go on slowly)."""
    return max(1, total // max(1, live))
