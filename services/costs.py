"""Dollars: the daily ledger, the per-lot estimate and the daily budget.

Every priced answer adds its cost to the ledger row of its UTC day, in the transaction that
stores the answer (a batch) or right after the answer (a sync request). The estimate of a new
request is the average cost per lot of the last days' completed work (a configured default
before there is any); a request whose estimate, added to what the day has spent and what
accepted jobs are still expected to spend, would pass ``MAX_DAILY_COST_USD`` is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from database import Database
from database.models import JOB_ACTIVE, BatchJob, CostLedger
from services.clock import utcnow
from services.errors import BudgetExceeded

ESTIMATE_WINDOW_DAYS = 7


def record(session: Session, dollars: float, *, mode: str, lots: int = 0, day: date | None = None) -> None:
    """Add to the ledger row of the day (created on first use) in the caller's transaction."""
    if not dollars and not lots:
        return
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    day = day or utcnow().date()
    statement = module.insert(CostLedger).values(day=day, mode=mode, cost_usd=dollars, lots=lots)
    statement = statement.on_conflict_do_update(
        index_elements=[CostLedger.day, CostLedger.mode],
        set_={"cost_usd": CostLedger.cost_usd + statement.excluded.cost_usd,
              "lots": CostLedger.lots + statement.excluded.lots})
    session.execute(statement)


def spent_on(session: Session, day: date) -> float:
    return float(session.scalar(select(func.coalesce(func.sum(CostLedger.cost_usd), 0.0))
                                .where(CostLedger.day == day)) or 0.0)


def reserved(session: Session) -> float:
    """What accepted, unfinished jobs are still expected to spend beyond what they have spent."""
    left = func.max(BatchJob.estimated_cost_usd - BatchJob.cost_usd, 0.0) \
        if session.get_bind().dialect.name == "sqlite" else \
        func.greatest(BatchJob.estimated_cost_usd - BatchJob.cost_usd, 0.0)
    return float(session.scalar(select(func.coalesce(func.sum(left), 0.0))
                                .where(BatchJob.status.in_(JOB_ACTIVE))) or 0.0)


def per_lot(session: Session, mode: str, default: float, today: date | None = None) -> tuple[float, str]:
    """Average cost per completed lot of the last days, and where the figure comes from."""
    today = today or utcnow().date()
    since = today - timedelta(days=ESTIMATE_WINDOW_DAYS)
    dollars, lots = session.execute(
        select(func.coalesce(func.sum(CostLedger.cost_usd), 0.0), func.coalesce(func.sum(CostLedger.lots), 0))
        .where(CostLedger.mode == mode, CostLedger.day >= since)).one()
    if lots and dollars:
        return float(dollars) / int(lots), f"average of {int(lots)} {mode} lots in the last {ESTIMATE_WINDOW_DAYS} days"
    return default, "configured default (no completed work yet)"


@dataclass(frozen=True)
class Estimate:
    lots: int
    mode: str
    per_lot_usd: float
    cost_usd: float
    basis: str
    spent_today_usd: float
    reserved_usd: float
    budget_usd: float | None

    @property
    def within_budget(self) -> bool:
        return self.budget_usd is None or self.spent_today_usd + self.reserved_usd + self.cost_usd <= self.budget_usd

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "total_lots": self.lots, "processing_mode": "synchronous" if self.mode == "sync" else "batch",
            "estimated_cost_usd": round(self.cost_usd, 6), "per_lot_usd": round(self.per_lot_usd, 6),
            "basis": self.basis, "spent_today_usd": round(self.spent_today_usd, 6),
            "reserved_usd": round(self.reserved_usd, 6),
            "daily_budget_usd": self.budget_usd, "within_budget": self.within_budget,
        }
        if self.budget_usd is not None:
            body["remaining_today_usd"] = round(max(0.0, self.budget_usd - self.spent_today_usd - self.reserved_usd), 6)
        return body


def estimate(db: Database, lots: int, mode: str, settings, now: datetime | None = None) -> Estimate:
    """The expected cost of ``lots`` lots: sync lots at the standard price, batch lots at the Batch price."""
    with db.session() as session:
        return estimate_in(session, lots, mode, settings, now)


def estimate_in(session: Session, lots: int, mode: str, settings, now: datetime | None = None) -> Estimate:
    now = now or utcnow()
    default = settings.cost_estimate_per_lot_usd * (1.0 if mode == "sync" else 0.5)
    each, basis = per_lot(session, mode, default, now.date())
    return Estimate(lots, mode, each, each * lots, basis, spent_on(session, now.date()), reserved(session),
                    settings.max_daily_cost_usd)


def check_budget(db: Database, lots: int, mode: str, settings, now: datetime | None = None) -> Estimate:
    """The estimate of a request, or BudgetExceeded (429) when it would take the day past the budget."""
    with db.session() as session:
        return check_budget_in(session, lots, mode, settings, now)


def check_budget_in(session: Session, lots: int, mode: str, settings, now: datetime | None = None) -> Estimate:
    """``check_budget`` in the caller's transaction: a job accepted in that transaction after the check (under
    the accept lock, see services/jobs.py) counts for the next request's check."""
    now = now or utcnow()
    found = estimate_in(session, lots, mode, settings, now)
    if not found.within_budget:
        retry = seconds_to_next_day(now)
        raise BudgetExceeded(
            f"This request's estimated cost (${found.cost_usd:.4f}) would take today's OpenAI spending past the "
            f"daily budget of ${found.budget_usd:.2f}; retry after the next UTC day starts", retry,
            found.as_dict())
    return found


def seconds_to_next_day(now: datetime) -> int:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


def daily_totals(db: Database, days: int = 14) -> list[dict[str, Any]]:
    """Dollars and completed lots per UTC day and mode, newest first (for the dashboard)."""
    since = utcnow().date() - timedelta(days=days - 1)
    with db.session() as session:
        rows = session.execute(select(CostLedger.day, CostLedger.mode, CostLedger.cost_usd, CostLedger.lots)
                               .where(CostLedger.day >= since).order_by(CostLedger.day.desc(), CostLedger.mode)).all()
    by_day: dict[date, dict[str, Any]] = {}
    for day, mode, dollars, lots in rows:
        entry = by_day.setdefault(day, {"day": day.isoformat(), "cost_usd": 0.0, "sync_usd": 0.0, "batch_usd": 0.0,
                                        "lots": 0})
        entry["cost_usd"] += dollars
        entry[f"{mode}_usd"] = entry.get(f"{mode}_usd", 0.0) + dollars
        entry["lots"] += lots
    return list(by_day.values())


def record_sync(db: Database, dollars: float, completed: bool = True) -> None:
    """A sync lot's cost on today's ledger row, and the lot itself when it was described (a request that
    failed after a paid answer still spent its dollars)."""
    with db.transaction() as session:
        record(session, dollars, mode="sync", lots=1 if completed else 0)
