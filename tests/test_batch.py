"""Batch jobs through HTTP with the sandbox: accept, progress, results, download, list, cancel."""
from __future__ import annotations

import json

import pytest

from tests.support.client import CAMRY, Api, header_signature, photo_lots
from tests.support.common import wait_until


def _lots(image_server, count: int, webhook: str | None = None, prefix: str = "b"):
    return photo_lots(image_server, count, prefix, photos=(1, 2), info=CAMRY, webhook=webhook)


def test_whole_job_completes_with_every_language(api: Api, image_server):
    lots = _lots(image_server, 5)
    lots[1]["images"].append({"url": image_server.url("/missing/x.jpg")})
    answer = api.generate(lots, languages=["en", "fr", "de"])
    assert answer.status_code == 201, answer.text
    accepted = answer.json()
    assert accepted["status"] == "accepted" and accepted["processing_mode"] == "batch"
    assert accepted["total_lots"] == 5 and accepted["languages"] == ["en", "fr", "de"]
    assert accepted["webhook_configured"] is False
    status = api.wait_status(accepted["job_id"])
    assert status["status"] == "completed", status
    assert status["progress"]["processed_lots"] == 5 and status["progress"]["completion_percentage"] == 100.0
    assert status["processing_details"]["openai_vision_batch_id"].startswith("batch_")
    assert status["openai_translation_batch_id"] == status["processing_details"]["openai_translation_batch_id"]
    assert status["token_usage"]["total_tokens"] > 0
    results = api.results(accepted["job_id"])
    assert results.status_code == 200
    body = results.json()
    assert body["processing_summary"]["processed_lots"] == 5
    assert body["results"]["processed_lots"] == 5
    lots_out = body["results"]["lots"]
    assert [item["lot_id"] for item in lots_out] == [f"b-{i}" for i in range(5)]
    for item in lots_out:
        assert item["status"] == "completed"
        assert [d["language"] for d in item["descriptions"]] == ["en", "fr", "de"]
    assert lots_out[1]["missing_images"] == [image_server.url("/missing/x.jpg")]


def test_download_is_an_attachment_with_the_same_results(api: Api, image_server):
    job_id = api.generate(_lots(image_server, 3), languages=["en", "es"]).json()["job_id"]
    api.wait_status(job_id)
    download = api.get(f"/api/v1/batch-results/{job_id}/download", sign=job_id)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == f'attachment; filename="batch_results_{job_id}.json"'
    assert json.loads(download.content)["results"]["lots"] == api.results(job_id).json()["results"]["lots"]


def test_results_while_running_are_202(make_live, image_server, sandbox):
    sandbox.configure(batch_in_progress_seconds=30)
    api = Api(make_live().url)
    job_id = api.generate(_lots(image_server, 2)).json()["job_id"]
    api.wait_status(job_id, statuses=("processing",))
    answer = api.results(job_id)
    assert answer.status_code == 202
    assert answer.json()["error"] == "Job not completed" and "completion_percentage" in answer.json()["progress"]


def test_cancel_while_processing_cancels_openai_batch(make_live, image_server, sandbox):
    sandbox.configure(batch_in_progress_seconds=60)
    api = Api(make_live().url)
    job_id = api.generate(_lots(image_server, 3)).json()["job_id"]
    wait_until(lambda: api.status(job_id).json()["processing_details"]["openai_vision_batch_id"], 20,
               "the vision batch to be created", interval=0.1)
    answer = api.cancel(job_id)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    batch_id = api.status(job_id).json()["openai_vision_batch_id"]
    import openai
    client = openai.OpenAI(api_key="x", base_url=sandbox.url)
    wait_until(lambda: client.batches.retrieve(batch_id).status in ("cancelling", "cancelled"), 20,
               "the OpenAI batch to be cancelled", interval=0.1)
    progress = api.status(job_id).json()["progress"]
    assert progress["processed_lots"] + progress["failed_lots"] == progress["total_lots"] == 3
    assert progress["failed_lots"] == 3, "a cancelled lot was counted as both processed and failed"
    again = api.cancel(job_id)
    assert again.status_code == 400
    assert again.json()["error"] == "Job cannot be cancelled" and again.json()["status"] == "cancelled"
    results = api.results(job_id)
    assert results.status_code == 409 and results.json()["status"] == "cancelled"


