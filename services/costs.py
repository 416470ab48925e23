"""Dollars: the daily ledger, the per-lot estimate and the daily budgets.

Every priced answer adds its cost to the ledger row of its UTC day and its client, in the transaction
that stores the answer (a batch) or right after the answer (a sync request). The estimate of a new
request is the average cost per lot of the last days' completed work, whoever did it (a configured
default before there is any). Two budgets can hold a request back: the deployment's
``MAX_DAILY_COST_USD`` over every client's spending, and the client's own ``max_daily_cost_usd`` over
its own. A request whose estimate, added to what the day has spent and what accepted jobs are still
expected to spend (the deployment's or the client's), would pass either is refused.
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
from services.clients import IMPLICIT
from services.clock import utcnow
from services.errors import BudgetExceeded

ESTIMATE_WINDOW_DAYS = 7


def record(session: Session, dollars: float, *, mode: str, client_id: str, lots: int = 0,
           day: date | None = None) -> None:
    """Add to the ledger row of the day and client (created on first use) in the caller's transaction."""
    if not dollars and not lots:
        return
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    day = day or utcnow().date()
    statement = module.insert(CostLedger).values(day=day, mode=mode, client_id=client_id, cost_usd=dollars, lots=lots)
    statement = statement.on_conflict_do_update(
        index_elements=[CostLedger.day, CostLedger.mode, CostLedger.client_id],
        set_={"cost_usd": CostLedger.cost_usd + statement.excluded.cost_usd,
              "lots": CostLedger.lots + statement.excluded.lots})
    session.execute(statement)


def spent_on(session: Session, day: date, client_id: str | None = None) -> float:
    """Dollars spent on ``day``: by one client, or (None) by the whole deployment."""
    query = select(func.coalesce(func.sum(CostLedger.cost_usd), 0.0)).where(CostLedger.day == day)
    if client_id is not None:
        query = query.where(CostLedger.client_id == client_id)
    return float(session.scalar(query) or 0.0)


def reserved(session: Session, client_id: str | None = None) -> float:
    """What accepted, unfinished jobs (of one client, or of all) are still expected to spend beyond what
    they have spent."""
    left = func.max(BatchJob.estimated_cost_usd - BatchJob.cost_usd, 0.0) \
        if session.get_bind().dialect.name == "sqlite" else \
        func.greatest(BatchJob.estimated_cost_usd - BatchJob.cost_usd, 0.0)
    query = select(func.coalesce(func.sum(left), 0.0)).where(BatchJob.status.in_(JOB_ACTIVE))
    if client_id is not None:
        query = query.where(BatchJob.client_id == client_id)
    return float(session.scalar(query) or 0.0)


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
class Budget:
    """One daily budget as it stands: the deployment's (every client's spending) or a client's own."""
    scope: str  # "deployment" or "client"
    limit_usd: float
    spent_usd: float
    reserved_usd: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)

    def allows(self, dollars: float) -> bool:
        return self.spent_usd + self.reserved_usd + dollars <= self.limit_usd


@dataclass(frozen=True)
class Estimate:
    lots: int
    mode: str
    per_lot_usd: float
    cost_usd: float
    basis: str
    client_id: str
    spent_today_usd: float  # the client's own
    reserved_usd: float     # the client's own
    budgets: tuple[Budget, ...] = ()  # those that are set

    @property
    def within_budget(self) -> bool:
        return all(budget.allows(self.cost_usd) for budget in self.budgets)

    @property
    def binding(self) -> Budget | None:
        """The budget this request is held to: the first it would pass, else the one with least left."""
        for budget in self.budgets:
            if not budget.allows(self.cost_usd):
                return budget
        return min(self.budgets, key=lambda budget: budget.remaining_usd, default=None)

    @property
    def budget_usd(self) -> float | None:
        binding = self.binding
        return binding.limit_usd if binding else None

    def as_dict(self) -> dict[str, Any]:
        """The figures of the budget that binds (the deployment's when it is that one), else the client's own."""
        binding = self.binding
        spent, held = (binding.spent_usd, binding.reserved_usd) if binding else (self.spent_today_usd,
                                                                                 self.reserved_usd)
        body: dict[str, Any] = {
            "total_lots": self.lots, "processing_mode": "synchronous" if self.mode == "sync" else "batch",
            "estimated_cost_usd": round(self.cost_usd, 6), "per_lot_usd": round(self.per_lot_usd, 6),
            "basis": self.basis, "spent_today_usd": round(spent, 6), "reserved_usd": round(held, 6),
            "daily_budget_usd": binding.limit_usd if binding else None, "within_budget": self.within_budget,
        }
        if binding is not None:
            body["remaining_today_usd"] = round(binding.remaining_usd, 6)
            body["budget_scope"] = binding.scope
        return body


