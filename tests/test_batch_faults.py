"""Batch jobs when OpenAI or the photos misbehave, through HTTP with the sandbox, on PostgreSQL and SQLite.

Failed lines, expired and failed batches, unreachable photos, a job past its deadline, shuffled
output. Each test also checks the invariants that must survive any fault: one stored
description per lot and language, and no OpenAI batch created twice for the same shard.
"""
from __future__ import annotations

import threading

from sqlalchemy.exc import OperationalError

from tests.support.batches import (assert_no_batch_created_twice, assert_one_result_per_language, distinct_lots,
                                   job_row, lot_rows, result_counts, shards, wait_until)
from tests.support.client import Api, lot

EN_DE = ["en", "de"]


def _start(make_live, **settings):
    live = make_live(**settings)
    return Api(live.url), live.app.extensions["genservice"]


def _lot_ids(lots):
    return [item["lot_id"] for item in lots]


def _results_by_lot(api: Api, job_id: str) -> dict[str, dict]:
    download = api.get(f"/api/v1/batch-results/{job_id}/download", sign=job_id)
    assert download.status_code == 200, download.text
    return {item["lot_id"]: item for item in download.json()["results"]["lots"]}


# ---- failed lines -------------------------------------------------------------------------------

def test_failed_line_is_retried_once_in_a_new_shard_then_the_lot_fails_with_a_reason(make_live, image_server,
                                                                                    sandbox):
    sandbox.configure(batch_fail_custom_ids=["lot-1"])
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 4)
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "completed"
    assert status["progress"]["failed_lots"] == 1 and status["progress"]["processed_lots"] == 3
    by_lot = _results_by_lot(api, job_id)
    assert by_lot["f-1"]["status"] == "failed"
    assert "vision failed" in by_lot["f-1"]["error"] and "HTTP 500" in by_lot["f-1"]["error"]
    vision = shards(rt.db, job_id, "vision")
    assert [(s.shard, s.attempt, s.request_count) for s in vision] == [(0, 0, 4), (1, 1, 1)]
    assert [s.request_count for s in shards(rt.db, job_id, "translation")] == [3]
    assert_one_result_per_language(rt.db, job_id, ["f-0", "f-2", "f-3"], EN_DE)
    assert_no_batch_created_twice(sandbox.stats())
    assert api.results(job_id).json()["processing_summary"]["failed_lots"] == 1


def test_lines_failing_in_every_batch_fail_the_job_after_one_retry(make_live, image_server, sandbox):
    sandbox.configure(batch_line_failure_rate=1.0)
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 3)
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "failed" and status["error_message"]
    assert status["progress"]["failed_lots"] == 3
    assert all(item["error"].startswith("vision failed") for item in _results_by_lot(api, job_id).values())
    assert [(s.attempt, s.request_count) for s in shards(rt.db, job_id)] == [(0, 3), (1, 3)]
    assert sandbox.stats()["batches_created"] == 2
    assert_no_batch_created_twice(sandbox.stats())
    assert not result_counts(rt.db, job_id)


# ---- expired and failed batches -------------------------------------------------------------------

def test_expired_batch_keeps_its_completed_lines_and_resubmits_the_rest_once(make_live, image_server, sandbox):
    sandbox.configure(batch_outcome="expired", batch_outcome_count=1, batch_expire_completed_fraction=0.5)
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 6)
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "completed" and status["progress"]["processed_lots"] == 6
    vision = shards(rt.db, job_id, "vision")
    assert [(s.shard, s.attempt, s.openai_status, s.request_count) for s in vision] == \
        [(0, 0, "expired", 6), (1, 1, "completed", 3)]
    stats = sandbox.stats()
    assert stats["batch_lines_executed"] == 3 + 3 + 6  # half of the first, the other half, then translations
    assert_no_batch_created_twice(stats)
    assert_one_result_per_language(rt.db, job_id, _lot_ids(lots), EN_DE)


def test_lines_unanswered_by_two_expired_batches_fail_with_the_expiry_as_reason(make_live, image_server, sandbox):
    sandbox.configure(batch_outcome="expired", batch_outcome_count=2, batch_expire_completed_fraction=0.5)
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 6)
    job_id = api.generate(lots, languages=["en"]).json()["job_id"]

    status = api.wait_status(job_id)

    # 3 of 6 ran in the first batch, 1 of the 3 resubmitted in the second: 2 lots never got an answer
    assert status["status"] == "completed"
    assert status["progress"]["processed_lots"] == 4 and status["progress"]["failed_lots"] == 2
    failed = [item for item in _results_by_lot(api, job_id).values() if item["status"] == "failed"]
    assert len(failed) == 2 and all("expired" in item["error"] for item in failed)
    assert [s.request_count for s in shards(rt.db, job_id, "vision")] == [6, 3]
    assert_no_batch_created_twice(sandbox.stats())
    assert sum(result_counts(rt.db, job_id).values()) == 4


