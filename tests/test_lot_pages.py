"""A job's lots are accepted as pages of JSON and become rows of batch_lots when a worker takes the job up
(or when the job ends in its queue), on PostgreSQL and SQLite; the migration's downgrade keeps them."""
from __future__ import annotations

import uuid

from alembic import command
from sqlalchemy import func, inspect, select

from database import Database, lot_pages, normalize_url
from database.migrate import alembic_config, upgrade
from database.models import BatchJob, BatchLot, BatchLotPage, WebhookDelivery
from services.lifecycle import LOTS_CANCELLED
from tests.support.client import Api, body_signature
from workers.jobs import JobRunner

URL = "http://127.0.0.1:9/{}.jpg"


def submit(app, lots, languages=("en",)) -> str:
    answer = app.test_client().post("/api/v1/generate-descriptions", json={
        "signature": body_signature(lots), "version": "1.0.0", "languages": list(languages), "lots": lots})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()["job_id"]


def varied_lots(prefix: str) -> list[dict]:
    """Every form the validation normalizes: no info, a null info, photos as bare strings, an empty
    webhook, non-ASCII text and quotes that JSON must escape."""
    return [
        {"lot_id": f"{prefix}-0", "images": [{"url": URL.format("a")}, {"url": URL.format("b")}]},
        {"lot_id": f"{prefix}-1", "additional_info": None, "images": [URL.format("c")], "webhook": ""},
        {"lot_id": f"{prefix}-лот", "additional_info": 'BMW X5, "передний" бампер \\ 🚗',
         "images": [{"url": URL.format("d")}], "webhook": "http://127.0.0.1:9/hook"},
        {"lot_id": f"{prefix}-3", "additional_info": "x" * 10_000, "images": [{"url": URL.format("e?q=1&r=%20")}]},
        {"lot_id": f"{prefix}-4", "additional_info": "", "images": [{"url": URL.format("f")}], "webhook": None},
    ]


def expected_rows(lots: list[dict]) -> list[tuple]:
    def url(item):
        return item["url"] if isinstance(item, dict) else item
    return [(seq, item["lot_id"], item.get("additional_info") or "", [url(i) for i in item["images"]],
             item.get("webhook") or None, "pending") for seq, item in enumerate(lots)]


def rows_of(db, job_id: str) -> list[tuple]:
    with db.session() as session:
        lots = session.scalars(select(BatchLot).where(BatchLot.job_id == job_id).order_by(BatchLot.seq)).all()
        return [(lot.seq, lot.lot_id, lot.additional_info, lot.image_urls, lot.webhook_url, lot.status) for lot in lots]


def page_count(db, job_id: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(BatchLotPage).where(BatchLotPage.job_id == job_id))


def test_lots_are_pages_until_the_worker_starts_the_job(make_app, monkeypatch):
    monkeypatch.setattr(lot_pages, "PAGE_LOTS", 2)
    app = make_app(WORKER_ENABLED=False)
    rt = app.extensions["genservice"]
    lots = varied_lots("pages")
    job_id = submit(app, lots)
    assert rows_of(rt.db, job_id) == [] and page_count(rt.db, job_id) == 3

    runner = JobRunner(rt, "worker-a")
    try:
        assert runner.claim() == [job_id]
        runner.hold(job_id)
        with rt.db.session() as session:
            job = session.get(BatchJob, job_id)
        runner.stage_queued(job)
    finally:
        runner.close()
    assert rows_of(rt.db, job_id) == expected_rows(lots)
    assert page_count(rt.db, job_id) == 0
    with rt.db.session() as session:
        job = session.get(BatchJob, job_id)
        assert (job.stage, job.status, job.total_lots, job.total_images) == ("images", "processing", 5, 6)
        assert lot_pages.expand(session, job_id) == 0  # nothing is written twice


def test_a_job_cancelled_in_its_queue_accounts_for_every_lot_and_owes_its_webhooks(make_live):
    live = make_live(WORKER_ENABLED=False)
    api = Api(live.url)
    lots = varied_lots(f"queued{uuid.uuid4().hex[:6]}")
    job_id = api.generate(lots).json()["job_id"]
    assert api.cancel(job_id).status_code == 200

    db = live.app.extensions["genservice"].db
    assert [row[:5] for row in rows_of(db, job_id)] == [row[:5] for row in expected_rows(lots)]
    with db.session() as session:
        errors = session.scalars(select(BatchLot.error_message).where(BatchLot.job_id == job_id)).all()
        hooks = session.scalars(select(WebhookDelivery.webhook_url).where(WebhookDelivery.batch_job_id == job_id)).all()
    assert errors == [LOTS_CANCELLED] * 5
    assert hooks == ["http://127.0.0.1:9/hook"]
    assert page_count(db, job_id) == 0
    progress = api.status(job_id).json()["progress"]
    assert (progress["processed_lots"], progress["failed_lots"]) == (0, 5)


def test_the_downgrade_writes_the_pages_out_before_dropping_them(make_app, database_url):
    app = make_app(WORKER_ENABLED=False)
    rt = app.extensions["genservice"]
    lots = varied_lots("down")
    job_id = submit(app, lots)
    db = Database(normalize_url(database_url, "instance"))
    try:
        with db.engine.begin() as connection:
            config = alembic_config(db.url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")  # the revision before the pages
        assert "batch_lot_pages" not in inspect(db.engine).get_table_names()
        assert rows_of(rt.db, job_id) == expected_rows(lots)
    finally:
        upgrade(db)
        db.dispose()
    assert "batch_lot_pages" in inspect(rt.db.engine).get_table_names()


def test_pages_are_read_back_in_order_for_any_range(make_app, monkeypatch):
    """What the dashboard shows of a job still in its queue."""
    monkeypatch.setattr(lot_pages, "PAGE_LOTS", 3)
    app = make_app(WORKER_ENABLED=False)
    rt = app.extensions["genservice"]
    lots = [{"lot_id": f"range-{i}", "images": [{"url": URL.format(i)}]} for i in range(10)]
    job_id = submit(app, lots)
    with rt.db.session() as session:
        for offset, limit in ((0, 10), (2, 5), (3, 3), (9, 5), (10, 2)):
            found = lot_pages.read(session, job_id, offset, limit)
            assert [(seq, fields["lot_id"]) for seq, fields in found] == [
                (seq, f"range-{seq}") for seq in range(offset, min(offset + limit, 10))]
