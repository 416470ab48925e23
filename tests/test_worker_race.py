"""Two workers (two runtimes, each with its own instance id) on one PostgreSQL database.

Jobs are shared without any lot being done twice; a worker that stalls past its lease is taken
over, and when it wakes up it writes nothing; a stopped worker's job is carried on; slow calls
renew the lease instead of letting another worker repeat them; a batch being created when the job
is cancelled is still cancelled. PostgreSQL only: the claims rely on its row locks.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from flask import Flask

from app import create_app
from services.clock import utcnow
from tests.conftest import base_config
from tests.support.batches import (assert_no_batch_created_twice, assert_one_result_per_language, distinct_lots,
                                   job_row, shards, wait_until)
from tests.support.client import Api, lot
from tests.support.live import LiveServer

EN_DE = ["en", "de"]
JOBS = 4


@dataclass
class Node:
    """One app process stand-in: its HTTP server, its runtime and its worker."""
    app: Flask
    server: LiveServer

    @property
    def api(self) -> Api:
        return Api(self.server.url)

    @property
    def rt(self):
        return self.app.extensions["genservice"]

    @property
    def runner(self):
        return self.rt.worker.jobs

    def stop(self) -> None:
        self.server.stop()
        self.rt.close()


@pytest.fixture
def make_node(pg_database_url, sandbox, tmp_path):
    nodes: list[Node] = []

    def factory(**overrides) -> Node:
        config = base_config(pg_database_url, sandbox.url, tmp_path)
        config.update({key.upper(): str(value) for key, value in overrides.items()})
        app = create_app(config)
        node = Node(app, LiveServer(app).start())
        nodes.append(node)
        return node

    yield factory
    for node in reversed(nodes):
        if node.rt.worker is not None and node.rt.worker.alive:
            node.stop()


def _record_runs(node: Node) -> list[tuple]:
    """(time, job_id) of every job run this node's worker starts."""
    runs: list[tuple] = []
    real = node.runner.run

    def run(job_id, stop=None):
        runs.append((utcnow(), job_id))
        return real(job_id, stop)

    node.runner.run = run
    return runs


def _results_snapshot(api: Api, job_id: str) -> dict:
    return {item["lot_id"]: (item["status"], item["descriptions"]) for item in api.results(job_id).json()["results"]["lots"]}


def test_two_workers_share_jobs_and_do_every_lot_exactly_once(make_node, image_server, sandbox):
    sandbox.configure(batch_validating_seconds=0.1, batch_in_progress_seconds=0.3)
    nodes = [make_node(BATCH_SHARD_MAX_REQUESTS=2), make_node(BATCH_SHARD_MAX_REQUESTS=2)]
    runs = [_record_runs(node) for node in nodes]
    jobs = {}
    for index in range(JOBS):
        lots = distinct_lots(image_server, 5, prefix=f"race{index}")
        answer = nodes[index % 2].api.generate(lots, languages=EN_DE)
        assert answer.status_code == 201, answer.text
        jobs[answer.json()["job_id"]] = [item["lot_id"] for item in lots]

    for job_id in jobs:
        assert nodes[0].api.wait_status(job_id)["status"] == "completed"

    db = nodes[0].rt.db
    for job_id, lot_ids in jobs.items():
        assert_one_result_per_language(db, job_id, lot_ids, EN_DE)
        assert [s.status for s in shards(db, job_id)] == ["collected"] * 6
    stats = sandbox.stats()
    assert_no_batch_created_twice(stats)
    assert stats["batches_created"] == JOBS * 6  # 3 vision and 3 translation shards of 2, 2 and 1 lots per job
    assert stats["batch_lines_executed"] == JOBS * 5 * 2  # each lot once through each model
    assert all(runs), "both workers should have run some of the jobs"


def test_stalled_worker_is_taken_over_after_its_lease_and_writes_nothing_when_it_wakes(make_node, image_server,
                                                                                       sandbox, monkeypatch):
    import workers.jobs

    a = make_node(WORKER_LEASE_SECONDS=2)
    stalled, wake, woke = threading.Event(), threading.Event(), threading.Event()
    a_thread = a.rt.worker._threads[0]
    real_required = workers.jobs.required_images

    def required_images(total, ratio):
        # A's job thread stops between checking the photos and recording them, renewing nothing
        if threading.current_thread() is a_thread and not wake.is_set():
            stalled.set()
            wake.wait(60)
        return real_required(total, ratio)

    monkeypatch.setattr(workers.jobs, "required_images", required_images)
    real_run = a.runner.run

    def a_run(job_id, stop=None):
        real_run(job_id, stop)
        if wake.is_set():
            woke.set()

    a.runner.run = a_run
    lots = distinct_lots(image_server, 3, prefix="stall")
    job_id = a.api.generate(lots, languages=EN_DE).json()["job_id"]
    wait_until(stalled.is_set, 20, "worker A never reached the photo check")
    a_lease = job_row(a.rt.db, job_id).lease_expires_at
    assert job_row(a.rt.db, job_id).lease_owner == a.rt.instance_id

    b = make_node(WORKER_LEASE_SECONDS=2)
    b_runs = _record_runs(b)
    assert b.api.wait_status(job_id, timeout=30)["status"] == "completed"
    assert b_runs[0][0] >= a_lease, "B took the job over before A's lease expired"
    before = (_results_snapshot(b.api, job_id), b.api.status(job_id).json()["progress"], sandbox.stats())

    wake.set()
    wait_until(woke.is_set, 20, "worker A never finished its stale step")

    after = (_results_snapshot(b.api, job_id), b.api.status(job_id).json()["progress"], sandbox.stats())
    assert after == before
    assert all(status == "completed" for status, _ in after[0].values())
    assert_one_result_per_language(b.rt.db, job_id, [item["lot_id"] for item in lots], EN_DE)
    assert_no_batch_created_twice(after[2])
    assert a.rt.worker.alive


