"""Dollars: every answer priced from the registry, per lot, per job and per day; the estimate and the budget."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
import requests
from sqlalchemy import select

from app.cli import main as cli_main
from database.models import CostLedger
from services import clients, costs
from services.clients import ClientLimits
from services.costs import seconds_to_next_day
from services.models import registry
from tests.support.client import CAMRY, TEST_KEY, Api, Gs2Api, body_signature, photo_lots


def _lots(image_server, count: int, prefix: str = "c"):
    return photo_lots(image_server, count, prefix, photos=(1, 2), info=CAMRY)


def _estimate(api: Api, lots, languages=("en", "de")):
    return api.http.post(f"{api.base}/api/v1/estimate", timeout=60, json={
        "signature": body_signature(lots), "version": "1.0.0", "languages": list(languages), "lots": lots})


def _priced(usage: dict, model: str, batch: bool) -> float:
    return registry().cost(model, usage["input_tokens"], usage["cached_input_tokens"], usage["output_tokens"],
                           batch=batch)


def test_a_sync_answer_carries_its_cost_at_the_standard_price(api: Api, image_server):
    answer = api.generate(_lots(image_server, 1), languages=["en", "de", "fr"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    usage = body["lots"][0]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["reasoning_tokens"] > 0
    assert body["cost_usd"] == pytest.approx(usage["cost_usd"], abs=1e-6) and body["cost_usd"] > 0


def test_a_batch_job_is_priced_per_lot_and_per_job_at_the_batch_price(api: Api, image_server):
    accepted = api.generate(_lots(image_server, 4), languages=["en", "de"]).json()
    status = api.wait_status(accepted["job_id"])
    assert status["status"] == "completed", status
    details = status["processing_details"]
    assert details["cost_usd"] > 0 and details["estimated_cost_usd"] > 0
    results = api.results(accepted["job_id"]).json()
    summary = results["processing_summary"]
    lots = results["results"]["lots"]
    assert summary["cost_usd"] == pytest.approx(sum(item["usage"]["cost_usd"] for item in lots), abs=1e-5)
    assert summary["cost_usd"] == pytest.approx(details["cost_usd"], abs=1e-6)
    tokens = summary["token_usage"]
    assert tokens["input_tokens"] == sum(item["usage"]["input_tokens"] for item in lots)
    assert tokens["reasoning_tokens"] == sum(item["usage"]["reasoning_tokens"] for item in lots) > 0
    # vision (gpt-6.1-terra) and translation (gpt-6-luna) lines are both at half price: the job costs no more
    # than all its tokens at the dearer model's Batch price, and no less than at the cheaper one's
    dear, cheap = _priced(tokens, "gpt-6.1-terra", batch=True), _priced(tokens, "gpt-6-luna", batch=True)
    assert cheap <= summary["cost_usd"] <= dear
    assert summary["cost_usd"] < _priced(tokens, "gpt-6.1-terra", batch=False)


def test_the_estimate_starts_from_the_configured_default_and_then_learns(make_live, image_server):
    live = make_live(COST_ESTIMATE_PER_LOT_USD="0.02")
    api = Api(live.url)
    lots = _lots(image_server, 10, prefix="e")
    first = _estimate(api, lots)
    assert first.status_code == 200, first.text
    guess = first.json()
    assert guess["processing_mode"] == "batch" and guess["total_lots"] == 10
    assert guess["per_lot_usd"] == pytest.approx(0.01) and guess["estimated_cost_usd"] == pytest.approx(0.1)
    assert guess["basis"].startswith("configured default") and guess["within_budget"] is True
    assert _estimate(api, lots[:1]).json()["per_lot_usd"] == pytest.approx(0.02)  # one lot: sync, full price
    job = api.generate(lots[:3], languages=["en", "de"]).json()
    done = api.wait_status(job["job_id"])
    learned = _estimate(api, lots).json()
    assert learned["basis"].startswith("average of 3 batch lots")
    assert learned["per_lot_usd"] == pytest.approx(done["processing_details"]["cost_usd"] / 3, abs=1e-6)
    assert learned["spent_today_usd"] == pytest.approx(done["processing_details"]["cost_usd"], abs=2e-6)


def test_an_unsigned_estimate_is_refused(api: Api, image_server):
    lots = _lots(image_server, 2)
    answer = api.http.post(f"{api.base}/api/v1/estimate", json={"languages": ["en"], "lots": lots}, timeout=30)
    assert answer.status_code == 401 and answer.json()["code"] == "MISSING_SIGNATURE"
    wrong = api.http.post(f"{api.base}/api/v1/estimate", timeout=30, json={
        "signature": body_signature(lots, "another-key-of-at-least-thirty-two-chars"), "lots": lots})
    assert wrong.status_code == 403


def test_a_request_that_would_pass_the_daily_budget_is_refused_until_the_next_day(make_live, image_server):
    live = make_live(MAX_DAILY_COST_USD="0.05", COST_ESTIMATE_PER_LOT_USD="0.01")
    api = Api(live.url)
    small = api.generate(_lots(image_server, 4, prefix="s"), languages=["en", "de"])  # estimated 4 x $0.005
    assert small.status_code == 201, small.text
    big = api.generate(_lots(image_server, 20, prefix="g"), languages=["en", "de"])  # $0.10 on top
    assert big.status_code == 429, big.text
    error = big.json()
    assert error["code"] == "BUDGET_EXCEEDED" and error["details"]["daily_budget_usd"] == 0.05
    assert error["details"]["reserved_usd"] >= 0 and error["details"]["within_budget"] is False
    retry = int(big.headers["Retry-After"])
    assert 0 < retry <= 86_401
    assert abs(retry - seconds_to_next_day(datetime.now(timezone.utc))) < 60
    estimate = _estimate(api, _lots(image_server, 20, prefix="g")).json()
    assert estimate["within_budget"] is False and estimate["daily_budget_usd"] == 0.05


def test_dollars_reach_the_metrics(api: Api, live, image_server):
    assert api.generate(_lots(image_server, 1, prefix="m"), languages=["en", "de"]).status_code == 200
    text = requests.get(f"{live.url}/metrics", timeout=10).text
    assert 'openai_cost_usd_total{api="responses",model="gpt-6.1-terra"}' in text
    assert 'openai_cost_usd_total{api="responses",model="gpt-6-luna"}' in text
    assert 'openai_model_shutdown_timestamp_seconds{model="gpt-6.1-terra",setting="OPENAI_MODEL_VISION"} 0.0' in text


def test_genservice_estimate_prints_the_estimate(live, image_server, tmp_path, capsys):
    path = tmp_path / "lots.json"
    path.write_text(json.dumps(_lots(image_server, 5, prefix="x")))
    assert cli_main(["estimate", str(path), "--url", live.url, "--key", TEST_KEY, "--languages", "en,de"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["total_lots"] == 5 and printed["estimated_cost_usd"] > 0
    assert printed["models"] == {"vision": "gpt-6.1-terra", "translation": "gpt-6-luna"}


def test_a_sync_request_that_fails_after_a_paid_answer_still_counts_its_dollars(make_live, sandbox, image_server):
    live = make_live()
    api = Api(live.url)
    # the vision answer comes (and is billed); then OpenAI refuses the translation model's effort
    sandbox.configure(catalog_overrides={"gpt-6-luna": {"efforts": ["low", "medium", "high", "xhigh", "max"]}})
    lots = _lots(image_server, 1, prefix="paid")
    answer = api.generate(lots, languages=["en", "de"])
    assert answer.status_code == 502, answer.text
    after = _estimate(api, lots).json()
    assert after["spent_today_usd"] > 0  # the vision call's dollars are on the day's ledger
    assert after["basis"].startswith("configured default")  # but no lot was completed


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_jobs_accepted_at_the_same_moment_cannot_both_pass_the_budget(backend, pg_database_url, sandbox,
                                                                       image_server, tmp_path):
    """Each of two jobs fits the budget alone, both together do not: one is accepted and one refused. Once the
    first is accepted its estimate is reserved, so later pairs are both refused. (PostgreSQL: the accept lock;
    SQLite: every write transaction takes the database's write lock at BEGIN, so accepts queue behind it.)"""
    import threading

    from app import create_app
    from tests.conftest import base_config
    from tests.support.live import LiveServer

    url = pg_database_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'race.db'}"
    config = {**base_config(url, sandbox.url, tmp_path), "MAX_DAILY_COST_USD": "0.05",
              "COST_ESTIMATE_PER_LOT_USD": "0.01", "WORKER_ENABLED": "false"}
    app = create_app(config)
    server = LiveServer(app).start()
    try:
        for attempt in range(5):
            barrier = threading.Barrier(2)
            statuses = []

            def send(name):
                lots = _lots(image_server, 6, prefix=f"race{attempt}{name}")  # $0.03 each, at the Batch price
                client = Api(server.url)
                barrier.wait()
                statuses.append(client.generate(lots, languages=["en", "de"]).status_code)

            threads = [threading.Thread(target=send, args=(name,)) for name in "ab"]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(statuses) == ([201, 429] if attempt == 0 else [429, 429]), (attempt, statuses)
    finally:
        server.stop()
        app.extensions["genservice"].close()


