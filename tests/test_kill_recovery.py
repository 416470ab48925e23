"""``kill -9`` of the real service (``python main.py``) while a job is in each stage, then a restart.

The sandbox runs as its own process with short, non-zero batch durations, so every stage can be
caught in the act. After each restart the job must complete with exactly one description per
lot and language, and the sandbox must have seen no second batch for any shard. Windows too
narrow to hit from outside (between a paid call and its record) are reached with the test-only
crash point ``GENSERVICE_CRASH_AFTER`` (workers/faults.py), which exits like ``kill -9``.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
from dataclasses import dataclass, field

import openai
import pytest
import requests
from sqlalchemy import text

from database.models import Base
from services.jobs import cancel_job
from tests.support.batches import (assert_no_batch_created_twice, assert_one_result_per_language, distinct_lots,
                                   job_row, lot_rows, open_db, shards, wait_until)
from tests.support.client import TEST_KEY, Api, lot
from tests.support.common import free_port
from tests.support.processes import PYTHON, ProcessSet, ServerProcess, scratch_database, service_env, start_sandbox

EN_DE = ["en", "de"]
LEASE_SECONDS = 2
CRASH_STATUS = 137
SERVICE_NUMBERS = itertools.count()  # one log file per service process of the module


@dataclass
class Stack:
    """The module's PostgreSQL database and sandbox process, shared by every test."""
    url: str
    procs: ProcessSet
    sandbox: object
    workdir: str
    db: object = None


@dataclass
class Service:
    process: ServerProcess
    api: Api


@dataclass
class Harness:
    stack: Stack
    image_server: object
    started: list[Service] = field(default_factory=list)

    @property
    def sandbox(self):
        return self.stack.sandbox

    @property
    def db(self):
        return self.stack.db

    def start(self, crash_after: str | None = None, worker: bool = True, wait_ready: bool = True) -> Service:
        port = free_port()
        settings = dict(PORT=port, WORKER_POLL_INTERVAL=0.2, WORKER_LEASE_SECONDS=LEASE_SECONDS, IMAGE_TIMEOUT=5,
                        OPENAI_MAX_RETRIES=0, WORKER_ENABLED=str(worker).lower())
        if crash_after:
            settings["GENSERVICE_CRASH_AFTER"] = crash_after
        env = service_env(self.stack.url, self.sandbox.url, self.stack.workdir, TEST_KEY, **settings)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: the default in-memory metrics
        process = ServerProcess(f"service-{next(SERVICE_NUMBERS)}", [PYTHON, "main.py"], env, self.stack.procs.log_dir)
        self.stack.procs.add(process).start()
        if wait_ready and crash_after:
            # an armed process may reach its crash point (and exit) before its first health check answers
            wait_until(lambda: not process.alive or _answers(f"http://127.0.0.1:{port}/health"), 30,
                       lambda: f"{process.name} to answer /health or reach {crash_after}:\n{process.tail()}")
            assert process.alive or process.proc.returncode == CRASH_STATUS, process.tail()
        elif wait_ready:
            process.wait_http(f"http://127.0.0.1:{port}/health", 30)
        service = Service(process, Api(f"http://127.0.0.1:{port}"))
        self.started.append(service)
        return service

    def submit(self, service: Service, lots, languages=EN_DE) -> str:
        answer = service.api.generate(lots, languages=languages)
        assert answer.status_code == 201, answer.text
        return answer.json()["job_id"]

    @staticmethod
    def kill9(service: Service) -> None:
        os.kill(service.process.pid, signal.SIGKILL)
        assert service.process.proc.wait(10) == -signal.SIGKILL

    @staticmethod
    def wait_crash(service: Service) -> None:
        """The armed crash point ends the process by itself."""
        assert service.process.proc.wait(30) == CRASH_STATUS, service.process.tail()

    def stage(self, service: Service, job_id: str) -> str:
        return service.api.status(job_id).json()["processing_details"]["current_stage"]

    def wait_stage(self, service: Service, job_id: str, stage: str) -> None:
        wait_until(lambda: self.stage(service, job_id) == stage, 30, f"job {job_id} to reach {stage}")

    def shard_states(self, job_id: str, kind: str) -> list[tuple]:
        return [(s.status, s.openai_status) for s in shards(self.db, job_id, kind)]

    def assert_recovered(self, service: Service, job_id: str, lots, languages=EN_DE) -> dict:
        status = service.api.wait_status(job_id, timeout=40)
        assert status["status"] == "completed", status
        assert status["progress"]["processed_lots"] == len(lots) and status["progress"]["failed_lots"] == 0
        assert_one_result_per_language(self.db, job_id, [item["lot_id"] for item in lots], languages)
        stats = self.sandbox.stats()
        assert_no_batch_created_twice(stats)
        assert stats["batches_created"] == 2, stats["batch_creates_by_metadata"]  # one vision, one translation
        return status


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kill")
    with scratch_database("genservice_kill_recovery") as url, ProcessSet(workdir / "logs") as procs:
        sandbox = start_sandbox(procs, batch_validating_seconds=0.3, batch_in_progress_seconds=0.6,
                                batch_finalizing_seconds=0.2)
        stack = Stack(url, procs, sandbox, str(workdir), open_db(url))
        yield stack
        stack.db.dispose()


