"""services.costs: the ledger per client and day, the two budgets, and which one an estimate shows."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from services import costs
from services.clock import utcnow
from services.errors import BudgetExceeded
from tests.unit.conftest import add_job


def settings(budget: float | None = None):
    return SimpleNamespace(max_daily_cost_usd=budget, cost_estimate_per_lot_usd=0.01)


def book(db, dollars: float, client_id: str, mode: str = "sync", lots: int = 0, day=None) -> None:
    with db.transaction() as session:
        costs.record(session, dollars, mode=mode, client_id=client_id, lots=lots, day=day)


def test_the_ledger_keeps_each_clients_spending_apart_and_adds_it_up(db):
    book(db, 0.5, "a")
    book(db, 0.25, "a")
    book(db, 1.0, "b", mode="batch", lots=2)
    book(db, 4.0, "a", day=utcnow().date() - timedelta(days=1))
    today = utcnow().date()
    with db.session() as session:
        assert costs.spent_on(session, today, "a") == pytest.approx(0.75)
        assert costs.spent_on(session, today, "b") == pytest.approx(1.0)
        assert costs.spent_on(session, today) == pytest.approx(1.75)
    days = costs.daily_totals(db, 2)
    assert [day["cost_usd"] for day in days] == [pytest.approx(1.75), pytest.approx(4.0)]
    assert days[0]["clients"] == {"a": pytest.approx(0.75), "b": pytest.approx(1.0)}
    assert (days[0]["sync_usd"], days[0]["batch_usd"], days[0]["lots"]) == (pytest.approx(0.75), 1.0, 2)


def test_reservations_are_per_client_and_only_of_active_jobs(db):
    add_job(db, client_id="a", estimated_cost_usd=0.3, cost_usd=0.1)
    add_job(db, client_id="b", estimated_cost_usd=0.2)
    add_job(db, client_id="a", estimated_cost_usd=5.0, status="completed", stage="done")
    with db.session() as session:
        assert costs.reserved(session, "a") == pytest.approx(0.2)
        assert costs.reserved(session, "b") == pytest.approx(0.2)
        assert costs.reserved(session) == pytest.approx(0.4)


def test_without_a_budget_the_estimate_shows_the_clients_own_figures(db):
    book(db, 0.5, "a")
    book(db, 2.0, "b")
    found = costs.estimate(db, 4, "batch", settings(), client_id="a")
    body = found.as_dict()
    assert found.within_budget and found.binding is None
    assert (body["spent_today_usd"], body["daily_budget_usd"], body["estimated_cost_usd"]) == (0.5, None, 0.02)
    assert "budget_scope" not in body and "remaining_today_usd" not in body


def test_the_budget_with_least_left_is_the_one_shown(db):
    book(db, 0.5, "a")
    book(db, 2.0, "b")
    # a's own $1 has $0.50 left, the deployment's $3 has $0.50 too: a tie shows the client's
    shown = costs.estimate(db, 1, "sync", settings(3.0), client_id="a", client_budget_usd=1.0).as_dict()
    assert (shown["budget_scope"], shown["daily_budget_usd"], shown["spent_today_usd"]) == ("client", 1.0, 0.5)
    roomy = costs.estimate(db, 1, "sync", settings(3.0), client_id="a", client_budget_usd=10.0).as_dict()
    assert (roomy["budget_scope"], roomy["spent_today_usd"], roomy["remaining_today_usd"]) == ("deployment", 2.5, 0.5)


def test_either_budget_refuses_and_says_which(db):
    book(db, 0.95, "a")
    with pytest.raises(BudgetExceeded) as own:
        costs.check_budget(db, 10, "sync", settings(100.0), client_id="a", client_budget_usd=1.0)
    assert own.value.details["budget_scope"] == "client" and "client a's" in own.value.message
    assert costs.check_budget(db, 10, "sync", settings(100.0), client_id="b", client_budget_usd=1.0).within_budget
    with pytest.raises(BudgetExceeded) as everyone:
        costs.check_budget(db, 10, "sync", settings(1.0), client_id="b")
    assert everyone.value.details["budget_scope"] == "deployment"
    assert everyone.value.details["spent_today_usd"] == 0.95  # the deployment's, though b spent nothing
    assert costs.needs_check(settings(), None) is False and costs.needs_check(settings(), 1.0) is True
