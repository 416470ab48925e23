"""The job dashboard: off without ADMIN_TOKEN, a CSRF-protected login, job data, paging and safe HTML."""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update

from database import lot_pages
from database.models import BatchJob, BatchLot, BatchResult, WebhookDelivery
from services import clients
from services import dashboard as views
from services import jobs
from services.clock import utcnow
from services.lots import GenerateRequest, LotInput
from tests.support.client import TEST_KEY, Api, lot

TOKEN = "operator-token-for-tests-0123456789"
SECRET = "session-secret-for-tests-0123456789"


def login(http: requests.Session, base: str, token: str = TOKEN, next_path: str | None = None) -> requests.Response:
    form = http.get(f"{base}/dashboard/login", timeout=10)
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    data = {"csrf_token": csrf, "token": token}
    if next_path is not None:
        data["next"] = next_path
    return http.post(f"{base}/dashboard/login", data=data, allow_redirects=False, timeout=10)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def board(make_live):
    """A live app with the dashboard on and no background worker (jobs stay as the test leaves them)."""
    return make_live(ADMIN_TOKEN=TOKEN, SESSION_SECRET=SECRET, WORKER_ENABLED="false")


@pytest.fixture
def admin(board) -> requests.Session:
    http = requests.Session()
    assert login(http, board.url).status_code == 302
    return http


def create_job(app, count: int, languages=("en", "de"), webhook: str | None = None, client_id: str = "default") -> str:
    rt = app.extensions["genservice"]
    lots = [LotInput(lot_id=f"lot-{i}", additional_info="", image_urls=[f"http://127.0.0.1:9/{i}.jpg"],
                     webhook=webhook) for i in range(count)]
    return jobs.create_job(rt.db, GenerateRequest(version="1.0.0", languages=list(languages), lots=lots),
                           rt.settings, client_id=client_id).id


def finish_lots(app, job_id: str, texts: dict[str, str], failed: set[int] = frozenset()) -> None:
    """Mark every lot completed with ``texts`` (language -> HTML), except the ``failed`` sequence numbers."""
    db = app.extensions["genservice"].db
    with db.transaction() as session:
        lot_pages.expand(session, job_id)  # the lots become rows when a worker takes the job up
        lots = session.scalars(select(BatchLot).where(BatchLot.job_id == job_id)).all()
        for item in lots:
            if item.seq in failed:
                item.status, item.error_message = "failed", f"No usable photos for {item.lot_id}"
                continue
            item.status, item.processed_images = "completed", 1
            for language, html in texts.items():
                session.add(BatchResult(job_id=job_id, lot_pk=item.id, language=language, damages=html))
        session.execute(update(BatchJob).where(BatchJob.id == job_id).values(
            status="completed", stage="done", completed_at=utcnow(), processed_lots=len(lots) - len(failed),
            failed_lots=len(failed), input_tokens=1200, output_tokens=345))


# ---- off, login, logout ------------------------------------------------------------------------

def test_dashboard_is_not_found_without_admin_token(make_live):
    live = make_live(WORKER_ENABLED="false")
    for path in ("/dashboard", "/dashboard/login", "/dashboard/api/jobs", "/dashboard/jobs/x"):
        assert requests.get(f"{live.url}{path}", timeout=10, allow_redirects=False).status_code == 404, path
    assert "/dashboard" not in requests.get(f"{live.url}/", timeout=10).text


def test_pages_send_strangers_to_the_login_and_the_feed_says_401(board):
    page = requests.get(f"{board.url}/dashboard?page=2", timeout=10, allow_redirects=False)
    assert page.status_code == 302
    assert page.headers["Location"].endswith("/dashboard/login?next=/dashboard?page%3D2")
    feed = requests.get(f"{board.url}/dashboard/api/jobs", timeout=10)
    assert feed.status_code == 401 and feed.json()["code"] == "LOGIN_REQUIRED"


def test_login_form_carries_security_headers_and_is_not_cached(board):
    form = requests.get(f"{board.url}/dashboard/login", timeout=10)
    assert form.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in form.headers[
        "Content-Security-Policy"]
    assert form.headers["Cache-Control"] == "no-store"


def test_login_with_the_token_opens_the_dashboard_with_a_protected_cookie(board):
    http = requests.Session()
    answer = login(http, board.url)
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "genservice_dashboard=" in cookie
    assert http.get(f"{board.url}/dashboard", timeout=10).status_code == 200


