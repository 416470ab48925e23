"""How fast the worker empties a backlog of webhook deliveries into a slow receiver.

For each concurrency asked for: a scratch PostgreSQL database gets N ended jobs of one lot each
(recorded the way the job worker ends a job, so each owes one delivery), a loopback receiver
answers every request after ``--delay`` seconds, and the service's own worker (a Runtime with
WEBHOOK_CONCURRENCY set, no web server) sends them. The clock runs from the worker's start until
the database says every delivery is delivered.

    .venv/bin/python bench/webhook_throughput.py                       # 2,000 deliveries, concurrency 32
    .venv/bin/python bench/webhook_throughput.py --concurrency 16 32 64 --urls 1

Receivers: ``--urls`` distinct paths on the one receiver (default 100, as if 100 integrators);
the dispatcher gives any one URL at most three quarters of the pool, which ``--urls 1`` shows.
``--clients N`` spreads the jobs over N clients of their own (0: all the implicit client's), each
delivery signed with its client's webhook secret; the "secret reads" column counts the statements
that read webhook secrets (one per claim, however many deliveries and clients it holds).
Progress goes to stderr; stdout carries only the table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sqlalchemy import event, func, insert, select  # noqa: E402

from bench.harness import (BENCH_KEY, install_signal_handlers, load_average, markdown_table, note,  # noqa: E402
                           scratch_database)

DB_NAME = "genservice_bench_webhooks"
UNUSED_OPENAI_URL = "http://127.0.0.1:9/v1"  # every job is already over: nothing calls OpenAI


class SlowReceiver:
    """Answers 200 to every POST after ``delay`` seconds; one thread per connection, a deep accept queue."""

    def __init__(self, delay: float):
        self.count = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                with lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self) -> "SlowReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def settings_for(database_url: str, concurrency: int, workdir: str):
    from app.config import Settings

    return Settings.from_env({
        "DATABASE_URL": database_url, "SHARED_KEY": BENCH_KEY, "OPENAI_BASE_URL": UNUSED_OPENAI_URL, "OPENAI_SANDBOX": "true",
        "WORKER_ENABLED": "true", "WEBHOOK_CONCURRENCY": str(concurrency),
        "ALLOW_PRIVATE_URLS": "true", "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1",
        "INSTANCE_PATH": workdir, "LOG_LEVEL": "warning",
    })


def seed(rt, count: int, urls: list[str], client_count: int = 0) -> None:
    """``count`` completed one-lot jobs, their texts, and the deliveries they owe (via the service's own hook),
    spread over ``client_count`` clients (none: the implicit client's)."""
    from database.models import BatchJob, BatchLot, BatchResult
    from services import clients, webhooks
    from services.clock import utcnow

    owners = [clients.add_client(rt.db, f"bench-{n}").client_id for n in range(client_count)] or [clients.IMPLICIT]
    now = utcnow()
    jobs = [BatchJob(id=str(uuid.uuid4()), status="completed", stage="done", strategy="direct", version="1.0.0",
                     languages=["en"], total_lots=1, processed_lots=1, failed_lots=0, translated_lots=1,
                     total_images=1, total_images_processed=1, webhook_configured=True, input_tokens=0,
                     output_tokens=0, created_at=now - timedelta(minutes=5), updated_at=now, completed_at=now,
                     deadline_at=now + timedelta(hours=25), next_run_at=now, client_id=owners[n % len(owners)])
            for n in range(count)]
    hook = webhooks.final_hook(rt.settings)
    with rt.db.transaction() as session:
        session.add_all(jobs)
        session.flush()
        session.execute(insert(BatchLot), [
            {"job_id": job.id, "seq": 0, "lot_id": f"lot-{n}", "additional_info": "bench", "image_urls": [],
             "webhook_url": urls[n % len(urls)], "status": "completed", "processed_images": 1,
             "missing_images": [], "processed_at": now, "vision_attempts": 1, "translation_attempts": 0}
            for n, job in enumerate(jobs)])
        lots = dict(session.execute(select(BatchLot.job_id, BatchLot.id)).all())
        session.execute(insert(BatchResult), [
            {"job_id": job.id, "lot_pk": lots[job.id], "language": "en", "damages": "<p>Scratch on the left door.</p>"}
            for job in jobs])
        for job in jobs:
            hook(session, job)


def delivered_count(rt) -> int:
    from database.models import WebhookDelivery

    with rt.db.session() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.status == "delivered")) or 0


def attempt_durations(rt) -> list[int]:
    from database.models import WebhookAttempt

    with rt.db.session() as session:
        return list(session.scalars(select(WebhookAttempt.duration_ms)))


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class SecretReads:
    """Counts the statements that read the clients table (webhook secrets) while the worker runs."""

    def __init__(self, engine):
        self.count = 0
        self.engine = engine

    def __call__(self, conn, cursor, statement, *args) -> None:
        if "clients" in statement and statement.lstrip().upper().startswith("SELECT"):
            self.count += 1

    def __enter__(self) -> "SecretReads":
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def run_once(count: int, concurrency: int, delay: float, url_count: int, timeout: float,
             client_count: int = 0) -> list[object]:
    from app.runtime import Runtime

    with scratch_database(DB_NAME) as database_url, SlowReceiver(delay) as receiver, \
            tempfile.TemporaryDirectory(prefix="genservice-bench-") as workdir:
        rt = Runtime(settings_for(database_url, concurrency, workdir))
        try:
            seed(rt, count, [receiver.url(f"/hooks/{n}") for n in range(url_count)], client_count)
            note(f"{count} deliveries recorded; starting the worker with WEBHOOK_CONCURRENCY={concurrency}")
            with SecretReads(rt.db.engine) as reads:
                started = time.monotonic()
                rt.start_worker()
                while (done := delivered_count(rt)) < count:
                    if time.monotonic() - started > timeout:
                        raise SystemExit(f"only {done} of {count} delivered after {timeout:g}s")
                    time.sleep(0.05)
                total = time.monotonic() - started
            durations = attempt_durations(rt)
        finally:
            rt.close()
    note(f"concurrency {concurrency}: {count} delivered in {total:.1f}s ({len(durations)} attempts)")
    # every URL is on the one receiver (one destination host), which holds at most three quarters of the pool:
    # its delay over those slots is the floor no dispatcher can beat
    share = max(1, concurrency // 4)
    floor = count * delay / max(share, concurrency - share)
    return [count, concurrency, url_count, client_count, f"{delay * 1000:g} ms", f"{total:.1f}", f"{floor:.1f}",
            f"{count / total:.1f}", f"{statistics.median(durations):.0f}", f"{percentile(durations, 0.99):.0f}",
            len(durations), reads.count, load_average()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000, help="deliveries in the backlog (default 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32],
                        help="WEBHOOK_CONCURRENCY values to run, one table row each (default 32)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the receiver takes to answer (default 0.5)")
    parser.add_argument("--urls", type=int, default=100, help="distinct webhook URLs on the receiver (default 100)")
    parser.add_argument("--clients", type=int, default=0,
                        help="clients of their own the jobs are spread over (default 0: the implicit client)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds per run")
    args = parser.parse_args(argv)
    install_signal_handlers()
    rows = [run_once(args.deliveries, c, args.delay, args.urls, args.timeout, args.clients) for c in args.concurrency]
    print(markdown_table(["deliveries", "concurrency", "URLs", "clients", "receiver delay", "total s", "floor s",
                          "deliveries/s", "p50 attempt ms", "p99 attempt ms", "attempts", "secret reads",
                          "load avg"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