@pytest.fixture
def harness(stack, image_server):
    stack.sandbox.reset()
    with stack.db.engine.begin() as conn:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        if conn.execute(text("SELECT to_regclass('batch_jobs')")).scalar():
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    harness = Harness(stack, image_server)
    yield harness
    for service in harness.started:
        service.process.stop()


def test_kill_9_in_each_stage_then_restart(harness, image_server):
    # one slow photo per lot keeps the job in its photo checks long enough to be killed there
    lots = [lot(f"stage-{i}", [image_server.url(f"/slow/1/kill-img-{i}.jpg"), image_server.url(f"/img/kill-{i}.jpg")])
            for i in range(3)]
    service = harness.start()
    job_id = harness.submit(service, lots)

    wait_until(lambda: any("/kill-img-" in path for _, path in image_server.requests), 20, "photo checks to start")
    assert harness.stage(service, job_id) == "image_validation"
    harness.kill9(service)
    assert job_row(harness.db, job_id).stage == "images" and not shards(harness.db, job_id)

    service = harness.start()
    wait_until(lambda: [s for s, _ in harness.shard_states(job_id, "vision")] == ["submitted"], 30,
               "the vision batch to be running")
    harness.kill9(service)

    service = harness.start()
    wait_until(lambda: [s for s, _ in harness.shard_states(job_id, "translation")] == ["submitted"], 30,
               "the translation batch to be running")
    assert harness.stage(service, job_id) == "translation"
    harness.kill9(service)

    harness.assert_recovered(harness.start(), job_id, lots)


def test_kill_9_before_and_while_the_lots_are_written_out_then_restart(harness, image_server):
    """Accepted lots are pages until a worker takes the job up; neither a kill right after the 201 nor
    a crash while the pages become rows loses or repeats a lot."""
    lots = distinct_lots(image_server, 3, prefix="pages")
    service = harness.start(worker=False)
    job_id = harness.submit(service, lots)
    harness.kill9(service)
    assert job_row(harness.db, job_id).stage == "queued" and not lot_rows(harness.db, job_id)

    # a queued job is taken up at once: the process may crash before it answers its first health check
    harness.wait_crash(harness.start(crash_after="lots_expanded", wait_ready=False))
    assert job_row(harness.db, job_id).stage == "queued" and not lot_rows(harness.db, job_id)  # rolled back

    harness.assert_recovered(harness.start(), job_id, lots)
    assert [row.lot_id for row in lot_rows(harness.db, job_id)] == [item["lot_id"] for item in lots]


def test_crash_at_each_recorded_step_then_restart(harness, image_server):
    lots = distinct_lots(image_server, 3, prefix="steps")
    stats = harness.sandbox.stats

    service = harness.start(crash_after="vision_planned")
    job_id = harness.submit(service, lots)
    harness.wait_crash(service)
    assert harness.shard_states(job_id, "vision") == [("building", None)]
    assert stats()["files_uploaded"] == 0

    harness.wait_crash(harness.start(crash_after="vision_batch_created"))
    [vision] = shards(harness.db, job_id, "vision")
    assert (vision.shard, vision.status, vision.batch_id) == (0, "uploaded", None)
    assert stats()["batches_created"] == 1

    harness.wait_crash(harness.start(crash_after="vision_lines_applied"))
    assert harness.shard_states(job_id, "vision")[0][0] == "submitted"  # answers stored, shard not yet closed
    assert stats()["batches_created"] == 1  # the batch was found again by its metadata

    status = harness.assert_recovered(harness.start(), job_id, lots)
    for kind in ("vision", "translation"):
        assert status["processing_details"][f"openai_{kind}_batch_id"] == shards(harness.db, job_id, kind)[0].batch_id
    assert status["token_usage"] == _billed_tokens(harness, job_id)


def test_job_cancelled_after_a_crash_cancels_the_batch_that_was_never_recorded(harness, image_server):
    harness.sandbox.configure(batch_in_progress_seconds=60)
    lots = distinct_lots(image_server, 2, prefix="cancelled")
    service = harness.start(crash_after="vision_batch_created")
    job_id = harness.submit(service, lots)
    harness.wait_crash(service)

    cancel_job(harness.db, job_id)
    harness.start()

    wait_until(lambda: harness.sandbox.stats()["batches_cancelled"] == 1, 30, "the unrecorded batch to be cancelled")
    wait_until(lambda: [(s.status, bool(s.batch_id)) for s in shards(harness.db, job_id)] == [("cancelled", True)],
               10, "the shard to record the cancelled batch")
    assert job_row(harness.db, job_id).status == "cancelled"
    assert harness.sandbox.stats()["batches_created"] == 1


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _billed_tokens(harness: Harness, job_id: str) -> dict[str, int]:
    """The tokens in every answer of every batch of the job, read from the batch output files."""
    client = openai.OpenAI(api_key="sandbox-key", base_url=harness.sandbox.url)
    totals = {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0}
    with harness.db.session() as session:
        files = session.execute(text("SELECT output_file_id FROM openai_batches WHERE job_id = :job"),
                                {"job": job_id}).scalars().all()
    for file_id in files:
        for line in client.files.content(file_id).text.splitlines():
            usage = json.loads(line)["response"]["body"]["usage"]
            totals["input_tokens"] += usage["input_tokens"]
            totals["output_tokens"] += usage["output_tokens"]
            totals["cached_input_tokens"] += (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
            totals["reasoning_tokens"] += (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return totals