def needs_check(settings, client_budget_usd: float | None) -> bool:
    """Whether any budget could refuse (without one, checking would only cost reads)."""
    return settings.max_daily_cost_usd is not None or client_budget_usd is not None


def estimate(db: Database, lots: int, mode: str, settings, now: datetime | None = None, *,
             client_id: str = IMPLICIT, client_budget_usd: float | None = None) -> Estimate:
    """The expected cost of ``lots`` lots: sync lots at the standard price, batch lots at the Batch price."""
    with db.session() as session:
        return estimate_in(session, lots, mode, settings, now, client_id=client_id,
                           client_budget_usd=client_budget_usd)


def estimate_in(session: Session, lots: int, mode: str, settings, now: datetime | None = None, *,
                client_id: str = IMPLICIT, client_budget_usd: float | None = None) -> Estimate:
    """``client_budget_usd`` is the client's own daily budget (None: only the deployment's applies)."""
    now = now or utcnow()
    default = settings.cost_estimate_per_lot_usd * (1.0 if mode == "sync" else 0.5)
    each, basis = per_lot(session, mode, default, now.date())
    spent, held = spent_on(session, now.date(), client_id), reserved(session, client_id)
    budgets = []
    if client_budget_usd is not None:
        budgets.append(Budget("client", client_budget_usd, spent, held))
    if settings.max_daily_cost_usd is not None:
        budgets.append(Budget("deployment", settings.max_daily_cost_usd, spent_on(session, now.date()),
                              reserved(session)))
    return Estimate(lots, mode, each, each * lots, basis, client_id, spent, held, tuple(budgets))


def check_budget(db: Database, lots: int, mode: str, settings, now: datetime | None = None, *,
                 client_id: str = IMPLICIT, client_budget_usd: float | None = None) -> Estimate:
    """The estimate of a request, or BudgetExceeded (429) when it would take the day past a budget."""
    with db.session() as session:
        return check_budget_in(session, lots, mode, settings, now, client_id=client_id,
                               client_budget_usd=client_budget_usd)


def check_budget_in(session: Session, lots: int, mode: str, settings, now: datetime | None = None, *,
                    client_id: str = IMPLICIT, client_budget_usd: float | None = None) -> Estimate:
    """``check_budget`` in the caller's transaction: a job accepted in that transaction after the check (under
    the accept lock, see services/jobs.py) counts for the next request's check."""
    now = now or utcnow()
    found = estimate_in(session, lots, mode, settings, now, client_id=client_id, client_budget_usd=client_budget_usd)
    if not found.within_budget:
        retry = seconds_to_next_day(now)
        whose = f"client {client_id}'s OpenAI spending today past its own" if found.binding.scope == "client" \
            else "today's OpenAI spending past the"
        raise BudgetExceeded(
            f"This request's estimated cost (${found.cost_usd:.4f}) would take {whose} daily budget of "
            f"${found.budget_usd:.2f}; retry after the next UTC day starts", retry, found.as_dict())
    return found


def seconds_to_next_day(now: datetime) -> int:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
    return max(1, int((tomorrow - now).total_seconds()) + 1)


def daily_totals(db: Database, days: int = 14) -> list[dict[str, Any]]:
    """The deployment's dollars and completed lots per UTC day (every client's together) and mode, newest
    first, with each client's dollars in ``clients`` (for the dashboard)."""
    since = utcnow().date() - timedelta(days=days - 1)
    with db.session() as session:
        rows = session.execute(select(CostLedger.day, CostLedger.mode, CostLedger.client_id, CostLedger.cost_usd,
                                      CostLedger.lots).where(CostLedger.day >= since)
                               .order_by(CostLedger.day.desc(), CostLedger.mode, CostLedger.client_id)).all()
    by_day: dict[date, dict[str, Any]] = {}
    for day, mode, client_id, dollars, lots in rows:
        entry = by_day.setdefault(day, {"day": day.isoformat(), "cost_usd": 0.0, "sync_usd": 0.0, "batch_usd": 0.0,
                                        "lots": 0, "clients": {}})
        entry["cost_usd"] += dollars
        entry[f"{mode}_usd"] = entry.get(f"{mode}_usd", 0.0) + dollars
        entry["lots"] += lots
        entry["clients"][client_id] = entry["clients"].get(client_id, 0.0) + dollars
    return list(by_day.values())


def record_sync(db: Database, dollars: float, completed: bool = True, *, client_id: str) -> None:
    """A sync lot's cost on today's ledger row of its client, and the lot itself when it was described (a
    request that failed after a paid answer still spent its dollars)."""
    with db.transaction() as session:
        record(session, dollars, mode="sync", client_id=client_id, lots=1 if completed else 0)