def test_failed_batch_is_resubmitted_once_in_a_new_batch(make_live, image_server, sandbox):
    sandbox.configure(batch_outcome="failed", batch_outcome_count=1)
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 3)
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "completed" and status["progress"]["processed_lots"] == 3
    vision = shards(rt.db, job_id, "vision")
    assert [(s.attempt, s.openai_status) for s in vision] == [(0, "failed"), (1, "completed")]
    assert_no_batch_created_twice(sandbox.stats())
    assert_one_result_per_language(rt.db, job_id, _lot_ids(lots), EN_DE)


def test_batch_failing_twice_fails_every_lot_with_the_batch_error(make_live, image_server, sandbox):
    sandbox.configure(batch_outcome="failed", batch_outcome_count=2)
    api, rt = _start(make_live)
    job_id = api.generate(distinct_lots(image_server, 3), languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "failed" and status["progress"]["failed_lots"] == 3
    errors = [item["error"] for item in _results_by_lot(api, job_id).values()]
    assert all("the OpenAI batch failed" in error and "token limit" in error for error in errors), errors
    assert sandbox.stats()["batches_created"] == 2
    assert_no_batch_created_twice(sandbox.stats())


def test_batch_whose_creation_answer_was_lost_is_found_again_even_though_it_failed(make_live, image_server, sandbox,
                                                                                    monkeypatch):
    import workers.jobs
    from services.errors import UpstreamError

    monkeypatch.setattr(workers.jobs, "BACKOFF_SECONDS", 0.1)
    sandbox.configure(batch_outcome="failed", batch_outcome_count=1)
    api, rt = _start(make_live)
    real_create = rt.ai.create_batch
    lost = []

    def create_batch(input_file_id, metadata):
        batch = real_create(input_file_id, metadata)
        if not lost:  # OpenAI created it, but the answer never arrived (a timeout, or a crash right here)
            lost.append(batch.id)
            raise UpstreamError("OpenAI API request timed out", timeout=True, api="batch")
        return batch

    rt.ai.create_batch = create_batch
    lots = distinct_lots(image_server, 3)
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    assert api.wait_status(job_id)["status"] == "completed"

    vision = shards(rt.db, job_id, "vision")
    assert [(s.attempt, s.batch_id == lost[0], s.openai_status) for s in vision] == \
        [(0, True, "failed"), (1, False, "completed")]
    assert_no_batch_created_twice(sandbox.stats())
    assert_one_result_per_language(rt.db, job_id, _lot_ids(lots), EN_DE)


# ---- photos --------------------------------------------------------------------------------------

def test_lot_whose_photos_are_all_unreachable_fails_with_a_reason_while_the_job_goes_on(make_live, image_server,
                                                                                       sandbox):
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 3)
    lots[1] = lot("f-1", [image_server.url("/missing/a.jpg"), image_server.url("/missing/b.jpg")])
    job_id = api.generate(lots, languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "completed" and status["progress"]["failed_lots"] == 1
    broken = _results_by_lot(api, job_id)["f-1"]
    assert broken["status"] == "failed" and "not enough usable images: 0 of 2" in broken["error"]
    assert broken["missing_images"] == [image_server.url("/missing/a.jpg"), image_server.url("/missing/b.jpg")]
    assert [s.request_count for s in shards(rt.db, job_id, "vision")] == [2]
    assert_one_result_per_language(rt.db, job_id, ["f-0", "f-2"], EN_DE)


# ---- deadline ------------------------------------------------------------------------------------

def test_watchdog_fails_an_overdue_job_and_every_lot_carries_a_reason(make_live, image_server, sandbox):
    sandbox.configure(batch_in_progress_seconds=120)
    # fractions of an hour are accepted: 0.0003 h is about a second
    api, rt = _start(make_live, JOB_DEADLINE_HOURS="0.0003", JOB_DEADLINE_MARGIN_HOURS="0.0")
    job_id = api.generate(distinct_lots(image_server, 3), languages=EN_DE).json()["job_id"]

    status = api.wait_status(job_id, timeout=30)

    assert status["status"] == "failed"
    assert "deadline" in status["error_message"]
    lots = _results_by_lot(api, job_id).values()
    assert all(item["status"] == "failed" and "deadline" in item["error"] for item in lots)
    wait_until(lambda: sandbox.stats()["batches_cancelled"] == 1, 20, "the running OpenAI batch was not cancelled")
    wait_until(lambda: all(s.status == "cancelled" for s in shards(rt.db, job_id)), 20, "open shards stay open")


def test_job_failed_by_the_watchdog_ends_with_its_final_counts_in_the_same_commit(make_live, image_server, sandbox,
                                                                                  monkeypatch):
    from sqlalchemy import event, update

    from database.models import BatchJob
    from services import webhooks
    from services.clock import utcnow

    api, rt = _start(make_live)
    real_create = rt.ai.create_batch

    def create_batch(input_file_id, metadata):
        if metadata["kind"] == "translation":  # vision answers at once, translation never does
            sandbox.configure(batch_in_progress_seconds=120)
        return real_create(input_file_id, metadata)

    rt.ai.create_batch = create_batch
    seen_at_commit = []
    real_enqueue = webhooks.enqueue_deliveries

    def enqueue_deliveries(session, job, *args):
        def snapshot(_session):
            with rt.db.session() as reader:  # what any other reader (the webhook sender) sees at this instant
                row = reader.get(BatchJob, job.id)
                seen_at_commit.append((row.status, row.processed_lots, row.failed_lots))
        event.listen(session, "after_commit", snapshot, once=True)
        return real_enqueue(session, job, *args)

    monkeypatch.setattr(webhooks, "enqueue_deliveries", enqueue_deliveries)
    job_id = api.generate(distinct_lots(image_server, 3), languages=EN_DE).json()["job_id"]
    wait_until(lambda: [s.status for s in shards(rt.db, job_id, "translation")] == ["submitted"], 30,
               "the translation batch to start")
    assert api.status(job_id).json()["progress"]["processed_lots"] == 3  # described, not yet translated
    with rt.db.transaction() as session:
        session.execute(update(BatchJob).where(BatchJob.id == job_id).values(deadline_at=utcnow()))

    status = api.wait_status(job_id)

    assert status["status"] == "failed"
    assert (status["progress"]["processed_lots"], status["progress"]["failed_lots"]) == (0, 3)
    # the snapshot is taken by the committing thread just after its commit, which this thread may see first
    wait_until(lambda: seen_at_commit, 10, "the reader's snapshot at the ending's commit")
    assert seen_at_commit == [("failed", 0, 3)]


# ---- shuffled output -----------------------------------------------------------------------------

def test_shuffled_batch_output_gives_each_lot_its_own_description(make_live, image_server, sandbox):
    api, rt = _start(make_live)
    lots = distinct_lots(image_server, 8, photos=3)
    job_id = api.generate(lots, languages=["en"]).json()["job_id"]
    assert api.wait_status(job_id)["status"] == "completed"
    batch = {lot_id: item["descriptions"][0]["damages"] for lot_id, item in _results_by_lot(api, job_id).items()}

    direct = {}
    for item in lots:
        answer = api.generate([item], languages=["en"])
        assert answer.status_code == 200, answer.text
        direct[item["lot_id"]] = answer.json()["lots"][0]["descriptions"][0]["damages"]

    assert len(set(batch.values())) >= 4, "the sandbox should describe these lots differently"
    assert batch == direct


def test_cancelling_a_direct_job_drops_the_calls_not_yet_started(make_live, image_server, sandbox):
    sandbox.configure(vision_latency=2.0)
    api, rt = _start(make_live, BATCH_STRATEGY="direct", DIRECT_CONCURRENCY=1, WORKER_LEASE_SECONDS=1)
    job_id = api.generate(distinct_lots(image_server, 2)).json()["job_id"]
    wait_until(lambda: sandbox.stats()["responses_vision_calls"] == 1, 20, "the first call to start")

    assert api.cancel(job_id).status_code == 200
    wait_until(lambda: job_row(rt.db, job_id).stage == "done", 20, "the cancelled job to be handed back")
    rt.worker.jobs.pool.submit(lambda: None).result(timeout=20)  # the pool is FIFO: a queued call ran before this

    assert sandbox.stats()["responses_vision_calls"] == 1


# ---- worker robustness ---------------------------------------------------------------------------

def test_database_error_while_idle_does_not_stop_the_worker(make_live, image_server, sandbox, monkeypatch):
    from workers.loop import Worker

    real = Worker._next_job_due
    failed = threading.Event()

    def flaky(self):
        if not failed.is_set():
            failed.set()
            raise OperationalError("SELECT min(next_run_at)", {}, Exception("server closed the connection"))
        return real(self)

    monkeypatch.setattr(Worker, "_next_job_due", flaky)
    api, rt = _start(make_live)
    wait_until(failed.is_set, 10, "the worker never looked for due work")
    job_id = api.generate(distinct_lots(image_server, 2)).json()["job_id"]

    assert api.wait_status(job_id, timeout=30)["status"] == "completed"
    assert rt.worker.alive


def test_tokens_of_unusable_answers_are_counted(make_live, image_server, sandbox):
    # a non-reasoning model with a tiny output budget: every vision answer comes back incomplete
    api, rt = _start(make_live, OPENAI_MODEL_VISION="gpt-4.1-mini", OPENAI_MAX_TOKENS="16")
    job_id = api.generate(distinct_lots(image_server, 2)).json()["job_id"]

    status = api.wait_status(job_id)

    assert status["status"] == "failed" and status["progress"]["failed_lots"] == 2
    assert all("vision failed" in lot.error_message for lot in lot_rows(rt.db, job_id))
    assert status["token_usage"]["input_tokens"] > 0 and status["token_usage"]["output_tokens"] > 0