def test_job_of_a_stopped_worker_is_carried_on_by_the_other(make_node, image_server, sandbox):
    sandbox.configure(batch_in_progress_seconds=1.5)
    a = make_node(WORKER_LEASE_SECONDS=2)
    lots = distinct_lots(image_server, 3, prefix="stop")
    job_id = a.api.generate(lots, languages=EN_DE).json()["job_id"]
    wait_until(lambda: [s.status for s in shards(a.rt.db, job_id, "vision")] == ["submitted"], 20,
               "the vision batch was never submitted")
    a.stop()

    b = make_node(WORKER_LEASE_SECONDS=2)
    assert b.api.wait_status(job_id, timeout=30)["status"] == "completed"

    assert_one_result_per_language(b.rt.db, job_id, [item["lot_id"] for item in lots], EN_DE)
    stats = sandbox.stats()
    assert_no_batch_created_twice(stats)
    assert stats["batches_created"] == 2


def test_direct_calls_slower_than_the_lease_are_not_repeated_by_the_other_worker(make_node, image_server, sandbox):
    sandbox.configure(vision_latency=2.5)
    nodes = [make_node(BATCH_STRATEGY="direct", WORKER_LEASE_SECONDS=1) for _ in range(2)]
    job_id = nodes[0].api.generate(distinct_lots(image_server, 2, prefix="slowcall")).json()["job_id"]

    assert nodes[1].api.wait_status(job_id, timeout=30)["status"] == "completed"

    assert sandbox.stats()["responses_vision_calls"] == 2


def test_photo_checks_slower_than_the_lease_are_not_repeated_by_the_other_worker(make_node, image_server, sandbox):
    nodes = [make_node(WORKER_LEASE_SECONDS=1) for _ in range(2)]
    slow = [image_server.url(f"/slow/2/leased-{n}.jpg") for n in range(2)]
    lots = [lot("slow-0", slow), lot("slow-1", [image_server.url("/img/leased-fast.jpg")])]
    job_id = nodes[0].api.generate(lots).json()["job_id"]

    assert nodes[1].api.wait_status(job_id, timeout=30)["status"] == "completed"

    checked = [path for method, path in image_server.requests if path.startswith("/slow/2/leased-")]
    assert sorted(checked) == sorted(f"/slow/2/leased-{n}.jpg" for n in range(2))


def test_upload_slower_than_the_lease_is_not_repeated_by_the_other_worker(make_node, image_server, sandbox):
    nodes = [make_node(WORKER_LEASE_SECONDS=1) for _ in range(2)]
    uploads = []
    for node in nodes:
        real_upload = node.rt.ai.upload_batch_file

        def slow_upload(path, filename, real_upload=real_upload):
            uploads.append(filename)
            time.sleep(2.5)  # a big shard file on a slow link
            return real_upload(path, filename)

        node.rt.ai.upload_batch_file = slow_upload
    job_id = nodes[0].api.generate(distinct_lots(image_server, 2, prefix="slowupload"), languages=EN_DE).json()["job_id"]

    assert nodes[1].api.wait_status(job_id, timeout=40)["status"] == "completed"

    assert sorted(uploads) == [f"{job_id}-translation-0.jsonl", f"{job_id}-vision-0.jsonl"]
    assert sandbox.stats()["files_uploaded"] == 2


def test_batch_being_created_when_the_job_is_cancelled_is_recorded_and_cancelled(make_node, image_server, sandbox):
    sandbox.configure(batch_in_progress_seconds=60)
    a = make_node()
    creating, proceed = threading.Event(), threading.Event()
    real_create = a.rt.ai.create_batch

    def create_batch(input_file_id, metadata):
        creating.set()
        proceed.wait(30)
        return real_create(input_file_id, metadata)

    a.rt.ai.create_batch = create_batch
    job_id = a.api.generate(distinct_lots(image_server, 2, prefix="cancelcreate")).json()["job_id"]
    wait_until(creating.is_set, 20, "worker A never started creating the batch")
    b = make_node()
    b_claims = threading.Semaphore(0)
    real_claim = b.runner.claim

    def claim(limit=1):
        claimed = real_claim(limit)
        b_claims.release()
        return claimed

    b.runner.claim = claim

    assert a.api.cancel(job_id).status_code == 200
    for _ in range(3):  # B looks for work three times while A is still inside batches.create
        assert b_claims.acquire(timeout=10)
    proceed.set()

    wait_until(lambda: sandbox.stats()["batches_cancelled"] == 1, 20, "the batch created during the cancel ran on")
    wait_until(lambda: [(s.status, bool(s.batch_id)) for s in shards(a.rt.db, job_id)] == [("cancelled", True)], 20,
               "the shard does not record its cancelled batch")
    assert a.api.status(job_id).json()["status"] == "cancelled"
    assert sandbox.stats()["batches_created"] == 1