def test_wrong_token_is_refused(board):
    http = requests.Session()
    answer = login(http, board.url, token=TOKEN[:-1] + "x")
    assert answer.status_code == 401 and "not valid" in answer.text
    assert http.get(f"{board.url}/dashboard", timeout=10, allow_redirects=False).status_code == 302


def test_login_without_the_form_csrf_token_is_refused(board):
    http = requests.Session()
    http.get(f"{board.url}/dashboard/login", timeout=10)
    answer = http.post(f"{board.url}/dashboard/login", data={"token": TOKEN, "csrf_token": "forged"}, timeout=10,
                       allow_redirects=False)
    assert answer.status_code == 400
    assert http.get(f"{board.url}/dashboard", timeout=10, allow_redirects=False).status_code == 302


def test_login_only_returns_to_dashboard_paths(board):
    assert login(requests.Session(), board.url, next_path="/dashboard/jobs/abc").headers["Location"] == \
        "/dashboard/jobs/abc"
    for target in ("https://elsewhere.example/", "//elsewhere.example/dashboard", "/docs", "/dashboard.example"):
        assert login(requests.Session(), board.url, next_path=target).headers["Location"] == "/dashboard", target


def test_logout_needs_the_csrf_token_and_ends_the_session(board, admin):
    page = admin.get(f"{board.url}/dashboard", timeout=10)
    assert admin.post(f"{board.url}/dashboard/logout", data={"csrf_token": "forged"}, timeout=10).status_code == 400
    assert admin.get(f"{board.url}/dashboard", timeout=10, allow_redirects=False).status_code == 200
    out = admin.post(f"{board.url}/dashboard/logout", data={"csrf_token": csrf_of(page.text)}, timeout=10,
                     allow_redirects=False)
    assert out.status_code == 302 and out.headers["Location"] == "/dashboard/login"
    assert admin.get(f"{board.url}/dashboard", timeout=10, allow_redirects=False).status_code == 302


def test_a_new_admin_token_signs_out_existing_sessions(make_app):
    first = make_app(ADMIN_TOKEN=TOKEN, SESSION_SECRET=SECRET, WORKER_ENABLED="false")
    second = make_app(ADMIN_TOKEN=TOKEN + "-rotated", SESSION_SECRET=SECRET, WORKER_ENABLED="false")
    client = first.test_client()
    csrf = csrf_of(client.get("/dashboard/login").text)
    assert client.post("/dashboard/login", data={"csrf_token": csrf, "token": TOKEN}).status_code == 302
    assert client.get("/dashboard").status_code == 200
    cookie = client.get_cookie("genservice_dashboard", path="/")
    other = second.test_client()
    other.set_cookie("genservice_dashboard", cookie.value)
    assert other.get("/dashboard").status_code == 302


def test_session_cookie_holds_a_keyed_fingerprint_not_the_token(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, SESSION_SECRET=SECRET, WORKER_ENABLED="false")
    client = app.test_client()
    csrf = csrf_of(client.get("/dashboard/login").text)
    client.post("/dashboard/login", data={"csrf_token": csrf, "token": TOKEN})
    cookie = client.get_cookie("genservice_dashboard", path="/").value
    stored = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert set(stored) == {"admin", "csrf", "_permanent"}
    assert TOKEN not in str(stored) and hashlib.sha256(TOKEN.encode()).hexdigest() not in str(stored)


def test_without_session_secret_a_random_key_is_used_and_logged(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="app.dashboard"):
        first = make_app(ADMIN_TOKEN=TOKEN, WORKER_ENABLED="false")
        second = make_app(ADMIN_TOKEN=TOKEN, WORKER_ENABLED="false")
    assert any("SESSION_SECRET is not set" in r.getMessage() for r in caplog.records)
    assert first.config["SECRET_KEY"] and first.config["SECRET_KEY"] != second.config["SECRET_KEY"]
    client = first.test_client()
    csrf = csrf_of(client.get("/dashboard/login").text)
    client.post("/dashboard/login", data={"csrf_token": csrf, "token": TOKEN})
    other = second.test_client()
    other.set_cookie("genservice_dashboard", client.get_cookie("genservice_dashboard", path="/").value)
    assert client.get("/dashboard").status_code == 200 and other.get("/dashboard").status_code == 302


