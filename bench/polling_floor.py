#!/usr/bin/env python3
"""Status polls against their floor: the service's GET /api/v1/batch-status/{job_id} beside a bare
Flask app doing the same work (bench/floor_app.py: the HMAC check of the job id, one SELECT of the
same row, JSON), both under the service's own gunicorn.conf.py (same workers x threads), on the
same scratch PostgreSQL database, loaded the same way, in the same run.

Starts on 127.0.0.1 (bench/harness.py): a scratch database, the OpenAI sandbox (its batches stay in
progress for an hour), the loopback image server, the service and the floor app. The service runs as
deployed: its background worker on (with WORKER_POLL_INTERVAL=1 unless --worker-poll-interval says otherwise,
so that it looks at the polled job every second) and rate limits on, with the polling
limit raised out of the way (RATE_LIMIT_POLLING, default 100000000/minute) so every request pays
for the limiter but none is refused (--rate-limits off leaves the limiter out altogether).

A job of --lots lots is created through the API; once its vision batch is submitted it stays in
processing, and both apps are polled for it by wrk (apt-get install wrk) with --clients connections
back to back: per round, --warm-up seconds then --duration seconds on each app, the order of the
two alternating from round to round so that neither gets the quieter moments of a shared machine.

Only the table goes to stdout; progress goes to stderr.

    .venv/bin/python bench/polling_floor.py [--rounds 3] [--duration 20] [--clients 100] [--rate-limits on|off]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import time

import requests

import harness
from harness import Process, SandboxOptions, median, note
from polling_load import Readings, cpu_seconds, post_job, wait_job, wrk_load

TARGET_RATIO = 0.7


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each app (default 3)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per measurement (default 20)")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds of load before each measurement")
    parser.add_argument("--clients", type=int, default=100, help="wrk connections (default 100)")
    parser.add_argument("--lots", type=int, default=200, help="lots of the polled job (default 200)")
    parser.add_argument("--rate-limits", choices=("on", "off"), default="on",
                        help="the service's limiter on, with RATE_LIMIT_POLLING out of the way (default), or off")
    parser.add_argument("--polling-limit", default="100000000/minute",
                        help="RATE_LIMIT_POLLING of the service with --rate-limits on")
    parser.add_argument("--worker", choices=("on", "off"), default="on",
                        help="the service's background worker threads (default on, as deployed)")
    parser.add_argument("--worker-poll-interval", default="1",
                        help="WORKER_POLL_INTERVAL of the service (default 1: its worker looks at the polled job and "
                             "for other work every second, harsher than the deployed default of 30)")
    parser.add_argument("--workers", type=int, default=None,
                        help="GUNICORN_WORKERS for both apps (default: gunicorn.conf.py's choice)")
    parser.add_argument("--db-name", default="genservice_bench_floor")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


def start_floor(stack: contextlib.ExitStack, workdir: str, database_url: str, workers: int | None) -> tuple[str, Process]:
    port = harness.free_port()
    env = harness.service_env(database_url, "http://127.0.0.1:9/v1", workdir)
    env.update(HOST=harness.HOST, PORT=str(port), GUNICORN_BIND=f"{harness.HOST}:{port}", OPENAI_API_KEY="floor")
    if workers is not None:
        env["GUNICORN_WORKERS"] = str(workers)
    gunicorn = os.path.join(os.path.dirname(harness.PYTHON), "gunicorn")
    process = Process("floor", [gunicorn, "-c", "gunicorn.conf.py", "--no-control-socket", "--pythonpath", "bench",
                                "floor_app:app"], env=env, log_dir=workdir)
    stack.callback(process.stop)
    url = f"http://{harness.HOST}:{port}"
    harness.wait_http(f"{url}/health", 30, process)
    note(f"floor app on {url}, pid {process.pid}")
    return url, process


def worker_pids(process: Process) -> list[int]:
    return harness._children(process.pid) or [process.pid]


def measure(name: str, url: str, pids, signature: str, args) -> dict:
    wrk_load(url, signature, args.clients, args.warm_up, 0)
    before = cpu_seconds(pids())
    outcome = wrk_load(url, signature, args.clients, args.duration, 0)
    outcome["cpu_ms"] = (cpu_seconds(pids()) - before) * 1000 / max(1, outcome["requests"])
    outcome["rps"] = outcome["requests"] / outcome["seconds"]
    outcome["loadavg"] = os.getloadavg()[0]
    note(f"{name}: {outcome['rps']:,.0f} req/s, p50 {outcome['p50']:.1f} ms, p99 {outcome['p99']:.1f} ms, "
         f"{outcome['cpu_ms']:.2f} ms CPU per request, {outcome['errors']} errors")
    if outcome["errors"]:
        raise RuntimeError(f"{name}: {outcome['errors']} failed requests (non-200 answers or socket errors)")
    return outcome


def main(argv=None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    extra = {"WORKER_ENABLED": "true" if args.worker == "on" else "false",
             "WORKER_POLL_INTERVAL": args.worker_poll_interval,
             "RATELIMIT_ENABLED": "true" if args.rate_limits == "on" else "false",
             "RATE_LIMIT_POLLING": args.polling_limit}
    load_before = harness.load_average()
    sandbox = SandboxOptions(batch_in_progress_seconds=3600)
    with harness.running_stack(args.db_name, sandbox, extra, workers=args.workers, keep_logs=args.keep_logs) as stack, \
            contextlib.ExitStack() as cleanup:
        readings = Readings(stack.database_url)
        cleanup.callback(readings.close)
        http = requests.Session()
        job = post_job(http, stack.service_url, harness.lots_with_images(args.lots, 1, stack.image_base, "poll"))
        if args.worker == "on":
            wait_job(readings, job, "submitted", 300)
            note(f"job {job}: vision batch submitted; it stays in processing")
        floor_url, floor = start_floor(cleanup, stack.workdir, stack.database_url, args.workers)
        path = f"/api/v1/batch-status/{job}"
        signature = harness.header_signature(job)
        for url in (stack.service_url, floor_url):
            answer = http.get(url + path, headers={"X-Signature": signature}, timeout=10)
            if answer.status_code != 200 or answer.json()["job_id" if url == stack.service_url else "id"] != job:
                raise RuntimeError(f"{url}{path}: {answer.status_code} {answer.text[:300]}")
        apps = {"service": (stack.service_url + path, stack.worker_pids),
                "floor": (floor_url + path, lambda: worker_pids(floor))}
        results: dict[str, list[dict]] = {"service": [], "floor": []}
        for index in range(args.rounds):
            order = ("service", "floor") if index % 2 == 0 else ("floor", "service")
            for name in order:
                url, pids = apps[name]
                note(f"round {index + 1}/{args.rounds}: {name}, {args.clients} connections back to back")
                results[name].append(measure(name, url, pids, signature, args))
        status = readings.job(job)[0]
        if status not in ("processing", "pending"):
            raise RuntimeError(f"the polled job left processing during the bench: {status}")

    rows = []
    ratios = []
    cpu_ratios = []
    for index in range(args.rounds):
        service, floor = results["service"][index], results["floor"][index]
        ratio = service["rps"] / floor["rps"]
        ratios.append(ratio)
        cpu_ratios.append(floor["cpu_ms"] / service["cpu_ms"])
        rows.append([str(index + 1), f"{service['rps']:,.0f}", f"{service['p50']:.1f}", f"{service['p99']:.1f}",
                     f"{service['cpu_ms']:.2f}", f"{floor['rps']:,.0f}", f"{floor['p50']:.1f}", f"{floor['p99']:.1f}",
                     f"{floor['cpu_ms']:.2f}", f"{ratio:.2f}", f"{cpu_ratios[-1]:.2f}",
                     f"{max(service['loadavg'], floor['loadavg']):.1f}"])

    def med(name: str, key: str, fmt: str) -> str:
        return format(median([r[key] for r in results[name]]), fmt)
    ratio = statistics.median(ratios)
    met = "met" if ratio >= TARGET_RATIO else "missed"
    rows.append(["**median**", med("service", "rps", ",.0f"), med("service", "p50", ".1f"), med("service", "p99", ".1f"),
                 med("service", "cpu_ms", ".2f"), med("floor", "rps", ",.0f"), med("floor", "p50", ".1f"),
                 med("floor", "p99", ".1f"), med("floor", "cpu_ms", ".2f"), f"**{ratio:.2f}** ({met})",
                 f"{statistics.median(cpu_ratios):.2f}", "-"])
    # on a shared machine the throughputs depend on what else runs; the CPU each request costs the workers
    # depends much less on it, and on an idle machine the throughput ratio tends to the CPU ratio
    print(harness.markdown_table(
        ("round", "service req/s", "service p50 ms", "service p99 ms", "service CPU ms/req", "floor req/s",
         "floor p50 ms", "floor p99 ms", "floor CPU ms/req", f"req/s service / floor (target >= {TARGET_RATIO})",
         "CPU per request floor / service", "load average (1 min)"), rows))
    note(f"{args.clients} wrk connections back to back, {args.duration:g} s per measurement after {args.warm_up:g} s "
         f"of warm-up; gunicorn workers: {args.workers or 'gunicorn.conf.py default'}; service rate limits "
         f"{args.rate_limits}, background worker {args.worker} (WORKER_POLL_INTERVAL={args.worker_poll_interval}); "
         f"1-min load average {load_before} before, "
         f"{harness.load_average()} after, on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    harness.run(main)
