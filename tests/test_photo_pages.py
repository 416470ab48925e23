"""A job's photo checks shared by every process: pages of lots claimed through their leases.

Two runtimes on one database stand for two processes (or instances); their job runners are driven
by hand so that each step can be seen: the owner of the job and a helper that holds no job lease.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

import workers.jobs
from database.models import BatchJob, BatchLot
from tests.support.batches import distinct_lots
from tests.support.client import body_signature, header_signature
from workers import leases
from workers.jobs import PHOTO_WAIT_SECONDS, JobRunner


def submit(app, lots) -> str:
    answer = app.test_client().post("/api/v1/generate-descriptions", json={
        "signature": body_signature(lots), "version": "1.0.0", "languages": ["en"], "lots": lots})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()["job_id"]


def lots_of(db, job_id: str) -> list[BatchLot]:
    with db.session() as session:
        return session.scalars(select(BatchLot).where(BatchLot.job_id == job_id).order_by(BatchLot.seq)).all()


def job_of(db, job_id: str) -> BatchJob:
    with db.session() as session:
        return session.get(BatchJob, job_id)


def test_photo_pages_of_a_held_job_are_shared_with_a_process_that_does_not_hold_it(
        make_app, image_server, monkeypatch):
    monkeypatch.setattr(workers.jobs, "IMAGE_PAGE", 3)
    a, b = make_app(WORKER_ENABLED=False), make_app(WORKER_ENABLED=False)
    rt_a, rt_b = a.extensions["genservice"], b.extensions["genservice"]
    lots = distinct_lots(image_server, 7, prefix=f"pages{uuid.uuid4().hex[:8]}", photos=1)
    job_id = submit(a, lots)
    owner, helper = JobRunner(rt_a, "owner-a"), JobRunner(rt_b, "helper-b")
    try:
        assert owner.claim() == [job_id]
        owner.hold(job_id)
        owner.stage_queued(job_of(rt_a.db, job_id))

        # the helper holds no lease on the job, yet checks its first page
        assert helper.help_with_photos() is True
        assert [lot.status for lot in lots_of(rt_a.db, job_id)] == ["ready"] * 3 + ["pending"] * 4
        assert job_of(rt_a.db, job_id).lease_owner == "owner-a"

        # the owner takes the next page; batch-status shows the stage's progress
        assert owner.stage_images(job_of(rt_a.db, job_id)) is None
        status = b.test_client().get(f"/api/v1/batch-status/{job_id}", headers={"X-Signature": header_signature(job_id)})
        details = status.get_json()["processing_details"]
        assert (details["current_stage"], details["images_checked_lots"]) == ("image_validation", 6)

        # a page held by a (still living) helper is not checked twice
        with rt_b.db.session() as session:
            [held] = leases.claim(session, BatchLot, (BatchLot.job_id == job_id) & (BatchLot.status == "pending"),
                                  BatchLot.seq, 3, "helper-b", 30)
        assert owner.stage_images(job_of(rt_a.db, job_id)) == PHOTO_WAIT_SECONDS
        assert job_of(rt_a.db, job_id).stage == "images"
        assert helper.help_with_photos() is False  # nothing free is left to help with

        # once the helper's lease is gone (it died, or let go), the owner checks the lot and moves on
        with rt_b.db.session() as session:
            leases.release(session, BatchLot, [held], "helper-b")
        assert owner.stage_images(job_of(rt_a.db, job_id)) is None
        assert owner.stage_images(job_of(rt_a.db, job_id)) is None
        assert job_of(rt_a.db, job_id).stage == "vision"
        found = lots_of(rt_a.db, job_id)
        assert [lot.status for lot in found] == ["ready"] * 7
        assert all(lot.lease_owner is None for lot in found)
        for item in lots:  # every photo checked once, by one process or the other
            path = item["images"][0]["url"].split(str(image_server.port), 1)[1]
            assert [method for method, p in image_server.requests if p == path] == ["HEAD"]
    finally:
        owner.close()
        helper.close()


def test_a_helper_whose_page_was_taken_over_writes_nothing(make_app, image_server, monkeypatch):
    monkeypatch.setattr(workers.jobs, "IMAGE_PAGE", 2)
    a = make_app(WORKER_ENABLED=False)
    rt = a.extensions["genservice"]
    job_id = submit(a, distinct_lots(image_server, 2, prefix="takeover", photos=1))
    owner, helper = JobRunner(rt, "owner-a"), JobRunner(rt, "helper-b")
    try:
        assert owner.claim() == [job_id]
        owner.hold(job_id)
        owner.stage_queued(job_of(rt.db, job_id))
        real = rt.images.check_many_lots

        def slow_then_taken(lots_urls, host_limit=None):
            checks = real(lots_urls, host_limit=host_limit)
            # while the helper checked, its lease lapsed and the owner took the page and failed it
            with rt.db.transaction() as session:
                for row in session.scalars(select(BatchLot).where(BatchLot.job_id == job_id)):
                    row.lease_owner, row.status, row.error_message = "owner-a", "failed", "decided elsewhere"
            return checks

        monkeypatch.setattr(rt.images, "check_many_lots", slow_then_taken)
        assert helper.help_with_photos() is True
        assert {(lot.status, lot.error_message) for lot in lots_of(rt.db, job_id)} == {("failed", "decided elsewhere")}
    finally:
        owner.close()
        helper.close()


def test_the_owner_leaves_the_photos_to_helpers_while_it_has_lots_to_send(make_app, image_server, monkeypatch):
    """While another process holds a page of the job's photos and the lots checked so far make a full
    vision shard, the owner sends that shard rather than check photos itself; with nothing to send, or
    nobody helping, it checks photos."""
    monkeypatch.setattr(workers.jobs, "IMAGE_PAGE", 3)
    a = make_app(WORKER_ENABLED=False, BATCH_SHARD_MAX_REQUESTS=2)
    rt = a.extensions["genservice"]
    lots = distinct_lots(image_server, 7, prefix=f"leave{uuid.uuid4().hex[:8]}", photos=1)
    job_id = submit(a, lots)
    owner = JobRunner(rt, "owner-a")
    try:
        assert owner.claim() == [job_id]
        owner.hold(job_id)
        owner.stage_queued(job_of(rt.db, job_id))
        assert owner.stage_images(job_of(rt.db, job_id)) is None  # nothing to send yet: it checks a page
        assert [lot.status for lot in lots_of(rt.db, job_id)] == ["ready"] * 3 + ["pending"] * 4
        with rt.db.session() as session:  # a helper elsewhere is checking the next page
            held = leases.claim(session, BatchLot, (BatchLot.job_id == job_id) & (BatchLot.status == "pending"),
                                BatchLot.seq, 3, "helper-b", 30)
        assert len(held) == 3
        assert owner.stage_images(job_of(rt.db, job_id)) == PHOTO_WAIT_SECONDS
        after = lots_of(rt.db, job_id)
        assert [lot.vision_shard for lot in after[:2]] == [0, 0]  # a full shard of two went to OpenAI
        assert (after[6].status, after[6].lease_owner) == ("pending", None)  # and no page was taken
        with rt.db.session() as session:  # the helper went away: its page is free again
            leases.release(session, BatchLot, held, "helper-b")
        while job_of(rt.db, job_id).stage == "images":
            owner.stage_images(job_of(rt.db, job_id))
        assert not [lot for lot in lots_of(rt.db, job_id) if lot.status == "pending"]
    finally:
        owner.close()


def test_an_idle_process_joins_a_photo_stage_at_once_whatever_its_poll_interval(
        pg_database_url, sandbox, image_server, tmp_path, monkeypatch):
    """Two processes with their workers, both sleeping out a 30 s poll: the job's start wakes the one
    that does not hold it (a PostgreSQL notification), and it takes pages of the job's photos within a
    second or so. Before, it joined only at its next poll, and the owner checked the photos alone."""
    import time

    from app import create_app
    from tests.conftest import base_config
    from tests.support.client import lot

    monkeypatch.setattr(workers.jobs, "IMAGE_PAGE", 2)
    config = {**base_config(pg_database_url, sandbox.url, tmp_path), "WORKER_POLL_INTERVAL": "30"}
    a, b = create_app(config), create_app(config)
    rt_a, rt_b = a.extensions["genservice"], b.extensions["genservice"]
    try:
        assert rt_b.worker is not None and rt_b.worker.alive
        time.sleep(1.5)  # both job loops have looked for work, found none and gone to sleep
        prefix = uuid.uuid4().hex[:8]
        # each photo answers after 0.3 s: one process alone needs about 4.5 s for the 15 pages
        job_id = submit(a, [lot(f"{prefix}-{i}", [image_server.url(f"/slow/0.3/{prefix}-{i}.jpg")])
                            for i in range(30)])
        started = time.monotonic()
        helped_after = None
        while time.monotonic() - started < 10 and helped_after is None:
            with rt_a.db.session() as session:
                if session.scalar(select(BatchLot.id).where(BatchLot.job_id == job_id,
                                                            BatchLot.lease_owner == rt_b.instance_id).limit(1)):
                    helped_after = time.monotonic() - started
            time.sleep(0.05)
        assert helped_after is not None and helped_after < 3.0, helped_after
    finally:
        rt_a.close()
        rt_b.close()


def test_a_host_gets_no_more_than_the_deployment_wide_cap_from_all_processes_together(make_app, monkeypatch):
    """IMAGE_HOST_CONCURRENCY_TOTAL=4 with two live workers: each process checks at most 2 photos of one host at a
    time, so the host never has more than 4 in flight, although either process alone may hold 8 (before, each
    process held its own cap of 8 and the host had up to 16)."""
    import threading

    from database.models import WorkerHeartbeat
    from services.clock import utcnow
    from tests.support.client import lot
    from tests.support.image_server import ImageServer

    monkeypatch.setattr(workers.jobs, "IMAGE_PAGE", 12)
    settings = {"WORKER_ENABLED": False, "IMAGE_HOST_CONCURRENCY": 8, "IMAGE_HOST_CONCURRENCY_TOTAL": 4}
    a, b = make_app(**settings), make_app(**settings)
    rt_a, rt_b = a.extensions["genservice"], b.extensions["genservice"]
    with rt_a.db.transaction() as session:  # the two processes' heartbeats, and one long dead
        session.query(WorkerHeartbeat).delete()
        for worker_id, seconds_ago in (("owner-a", 1), ("helper-b", 2), ("gone-c", 3600)):
            session.add(WorkerHeartbeat(worker_id=worker_id, hostname="test", pid=1,
                                        last_beat_at=utcnow() - timedelta(seconds=seconds_ago)))
    prefix = uuid.uuid4().hex[:8]
    image_server = ImageServer().start()  # its own, so that the most it held at once is this test's alone
    job_id = submit(a, [lot(f"{prefix}-{i}", [image_server.url(f"/slow/0.3/{prefix}-{i}.jpg")]) for i in range(24)])
    owner, helper = JobRunner(rt_a, "owner-a"), JobRunner(rt_b, "helper-b")
    try:
        assert owner.claim() == [job_id]
        owner.hold(job_id)
        owner.stage_queued(job_of(rt_a.db, job_id))
        assert owner._host_share() == helper._host_share() == 2
        checked: dict[str, int] = {}
        runs = [threading.Thread(target=lambda: checked.__setitem__("owner", owner.check_photo_page(job_id, owner.lease))),
                threading.Thread(target=lambda: checked.__setitem__("helper", helper.check_photo_page(job_id)))]
        for thread in runs:
            thread.start()
        for thread in runs:
            thread.join(30)
        assert checked == {"owner": 12, "helper": 12}
        assert 2 < image_server.max_active <= 4, image_server.max_active  # both at once, within the total
        assert [item.status for item in lots_of(rt_a.db, job_id)] == ["ready"] * 24
    finally:
        owner.close()
        helper.close()
        image_server.stop()