def test_sign_in_attempts_are_rate_limited(make_live):
    live = make_live(ADMIN_TOKEN=TOKEN, SESSION_SECRET=SECRET, WORKER_ENABLED="false", RATELIMIT_ENABLED="true")
    http = requests.Session()
    codes = [login(http, live.url, token="wrong").status_code for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    assert "Too many sign-in attempts" in login(http, live.url).text


# ---- what it shows -----------------------------------------------------------------------------

def test_job_list_shows_progress_stage_tokens_and_webhook_counts(board, admin):
    job_id = create_job(board.app, 3, webhook="http://127.0.0.1:9/hook")
    finish_lots(board.app, job_id, {"en": "<p>Dent.</p>", "de": "<p>Delle.</p>"}, failed={2})
    db = board.app.extensions["genservice"].db
    with db.transaction() as session:
        for index, status in enumerate(("delivered", "delivered", "pending", "failed")):
            session.add(WebhookDelivery(batch_job_id=job_id, webhook_url=f"http://127.0.0.1:9/{index}",
                                        event="batch_job_completed", message_id=f"msg_{index}", status=status))
    other = create_job(board.app, 2)
    feed = admin.get(f"{board.url}/dashboard/api/jobs", timeout=10).json()
    assert [job["id"] for job in feed["jobs"]] == [other, job_id]
    done = feed["jobs"][1]
    assert done["status"] == "completed" and done["completion_percentage"] == 100.0
    assert (done["processed_lots"], done["failed_lots"], done["total_lots"]) == (2, 1, 3)
    assert done["tokens"] == {"input": 1200, "output": 345, "total": 1545, "cached": 0, "reasoning": 0}
    assert done["cost_usd"] == 0.0
    assert done["webhooks"] == {"delivered": 2, "pending": 1, "failed": 1}
    assert feed["jobs"][0]["stage"] == "queued" and feed["jobs"][0]["webhooks"] == {
        "delivered": 0, "pending": 0, "failed": 0}
    assert feed["counts"]["completed"] == 1 and feed["counts"]["pending"] == 1
    page = admin.get(f"{board.url}/dashboard", timeout=10).text
    assert f'data-job-id="{job_id}"' in page and 'aria-valuenow="100.0"' in page
    assert "1,545" in page
    only_pending = admin.get(f"{board.url}/dashboard/api/jobs?status=pending", timeout=10).json()
    assert [job["id"] for job in only_pending["jobs"]] == [other]


def test_job_page_shows_lots_descriptions_and_failed_lot_errors(board, admin):
    job_id = create_job(board.app, 3)
    finish_lots(board.app, job_id, {"en": "<p>Scratched <strong>door</strong>.</p>", "de": "<p>Tür zerkratzt.</p>"},
                failed={1})
    page = admin.get(f"{board.url}/dashboard/jobs/{job_id}", timeout=10)
    assert page.status_code == 200
    assert "<p>Scratched <strong>door</strong>.</p>" in page.text and "<p>Tür zerkratzt.</p>" in page.text
    assert "No usable photos for lot-1" in page.text
    failed_only = admin.get(f"{board.url}/dashboard/jobs/{job_id}?lots=failed", timeout=10).text
    assert failed_only.count('class="lot"') == 1 and 'data-lot-id="lot-1"' in failed_only
    feed = admin.get(f"{board.url}/dashboard/api/jobs/{job_id}", timeout=10).json()
    assert feed["lot_counts"] == {"completed": 2, "failed": 1}


def test_descriptions_are_sanitized_again_and_lot_ids_escaped(board, admin):
    job_id = create_job(board.app, 2, languages=("en",))
    finish_lots(board.app, job_id, {"en": '<p onclick="steal()">Bent hood</p><script>alert(1)</script>'
                                          '<img src=x onerror="steal()"><a href="javascript:x">link</a>'})
    with board.app.extensions["genservice"].db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job_id, BatchLot.seq == 0)
                        .values(lot_id="<b>bold</b>"))
    page = admin.get(f"{board.url}/dashboard/jobs/{job_id}", timeout=10).text
    assert "<p>Bent hood</p>" in page
    for unsafe in ("onclick", "<script>alert", "onerror", "javascript:", "<img", "<b>bold</b>"):
        assert unsafe not in page, unsafe
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