# ---- budgets per client --------------------------------------------------------------------------

def _clients(live, **own):
    """Clients ``a`` (with ``own`` limits) and ``b`` (none of its own), as GS2 callers of ``live``."""
    db = live.app.extensions["genservice"].db
    a = clients.add_client(db, "budget-a", limits=ClientLimits(**own))
    b = clients.add_client(db, "budget-b")
    return [Gs2Api(live.url, c.client_id, c.key_id, c.secret) for c in (a, b)]


def _gs2_estimate(api: Gs2Api, lots):
    body = json.dumps({"version": "1.0.0", "languages": ["en", "de"], "lots": lots}).encode()
    return api.request("POST", "/api/v1/estimate", body=body).json()


def test_a_client_over_its_own_budget_is_refused_while_another_gets_through(make_live, image_server):
    # batch lots are estimated at $0.005 each; nothing finishes, so accepted jobs stay reserved
    live = make_live(MAX_DAILY_COST_USD="0.10", COST_ESTIMATE_PER_LOT_USD="0.01", WORKER_ENABLED="false")
    a, b = _clients(live, max_daily_cost_usd=0.03)
    assert a.generate(_lots(image_server, 4, prefix="oa"), ["en", "de"]).status_code == 201  # $0.02 of a's $0.03
    refused = a.generate(_lots(image_server, 4, prefix="ob"), ["en", "de"])
    assert refused.status_code == 429, refused.text
    error = refused.json()
    assert error["code"] == "BUDGET_EXCEEDED" and "its own daily budget of $0.03" in error["message"]
    assert error["details"]["budget_scope"] == "client" and error["details"]["daily_budget_usd"] == 0.03
    assert error["details"]["reserved_usd"] == pytest.approx(0.02)
    assert 0 < int(refused.headers["Retry-After"]) <= 86_401
    # b has no budget of its own: only the deployment's, which a's $0.02 and b's own count against
    assert b.generate(_lots(image_server, 4, prefix="oc"), ["en", "de"]).status_code == 201
    assert b.generate(_lots(image_server, 8, prefix="od"), ["en", "de"]).status_code == 201  # $0.08 of $0.10 now
    over = b.generate(_lots(image_server, 6, prefix="oe"), ["en", "de"])  # $0.03 more: past the deployment's
    assert over.status_code == 429 and over.json()["details"]["budget_scope"] == "deployment"
    assert over.json()["details"]["daily_budget_usd"] == 0.10
    assert over.json()["details"]["reserved_usd"] == pytest.approx(0.08)
    # each estimate shows the budget with the least left: a's own for a, the deployment's for b
    mine = _gs2_estimate(a, _lots(image_server, 1, prefix="of"))
    assert (mine["within_budget"], mine["budget_scope"], mine["daily_budget_usd"]) == (True, "client", 0.03)
    assert mine["remaining_today_usd"] == pytest.approx(0.01) and mine["reserved_usd"] == pytest.approx(0.02)
    theirs = _gs2_estimate(b, _lots(image_server, 6, prefix="og"))
    assert (theirs["within_budget"], theirs["budget_scope"]) == (False, "deployment")
    assert theirs["remaining_today_usd"] == pytest.approx(0.02)