def test_list_jobs_filters_and_paginates(api: Api, image_server):
    ids = [api.generate(_lots(image_server, 2, prefix=f"l{i}")).json()["job_id"] for i in range(3)]
    for job_id in ids:
        api.wait_status(job_id)
    query = "status=completed&limit=2&offset=0"
    answer = api.get(f"/api/v1/batch-jobs?{query}", sign=query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["pagination"] == {"limit": 2, "offset": 0, "total": 3, "has_more": True}
    assert len(body["jobs"]) == 2 and body["jobs"][0]["status"] == "completed"
    unsigned = api.http.get(f"{api.base}/api/v1/batch-jobs?{query}")
    assert unsigned.status_code == 401
    wrong = api.http.get(f"{api.base}/api/v1/batch-jobs?{query}", headers={"X-Signature": header_signature("limit=2")})
    assert wrong.status_code == 403


def test_unknown_job_is_404_json(api: Api):
    answer = api.status("00000000-0000-0000-0000-000000000000")
    assert answer.status_code == 404 and answer.json()["code"] == "JOB_NOT_FOUND"


def test_batch_size_limit_is_413(make_live, image_server):
    api = Api(make_live(MAX_BATCH_SIZE=3).url)
    answer = api.generate(_lots(image_server, 4))
    assert answer.status_code == 413
    assert answer.json()["details"] == {"provided_lots": 4, "max_allowed": 3}


@pytest.mark.parametrize("strategy", ["direct", "auto"])
def test_direct_strategy_runs_through_the_same_storage(make_live, image_server, strategy):
    api = Api(make_live(BATCH_STRATEGY=strategy).url)
    job_id = api.generate(_lots(image_server, 4), languages=["en", "it"]).json()["job_id"]
    status = api.wait_status(job_id)
    assert status["status"] == "completed"
    assert status["processing_details"]["strategy"] == "direct"
    assert status["processing_details"]["openai_vision_batch_id"] is None
    lots = api.results(job_id).json()["results"]["lots"]
    assert all([d["language"] for d in item["descriptions"]] == ["en", "it"] for item in lots)


def test_list_rejects_an_offset_beyond_any_database_integer(api: Api):
    """Found by the fuzzer: a 27-digit offset reached PostgreSQL and failed with a 500."""
    query = "offset=566311281311543157330018304"
    answer = api.get(f"/api/v1/batch-jobs?{query}", sign=query)
    assert answer.status_code == 400 and answer.json()["details"]["field"] == "offset"


def test_cancel_during_translation_counts_each_lot_once(make_live, image_server):
    """A lot with its English text but no translation is failed by the cancel, not also 'processed'."""
    live = make_live(WORKER_ENABLED="false")
    api = Api(live.url)
    job_id = api.generate(_lots(image_server, 3), languages=["en", "de"]).json()["job_id"]
    runtime = live.app.extensions["genservice"]
    from sqlalchemy import update

    from database import lot_pages
    from database.models import BatchJob, BatchLot
    with runtime.db.transaction() as session:
        assert lot_pages.expand(session, job_id) == 3  # as the worker does when it takes the job up
        session.execute(update(BatchLot).where(BatchLot.job_id == job_id).values(status="described"))
        session.execute(update(BatchJob).where(BatchJob.id == job_id)
                        .values(status="translating", stage="translation", processed_lots=3))
    assert api.cancel(job_id).status_code == 200
    progress = api.status(job_id).json()["progress"]
    assert (progress["processed_lots"], progress["failed_lots"]) == (0, 3)


def test_without_image_validation_every_photo_is_sent_as_given(make_live, image_server):
    api = Api(make_live(BATCH_VALIDATE_IMAGES="false").url)
    lots = _lots(image_server, 3)
    lots[0]["images"].append({"url": image_server.url("/missing/never-fetched.jpg")})
    image_server.clear()
    job_id = api.generate(lots, languages=["en", "de"]).json()["job_id"]
    assert api.wait_status(job_id)["status"] == "completed"
    results = api.results(job_id).json()["results"]["lots"]
    assert [item["processed_images"] for item in results] == [3, 2, 2]
    assert all(item["missing_images"] == [] for item in results)
    assert image_server.requests == []


def test_batches_of_a_second_are_collected_within_seconds_whatever_the_poll_interval(make_live, image_server,
                                                                                     sandbox):
    """WORKER_POLL_INTERVAL=30 is how often a worker looks for work made elsewhere, not how late it may
    notice that a young batch ended: a job whose two batches each take a second ends in a few seconds
    (with a fixed 30 s wait after each submission it took over a minute)."""
    sandbox.configure(batch_in_progress_seconds=1)
    api = Api(make_live(WORKER_POLL_INTERVAL=30).url)
    job_id = api.generate(_lots(image_server, 3), languages=["en", "de"]).json()["job_id"]
    status = api.wait_status(job_id, timeout=15)
    assert status["status"] == "completed", status
    assert sandbox.stats()["batches_created"] == 2


def _stages_and_batches_while_it_runs(api: Api, db, job_id: str, kind: str) -> tuple[dict, set[tuple[str, int]]]:
    """Wait for the job to end while sampling (its stage, its OpenAI batches of ``kind``) every 20 ms."""
    import threading

    from sqlalchemy import func, select

    from database.models import BatchJob, OpenAIBatch

    seen: set[tuple[str, int]] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            with db.session() as session:
                stage = session.scalar(select(BatchJob.stage).where(BatchJob.id == job_id))
                batches = session.scalar(select(func.count()).select_from(OpenAIBatch).where(
                    OpenAIBatch.job_id == job_id, OpenAIBatch.kind == kind))
            seen.add((stage, batches))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        status = api.wait_status(job_id, timeout=40)
    finally:
        stop.set()
        watcher.join(5)
    return status, seen


def test_translation_batches_start_while_the_vision_stage_still_runs(make_live, image_server, sandbox):
    """Six lots in vision shards of two: once a shard's lots are described they make a full translation
    shard, which is sent before the last vision batch has ended; every lot is still done exactly once."""
    sandbox.configure(batch_in_progress_seconds=1)
    live = make_live(BATCH_SHARD_MAX_REQUESTS=2)
    api = Api(live.url)
    job_id = api.generate(_lots(image_server, 6), languages=["en", "de"]).json()["job_id"]
    status, seen = _stages_and_batches_while_it_runs(api, live.app.extensions["genservice"].db, job_id,
                                                     "translation")
    assert status["status"] == "completed", status
    assert any(stage == "vision" and translations > 0 for stage, translations in seen), sorted(seen)
    assert sandbox.stats()["batch_lines_executed"] == 12  # 6 vision lines and 6 translation lines, none twice
    lots_out = api.results(job_id).json()["results"]["lots"]
    assert all([d["language"] for d in item["descriptions"]] == ["en", "de"] for item in lots_out)


def test_vision_batches_start_while_photos_are_still_being_checked(make_live, image_server, sandbox, monkeypatch):
    """Photos checked in pages of two, vision shards of two: the first pages' lots are sent to OpenAI while
    the job is still in its photo stage; every lot is described and translated once."""
    from workers import jobs

    monkeypatch.setattr(jobs, "IMAGE_PAGE", 2)
    sandbox.configure(batch_in_progress_seconds=1)
    live = make_live(BATCH_SHARD_MAX_REQUESTS=2)
    api = Api(live.url)
    job_id = api.generate(_lots(image_server, 8), languages=["en", "de"]).json()["job_id"]
    status, seen = _stages_and_batches_while_it_runs(api, live.app.extensions["genservice"].db, job_id, "vision")
    assert status["status"] == "completed", status
    assert any(stage == "images" and visions > 0 for stage, visions in seen), sorted(seen)
    assert sandbox.stats()["batch_lines_executed"] == 16