def test_a_fifty_thousand_lot_job_page_renders_one_page_of_lots(board, admin):
    job_id = create_job(board.app, 50_000, languages=("en",))
    first = admin.get(f"{board.url}/dashboard/jobs/{job_id}", timeout=30).text
    assert first.count('class="lot"') == views.LOTS_PER_PAGE == 50
    assert "Page 1 of 1000 (50000 lots)" in first
    last = admin.get(f"{board.url}/dashboard/jobs/{job_id}?page=1000", timeout=30).text
    assert 'data-lot-id="lot-49999"' in last and 'data-lot-id="lot-49949"' not in last
    beyond = admin.get(f"{board.url}/dashboard/jobs/{job_id}?page=5000", timeout=30).text
    assert "Page 1000 of 1000" in beyond


def test_unknown_job_is_not_found_on_page_and_feed(board, admin):
    assert admin.get(f"{board.url}/dashboard/jobs/no-such-job", timeout=10).status_code == 404
    feed = admin.get(f"{board.url}/dashboard/api/jobs/no-such-job", timeout=10)
    assert feed.status_code == 404 and feed.json()["code"] == "JOB_NOT_FOUND"


def test_jobs_list_pages_hold_at_most_one_page_of_jobs(board, admin):
    for _ in range(views.JOBS_PER_PAGE + 2):
        create_job(board.app, 2)
    first = admin.get(f"{board.url}/dashboard/api/jobs", timeout=10).json()
    second = admin.get(f"{board.url}/dashboard/api/jobs?page=2", timeout=10).json()
    assert len(first["jobs"]) == views.JOBS_PER_PAGE and len(second["jobs"]) == 2
    assert first["page"]["has_next"] and not second["page"]["has_next"]
    assert not {job["id"] for job in first["jobs"]} & {job["id"] for job in second["jobs"]}