def test_sync_requests_are_charged_to_their_client(make_live, image_server):
    live = make_live(COST_ESTIMATE_PER_LOT_USD="0.01")
    a, b = _clients(live)
    answer = a.generate(_lots(image_server, 1, prefix="sa"), ["en", "de"])
    assert answer.status_code == 200, answer.text
    spent = answer.json()["cost_usd"]
    assert spent > 0
    # neither has a budget: each estimate shows that client's own spending today
    assert _gs2_estimate(a, _lots(image_server, 1, prefix="sb"))["spent_today_usd"] == pytest.approx(spent, abs=2e-6)
    assert _gs2_estimate(b, _lots(image_server, 1, prefix="sc"))["spent_today_usd"] == 0
    # a sync request past a client's own budget is refused before any OpenAI call; the other one's is not
    db = live.app.extensions["genservice"].db
    clients.update_client(db, a.client_id, max_daily_cost_usd=spent + 0.001)  # less than one more lot's $0.01
    refused = a.generate(_lots(image_server, 1, prefix="sd"), ["en", "de"])
    assert (refused.status_code, refused.json()["code"]) == (429, "BUDGET_EXCEEDED"), refused.text
    assert refused.json()["details"]["spent_today_usd"] == pytest.approx(spent, abs=2e-6)
    assert b.generate(_lots(image_server, 1, prefix="se"), ["en", "de"]).status_code == 200
    # the dashboard's days: the deployment's total, and each client's part of it
    today = costs.daily_totals(db, 1)[0]
    assert today["cost_usd"] == pytest.approx(today["clients"]["budget-a"] + today["clients"]["budget-b"])
    assert today["clients"]["budget-a"] == pytest.approx(spent, abs=2e-6) and today["sync_usd"] == today["cost_usd"]


