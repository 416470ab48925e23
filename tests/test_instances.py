"""Two gunicorn instances (two workers each) on one PostgreSQL database and one sandbox share
twenty batch jobs: every lot is done once, no OpenAI batch is created twice, no webhook is sent
twice, and both instances take part.

The scenario runs once per module (about 30 s); each test checks one promise on what it left.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg
import pytest

from tests.conftest import PG_URL
from tests.support.client import TEST_KEY, Api, lot
from tests.support.processes import (ProcessSet, SandboxProcess, ServiceProcess, launch_gunicorn, scratch_database,
                                     service_env, start_sandbox, wait_for)
from tests.support.receiver import Received, WebhookReceiver

JOBS = 20
LANGUAGES = ["en", "de"]
HOOK_PATHS = ("/hook/a", "/hook/b")  # two webhook URLs per job, so two deliveries each
# a database of its own next to the suite's (TEST_DATABASE_URL), so parallel runs on one server do not collide
DB_NAME = f"{PG_URL.rsplit('/', 1)[1]}_instances"[:63]


@dataclass
class Outcome:
    """What the run left behind, read once all jobs had ended and every webhook was answered."""
    instances: dict[str, ServiceProcess]
    job_ids: list[str]
    lots_by_job: dict[str, list[str]]
    statuses: dict[str, dict]
    sandbox_stats: dict
    received: list[Received]
    logs: dict[str, str]
    lease_owners: dict[str, set[str]]
    rows: dict[str, list] = field(default_factory=dict)


def _lots_of(job: int, count: int, image_server, receiver: WebhookReceiver) -> list[dict]:
    return [lot(f"inst-{job}-{i}", [image_server.url(f"/img/inst{job}-{i}-{n}.jpg") for n in range(2)],
                webhook=receiver.url(HOOK_PATHS[i % 2])) for i in range(count)]


def _query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def _all_ended(apis: list[Api], job_ids: list[str]) -> dict[str, dict] | None:
    statuses = {}
    for index, job_id in enumerate(job_ids):
        answer = apis[index % 2].status(job_id)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if body["status"] not in ("completed", "failed", "cancelled"):
            return None
        statuses[job_id] = body
    return statuses


def _deliveries_settled(url: str) -> bool:
    rows = _query(url, "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM webhook_deliveries")
    pending, total = rows[0]
    return total > 0 and pending == 0


class LeaseWatcher:
    """Samples who holds the leases on jobs and webhook deliveries while the run goes on."""

    def __init__(self, url: str):
        self.url = url
        self.owners: dict[str, set[str]] = {"jobs": set(), "webhooks": set()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watcher", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                for kind, table in (("jobs", "batch_jobs"), ("webhooks", "webhook_deliveries")):
                    rows = conn.execute(f"SELECT DISTINCT lease_owner FROM {table} WHERE lease_owner IS NOT NULL")
                    self.owners[kind].update(owner for (owner,) in rows)

    def __enter__(self) -> "LeaseWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, image_server) -> Outcome:
    workdir = tmp_path_factory.mktemp("instances")
    receiver = WebhookReceiver().start()
    # answers that take a moment keep deliveries in flight, so both instances' dispatchers claim some: an instant
    # receiver on one host let whichever dispatcher woke first deliver all 40. A pool of two (so one slot per
    # destination host, WEBHOOK_CONCURRENCY=2) keeps any one process from holding them all: with the default 32, the
    # two processes of one instance had 48 slots between them and once took all 40 deliveries (CI, 2026-12-01)
    receiver.behaviour.delay = 0.3
    try:
        with scratch_database(DB_NAME, PG_URL) as url, ProcessSet(workdir / "logs") as procs:
            sandbox: SandboxProcess = start_sandbox(procs, batch_validating_seconds=0.2, batch_in_progress_seconds=0.8,
                                                    batch_finalizing_seconds=0.2)
            env = service_env(url, sandbox.url, workdir, TEST_KEY, WORKER_POLL_INTERVAL=0.5,
                              WEBHOOK_RETRY_BASE_SECONDS=0.5, WEBHOOK_TIMEOUT=5, IMAGE_TIMEOUT=3,
                              WORKER_LEASE_SECONDS=10, WEBHOOK_CONCURRENCY=2)
            instances = {name: launch_gunicorn(procs, env, name=f"instance-{name}", workers=2) for name in "ab"}
            for process in instances.values():
                process.wait_ready(timeout=60)
            apis = [Api(instances["a"].url), Api(instances["b"].url)]
            job_ids, lots_by_job = [], {}
            with LeaseWatcher(url) as leases:
                for job in range(JOBS):
                    lots = _lots_of(job, 2 + job % 3, image_server, receiver)
                    answer = apis[job % 2].generate(lots, languages=LANGUAGES)
                    assert answer.status_code == 201, answer.text
                    job_ids.append(answer.json()["job_id"])
                    lots_by_job[job_ids[-1]] = [item["lot_id"] for item in lots]
                statuses = wait_for(lambda: _all_ended(apis, job_ids), 60, "all 20 jobs to end", interval=0.25)
                wait_for(lambda: _deliveries_settled(url), 30, "every webhook delivery to be answered")
                expected = _query(url, "SELECT count(*) FROM webhook_deliveries")[0][0]
                receiver.wait_for(expected, timeout=10)
                # a duplicate would come from a second claim racing the first: give it a moment to show up
                time.sleep(1.0)
            result = Outcome(instances=instances, job_ids=job_ids, lots_by_job=lots_by_job, statuses=statuses,
                             sandbox_stats=sandbox.stats(), received=list(receiver.received),
                             logs={name: process.log() for name, process in instances.items()},
                             lease_owners=leases.owners)
            result.rows["results"] = _query(url, """
                SELECT l.job_id, l.lot_id, l.status, count(r.id), array_agg(r.language ORDER BY r.language)
                FROM batch_lots l LEFT JOIN batch_results r ON r.lot_pk = l.id
                GROUP BY l.job_id, l.lot_id, l.status""")
            result.rows["batches"] = _query(url, "SELECT job_id, kind, shard, attempt, status, batch_id "
                                                 "FROM openai_batches")
            result.rows["deliveries"] = _query(url, """
                SELECT d.id, d.message_id, d.status, d.attempt_count, count(a.id), array_agg(a.status_code)
                FROM webhook_deliveries d LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
                GROUP BY d.id""")
            result.rows["heartbeats"] = _query(url, "SELECT worker_id, pid FROM worker_heartbeats")
            result.rows["pids"] = {name: process.worker_pids() for name, process in instances.items()}
            yield result
    finally:
        receiver.stop()


def test_every_lot_is_done_exactly_once(outcome: Outcome):
    assert all(status["status"] == "completed" for status in outcome.statuses.values()), outcome.statuses
    rows = outcome.rows["results"]
    assert len(rows) == sum(len(lots) for lots in outcome.lots_by_job.values())
    for job_id, lot_id, status, results, languages in rows:
        assert status == "completed", (job_id, lot_id, status)
        assert results == len(LANGUAGES) and sorted(languages) == sorted(LANGUAGES), (job_id, lot_id, languages)
    # each lot went through the vision model once and the translation model once, nothing more
    total_lots = len(rows)
    assert outcome.sandbox_stats["batch_lines_executed"] == 2 * total_lots
    assert outcome.sandbox_stats["responses_calls"] == 0


def test_no_openai_batch_is_created_twice_for_a_shard(outcome: Outcome):
    by_metadata = outcome.sandbox_stats["batch_creates_by_metadata"]
    assert by_metadata and all(count == 1 for count in by_metadata.values()), \
        {key: count for key, count in by_metadata.items() if count != 1}
    shards = outcome.rows["batches"]
    assert len(shards) == JOBS * 2 == outcome.sandbox_stats["batches_created"] == len(by_metadata)
    assert all(status == "collected" and attempt == 0 for _, _, _, attempt, status, _ in shards), shards
    assert len({batch_id for *_, batch_id in shards}) == len(shards)
    for job_id, kind, shard, attempt, _, _ in shards:
        assert f"attempt={attempt},job_id={job_id},kind={kind},shard={shard}" in by_metadata


def test_no_webhook_is_sent_twice(outcome: Outcome):
    deliveries = outcome.rows["deliveries"]
    assert len(deliveries) == JOBS * len(HOOK_PATHS)
    for delivery_id, message_id, status, attempts, attempt_rows, codes in deliveries:
        assert (status, attempts, attempt_rows, codes) == ("delivered", 1, 1, [200]), delivery_id
    seen = Counter(request.headers["webhook-id"] for request in outcome.received)
    assert seen == Counter({message_id: 1 for _, message_id, *_ in deliveries})
    lots_announced = Counter()
    for request in outcome.received:
        expected = "sha256=" + hmac.new(TEST_KEY.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-signature"] == expected
        payload = request.json()
        lots_announced.update((payload["job_id"], item["lot_id"]) for item in payload["lots"])
    assert lots_announced == Counter({(job_id, lot_id): 1 for job_id, lots in outcome.lots_by_job.items()
                                      for lot_id in lots})


def test_both_instances_did_work(outcome: Outcome):
    instance_of = {pid: name for name, pids in outcome.rows["pids"].items() for pid in pids}
    for kind, owners in outcome.lease_owners.items():
        # an owner is "host:pid:nonce": both instances held leases on jobs and on webhook deliveries
        holders = Counter(instance_of.get(int(owner.split(":")[-2])) for owner in owners)
        assert holders["a"] >= 1 and holders["b"] >= 1 and None not in holders, (kind, owners)
    finished = {name: re.findall(r"job ([0-9a-f-]{36}) completed", log) for name, log in outcome.logs.items()}
    delivered = {name: len(re.findall(r"webhook_delivery \d+ job \S+ attempt 1: delivered", log))
                 for name, log in outcome.logs.items()}
    assert all(finished.values()), {name: len(jobs) for name, jobs in finished.items()}
    assert Counter(finished["a"] + finished["b"]) == Counter({job_id: 1 for job_id in outcome.job_ids})
    assert sum(delivered.values()) == JOBS * len(HOOK_PATHS)
    beating = {pid for _, pid in outcome.rows["heartbeats"]}
    for name, pids in outcome.rows["pids"].items():
        assert len(pids) == 2 and set(pids) <= beating, (name, pids, beating)
