#!/usr/bin/env python3
"""A 50,000-lot batch job from the POST to status ``completed``, through the sandbox's Batch API.

Starts on 127.0.0.1: a scratch PostgreSQL database, the OpenAI sandbox with batches of a second
(--batch-seconds), the loopback photo host (bench/photo_server.py) and the service under gunicorn with its background
worker. Posts one signed job (each lot its own --photos URLs, languages en,de,fr -> 2 translated),
polls /batch-status every --poll seconds and infers the time spent in each stage from
``processing_details.current_stage``; samples the VmRSS of every gunicorn worker process throughout.

Image validation (BATCH_VALIDATE_IMAGES) is on by default, as users run it. With ``--validate auto``
(the default) a run that misses the target is followed by one with validation off; ``on``, ``off``
or ``both`` choose explicitly. Each mode gets a fresh database and server.

Target: completed within 120 s on this 2-core machine.

    .venv/bin/python bench/batch_e2e.py [--lots 50000] [--photos 5] [--validate auto|on|off|both]
"""
from __future__ import annotations

import argparse
import os
import time

import requests

import harness
from harness import RssSampler, SandboxOptions, note

TERMINAL = ("completed", "failed", "cancelled")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lots", type=int, default=50_000, help="lots in the job (default 50,000)")
    parser.add_argument("--photos", type=int, default=5, help="photo URLs per lot (default 5)")
    parser.add_argument("--languages", default="en,de,fr", help="comma-separated (default en,de,fr)")
    parser.add_argument("--validate", choices=("auto", "on", "off", "both"), default="auto",
                        help="BATCH_VALIDATE_IMAGES: auto = on, then off if on missed the target (default)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between status polls (0.5)")
    parser.add_argument("--timeout", type=float, default=130.0,
                        help="give up on a job after this many seconds (130, so --validate auto stays near 5 min); "
                             "the table says how far it got")
    parser.add_argument("--worker-poll-interval", default=None,
                        help="WORKER_POLL_INTERVAL for the service (default: unset, i.e. the service default)")
    parser.add_argument("--server", choices=("gunicorn", "main"), default="gunicorn",
                        help="gunicorn -c gunicorn.conf.py main:app (default) or python main.py")
    parser.add_argument("--workers", type=int, default=None,
                        help="GUNICORN_WORKERS (default: unset, so gunicorn.conf.py picks min(4, 2 x CPUs))")
    parser.add_argument("--image-host-concurrency", type=int, default=256,
                        help="IMAGE_HOST_CONCURRENCY: every photo is on the one loopback image server, so the "
                             "per-host cap is the photo stage's width (256; the service default is 32)")
    parser.add_argument("--image-server", choices=harness.IMAGE_SERVERS, default="asyncio",
                        help="the loopback photo host: asyncio (bench/photo_server.py, ~20 us of CPU a request; default) "
                             "or threaded (the test suite's server, a thread per connection, ~0.25 ms)")
    parser.add_argument("--batch-seconds", type=float, default=1.0,
                        help="how long each sandbox batch stays in_progress (1: batches of a second; 0: each ends "
                             "the moment it is first looked at)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="another setting for the service (repeatable), e.g. BATCH_SHARD_CONCURRENCY=2")
    parser.add_argument("--target", type=float, default=120.0, help="seconds (120)")
    parser.add_argument("--db-name", default="genservice_bench_e2e", help="scratch database name; _<pid> is appended")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


class Run:
    def __init__(self, validate: bool):
        self.validate = validate
        self.total: float | None = None
        self.final: dict = {}
        self.stages: list[tuple[str, float]] = []  # (stage, first seen at)
        self.post_seconds = 0.0
        self.last_seen = 0.0
        self.memory: RssSampler | None = None
        self.workers = 0
        self.error: str | None = None
        self.lot_counts: dict[str, int] = {}  # lots per status, read from the scratch database at the end
        self.image_rate: float | None = None  # lots/s through image validation while it ran
        self.cpu: dict[str, float] = {}  # CPU seconds per process group from the POST to the end


def lot_counts(database_url: str) -> dict[str, int]:
    """Lots per status straight from the bench's own scratch database (the API shows no image progress)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return {status: count for status, count in
                conn.execute("SELECT status, count(*) FROM batch_lots GROUP BY status").fetchall()}


def run_job(args, validate: bool, languages: list[str]) -> Run:
    result = Run(validate)
    extra = {"WORKER_ENABLED": "true", "BATCH_VALIDATE_IMAGES": "true" if validate else "false",
             "IMAGE_HOST_CONCURRENCY": str(args.image_host_concurrency)}
    if args.worker_poll_interval:
        extra["WORKER_POLL_INTERVAL"] = str(args.worker_poll_interval)
    for setting in args.env:
        name, _, value = setting.partition("=")
        extra[name.strip()] = value
    sandbox = SandboxOptions(batch_in_progress_seconds=args.batch_seconds)
    with harness.running_stack(args.db_name, sandbox, extra, server=args.server, workers=args.workers,
                               keep_logs=args.keep_logs, image_server=args.image_server) as stack:
        pids = stack.worker_pids()
        result.workers = len(pids)
        lots = harness.lots_with_images(args.lots, args.photos, stack.image_base, prefix="e2e")
        body = harness.signed_generate_body(lots, languages)
        del lots
        http = requests.Session()
        note(f"validation {'on' if validate else 'off'}: posting {args.lots:,} lots ({len(body) / 1e6:.1f} MB)")
        with RssSampler(pids, interval=0.1) as sampler, harness.CpuMeter(stack.cpu_groups()) as cpu:
            result.memory = sampler
            started = time.perf_counter()
            response = http.post(f"{stack.service_url}/api/v1/generate-descriptions", data=body,
                                 headers={"Content-Type": "application/json"}, timeout=120)
            result.post_seconds = time.perf_counter() - started
            del body
            if response.status_code != 201:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
            job_id = response.json()["job_id"]
            note(f"201 after {result.post_seconds:.2f} s, job {job_id}")
            status_url = f"{stack.service_url}/api/v1/batch-status/{job_id}"
            headers = {"X-Signature": harness.header_signature(job_id)}
            last_key = None
            last_count = 0.0
            while True:
                now = time.perf_counter() - started
                answer = http.get(status_url, headers=headers, timeout=30)
                if answer.status_code != 200:
                    raise RuntimeError(f"batch-status HTTP {answer.status_code}: {answer.text[:300]}")
                status = answer.json()
                result.final = status
                result.last_seen = now
                stage = status["processing_details"]["current_stage"]
                key = f"{status['status']} / {stage}"
                if key != last_key:
                    result.stages.append((key, now))
                    progress = status["progress"]
                    note(f"{now:7.1f} s  {key}  processed {progress['processed_lots']}, failed "
                         f"{progress['failed_lots']}, images {status['processing_details']['total_images_processed']}")
                    last_key = key
                if status["status"] in TERMINAL:
                    result.total = now
                    break
                if now > args.timeout:
                    result.error = f"not finished after {args.timeout:g} s"
                    note(result.error)
                    break
                if stage == "image_validation" and now - last_count >= 5:
                    last_count = now
                    counts = lot_counts(stack.database_url)
                    checked = sum(counts.values()) - counts.get("pending", 0)
                    note(f"{now:7.1f} s  image validation: {checked:,} of {args.lots:,} lots checked")
                time.sleep(args.poll)
            result.lot_counts = lot_counts(stack.database_url)
            _image_rate(result, args.lots)
        result.cpu = cpu.used()
    return result


def _image_rate(run: Run, total_lots: int) -> None:
    """Lots per second through image validation: from its whole duration, or up to now if it is still running."""
    names = [name for name, _ in run.stages]
    start = next((seen for name, seen in run.stages if name.endswith("image_validation")), None)
    if start is None:
        return
    index = next(i for i, name in enumerate(names) if name.endswith("image_validation"))
    end = run.stages[index + 1][1] if index + 1 < len(run.stages) else run.last_seen
    checked = total_lots - run.lot_counts.get("pending", 0)
    if end > start and checked:
        run.image_rate = checked / (end - start)


def stage_rows(run: Run) -> list[tuple]:
    rows = [("POST -> 201 (accept)", "0.0", f"{run.post_seconds:.1f}")]
    marks = run.stages + [("end", run.total if run.total is not None else run.last_seen)]
    for (name, seen), (_, following) in zip(marks, marks[1:]):
        if name.split(" / ")[0] in TERMINAL:
            continue
        rows.append((name, f"{seen:.1f}", f"{following - seen:.1f}"))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    modes = {"auto": [True], "on": [True], "off": [False], "both": [True, False]}[args.validate]
    load_before = harness.load_average()
    runs: list[Run] = []
    for validate in modes:
        run = run_job(args, validate, languages)
        runs.append(run)
        missed = run.total is None or run.total > args.target
        if args.validate == "auto" and validate and missed:
            note("validation on missed the target: running again with validation off")
            runs.append(run_job(args, False, languages))

    print(f"Batch end to end: {args.lots:,} lots x {args.photos} photo URLs (every lot its own URLs, "
          f"{args.lots * args.photos:,} distinct), languages {','.join(languages)}; sandbox batches in_progress for "
          f"{args.batch_seconds:g} s; {args.image_server} photo host; "
          f"{args.server}" + (f" with {runs[0].workers} worker processes" if args.server == "gunicorn" else "")
          + " and the background worker on PostgreSQL; WORKER_POLL_INTERVAL="
          + (args.worker_poll_interval or "default") + f"; status polled every {args.poll:g} s (stage times are "
          f"inferred from current_stage, +-{args.poll:g} s); 1-min load average {load_before} before, "
          f"{harness.load_average()} after (on {os.cpu_count()} CPUs).\n")
    summary = []
    for run in runs:
        label = f"validation {'on' if run.validate else 'off'}"
        print(f"**{label}** (BATCH_VALIDATE_IMAGES={'true' if run.validate else 'false'})\n")
        print(harness.markdown_table(("status / current_stage", "first seen at (s)", "time in it (s)"), stage_rows(run)))
        print()
        cores = os.cpu_count() or 1
        total_cpu = sum(run.cpu.values())
        print(harness.markdown_table(
            ["CPU seconds, POST to end"] + list(run.cpu) + ["total", f"total / {cores} cores"],
            [["used"] + [f"{v:.1f}" for v in run.cpu.values()] + [f"{total_cpu:.1f}", f"{total_cpu / cores:.1f}"]]))
        print(f"\n(total / {cores} cores is roughly the least wall time this work could take on an otherwise idle "
              f"machine with perfect parallelism; the service's own share runs mostly on one thread of one process.)\n")
        mem = run.memory
        pid = mem.busiest
        peak, _ = mem.growth(pid)
        progress = run.final.get("progress", {})
        total = f"{run.total:.1f} s" if run.total is not None else f"> {run.last_seen:.0f} s ({run.error})"
        met = run.total is not None and run.total <= args.target and run.final.get("status") == "completed"
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(run.lot_counts.items()))
        rate = f"{run.image_rate:,.0f} lots/s ({run.image_rate * args.photos:,.0f} URLs/s)" if run.image_rate else "-"
        projected = f"{args.lots / run.image_rate:,.0f} s" if run.image_rate else "-"
        summary.append((label, total, run.final.get("status", "?"), counts, rate, projected,
                        progress.get("processed_lots", "?"),
                        progress.get("failed_lots", "?"),
                        run.final.get("processing_details", {}).get("total_images_processed", "?"),
                        f"{mem.before[pid]:.0f} -> {mem.peak[pid]:.0f} ({peak:+.0f})",
                        f"{sum(mem.before.values()):.0f} -> {mem.peak_total:.0f}",
                        "met" if met else "**MISSED**"))
    print(harness.markdown_table(("run", "POST -> final status", "final status", "lots by status at the end (database)",
                                  "image validation rate", "image validation for all lots at that rate",
                                  "processed lots", "failed lots",
                                  "images processed", "busiest worker RSS before -> peak (MB)",
                                  "all workers RSS sum before -> peak (MB)", f"target <= {args.target:g} s"),
                                 summary))
    return 0


if __name__ == "__main__":
    harness.run(main)