def test_a_clients_batch_spending_is_booked_to_it(make_live, image_server):
    live = make_live()
    a, _b = _clients(live)
    job_id = a.generate(_lots(image_server, 3, prefix="bk"), ["en", "de"]).json()["job_id"]
    deadline = time.monotonic() + 60
    while (status := a.status(job_id).json())["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status["status"] == "completed", status
    with live.app.extensions["genservice"].db.session() as session:
        rows = session.execute(select(CostLedger.client_id, CostLedger.cost_usd, CostLedger.lots)).all()
    assert [(client, lots) for client, _usd, lots in rows] == [("budget-a", 3)]
    assert rows[0][1] == pytest.approx(status["processing_details"]["cost_usd"], abs=1e-6)


def test_a_clients_own_queue_cap_is_429_while_the_service_has_room(make_live, image_server):
    live = make_live(MAX_QUEUED_LOTS=10, WORKER_ENABLED="false")
    a, b = _clients(live, max_queued_lots=5)
    assert a.generate(_lots(image_server, 3, prefix="qa")).status_code == 201
    refused = a.generate(_lots(image_server, 3, prefix="qb"))
    assert refused.status_code == 429, refused.text
    error = refused.json()
    assert error["code"] == "CLIENT_QUEUE_FULL" and int(refused.headers["Retry-After"]) > 0
    assert error["details"] == {"client_id": "budget-a", "max_queued_lots": 5, "queued_lots": 3, "requested_lots": 3}
    assert a.generate(_lots(image_server, 2, prefix="qc")).status_code == 201  # exactly its cap
    # b has no cap of its own; the service's MAX_QUEUED_LOTS still holds for everyone
    assert b.generate(_lots(image_server, 4, prefix="qd")).status_code == 201
    full = b.generate(_lots(image_server, 2, prefix="qe"))
    assert (full.status_code, full.json()["code"]) == (503, "QUEUE_FULL")


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_the_ledger_migration_keeps_every_dollar_both_ways(engine, request, tmp_path):
    """Rows from before the ledger knew its clients become the implicit client's; going back folds the
    clients' rows of a day and mode into one, losing no dollar and no lot."""
    import psycopg
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from database import Database, normalize_url
    from database.migrate import alembic_config

    if engine == "postgresql":
        base = request.getfixturevalue("pg_url")
        name = base.rsplit("/", 1)[1] + "_ledger_migration"
        with psycopg.connect(base.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        url = base.rsplit("/", 1)[0] + "/" + name
    else:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    db = Database(normalize_url(url, str(tmp_path)))
    script = ScriptDirectory.from_config(alembic_config(db.url))
    ours = next(rev for rev in script.walk_revisions() if (rev.doc or "").startswith("the cost ledger per client"))
    try:
        with db.engine.begin() as connection:
            config = alembic_config(db.url)
            config.attributes["connection"] = connection
            command.upgrade(config, ours.down_revision)
            connection.execute(text("INSERT INTO cost_ledger (day, mode, cost_usd, lots) VALUES "
                                    "('2026-11-30', 'batch', 1.5, 3), ('2026-11-30', 'sync', 0.25, 1)"))
            command.upgrade(config, ours.revision)
            rows = connection.execute(text("SELECT day, mode, client_id, cost_usd, lots FROM cost_ledger "
                                           "ORDER BY mode")).all()
            assert [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows] == [
                ("2026-11-30", "batch", "default", 1.5, 3), ("2026-11-30", "sync", "default", 0.25, 1)]
            connection.execute(text("INSERT INTO cost_ledger (day, mode, client_id, cost_usd, lots) VALUES "
                                    "('2026-11-30', 'batch', 'auction-a', 2.0, 4)"))
            command.downgrade(config, ours.down_revision)
            folded = connection.execute(text("SELECT mode, cost_usd, lots FROM cost_ledger ORDER BY mode")).all()
            assert [tuple(r) for r in folded] == [("batch", 3.5, 7), ("sync", 0.25, 1)]
    finally:
        db.dispose()
        if engine == "postgresql":
            with psycopg.connect(base.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