def test_running_job_reports_its_stage_through_the_feed(make_live, sandbox, image_server):
    sandbox.configure(batch_in_progress_seconds=30)
    live = make_live(ADMIN_TOKEN=TOKEN, SESSION_SECRET=SECRET)
    api = Api(live.url)
    job_id = api.generate([lot(f"r-{i}", [image_server.url(f"/img/r{i}.jpg")]) for i in range(2)]).json()["job_id"]
    api.wait_status(job_id, statuses=("processing",))
    http = requests.Session()
    login(http, live.url)
    job = http.get(f"{live.url}/dashboard/api/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "processing" and job["active"] is True
    assert job["stage"] in ("image_validation", "vision_analysis")


def test_page_numbers_are_clamped():
    assert views.page_of("7", 50, 120).number == 3
    assert views.page_of("-2", 50, 120).number == 1
    assert views.page_of("junk", 50, 120).number == 1
    assert views.page_of(1, 50, 0).as_dict()["count"] == 1


def test_job_page_shows_each_lots_findings_as_a_table(board, admin):
    job_id = create_job(board.app, 2, languages=("en",))
    finish_lots(board.app, job_id, {"en": "<p>x</p>"})
    report = {"findings": [{"part": "front_bumper", "side": "front", "damage_type": "dent", "severity": "severe",
                            "photos": [0], "note": "Pushed <in>."}],
              "no_visible_damage": False, "primary_damage": "front_end", "secondary_damage": None,
              "coverage": {"views_present": ["front"], "views_missing": ["rear", "engine_bay"]}}
    with board.app.extensions["genservice"].db.transaction() as session:
        session.execute(update(BatchLot).where(BatchLot.job_id == job_id, BatchLot.seq == 0).values(findings=report))
    page = admin.get(f"{board.url}/dashboard/jobs/{job_id}", timeout=10).text
    assert page.count('<table class="findings">') == 1
    assert "<td>front bumper</td>" in page and "<td>severe</td>" in page and "Pushed &lt;in&gt;." in page
    assert "front end" in page and "engine bay" in page


# ---- clients -----------------------------------------------------------------------------------

def test_clients_view_shows_keys_limits_queued_lots_jobs_and_cost(board, admin):
    db = board.app.extensions["genservice"].db
    first = clients.add_client(db, "auction-a", "Auction A",
                               limits=clients.ClientLimits(rate_limit_batch="3/minute", max_queued_lots=900))
    rotated = clients.rotate_key(db, "auction-a", timedelta(hours=2))
    paused = clients.add_client(db, "paused-b", "Paused B", reference_scheme=True)
    clients.set_enabled(db, "paused-b", False)
    running = create_job(board.app, 3, client_id="auction-a")
    done = create_job(board.app, 2, client_id="auction-a")
    finish_lots(board.app, done, {"en": "<p>Dent.</p>"})
    with db.transaction() as session:
        session.execute(update(BatchJob).where(BatchJob.id == done).values(cost_usd=0.125))
        session.execute(update(BatchJob).where(BatchJob.id == running).values(processed_lots=1))
    create_job(board.app, 4)  # the implicit client's

    feed = admin.get(f"{board.url}/dashboard/api/clients", timeout=10).json()
    shown = {c["id"]: c for c in feed["clients"]}
    assert list(shown) == ["default", "auction-a", "paused-b"]
    a = shown["auction-a"]
    assert (a["name"], a["enabled"], a["reference_scheme"]) == ("Auction A", True, False)
    assert [k["key_id"] for k in a["keys"]] == [first.key_id, rotated.key_id]
    assert a["keys"][0]["expires_at"] is not None and a["keys"][1]["expires_at"] is None
    assert a["limits"]["rate_limit_batch"] == "3/minute" and a["limits"]["max_queued_lots"] == 900
    assert a["limits"]["rate_limit_sync"] is None
    assert (a["jobs"], a["active_jobs"], a["queued_lots"], a["cost_today_usd"]) == (2, 1, 2, 0.125)
    assert (shown["default"]["jobs"], shown["default"]["queued_lots"], shown["default"]["implicit"]) == (1, 4, True)
    assert (shown["paused-b"]["enabled"], shown["paused-b"]["jobs"]) == (False, 0)
    assert feed["deployment_limits"]["max_queued_lots"] == board.app.extensions["genservice"].settings.max_queued_lots

    page = admin.get(f"{board.url}/dashboard/clients", timeout=10)
    assert page.status_code == 200
    row = page.text.split('data-client-id="auction-a"', 1)[1].split("</tr>", 1)[0]
    assert first.key_id in row and rotated.key_id in row and "until " in row and "no expiry" in row
    assert "rate_limit_batch:\n      <strong>3/minute</strong>" in row and ">2 (1)<" in row and "$<span data-f=\"cost\">0.1250" in row
    paused_row = page.text.split('data-client-id="paused-b"', 1)[1].split("</tr>", 1)[0]
    assert ">disabled<" in paused_row and "X-Signature" in paused_row
    secrets_shown = [value for value in (first.secret, rotated.secret, paused.secret, TEST_KEY) if value in page.text]
    assert not secrets_shown, "the clients view shows no key secret"
    for identity in (clients.get_client(db, board.app.extensions["genservice"].settings, cid)
                     for cid in ("default", "auction-a", "paused-b")):
        assert identity.webhook_secret not in page.text


def test_each_job_row_and_page_names_its_client(board, admin):
    clients.add_client(board.app.extensions["genservice"].db, "listing-c")
    mine = create_job(board.app, 2, client_id="listing-c")
    implicit = create_job(board.app, 2)
    feed = admin.get(f"{board.url}/dashboard/api/jobs", timeout=10).json()
    assert {job["id"]: job["client_id"] for job in feed["jobs"]} == {mine: "listing-c", implicit: "default"}
    page = admin.get(f"{board.url}/dashboard", timeout=10).text
    row = page.split(f'data-job-id="{mine}"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-f="client"><code>listing-c</code></td>' in row
    detail = admin.get(f"{board.url}/dashboard/jobs/{mine}", timeout=10).text
    assert '<code data-f="client">listing-c</code>' in detail


def test_the_clients_view_needs_the_sign_in(board):
    page = requests.get(f"{board.url}/dashboard/clients", timeout=10, allow_redirects=False)
    assert page.status_code == 302 and "/dashboard/login" in page.headers["Location"]
    feed = requests.get(f"{board.url}/dashboard/api/clients", timeout=10)
    assert feed.status_code == 401 and feed.json()["code"] == "LOGIN_REQUIRED"
