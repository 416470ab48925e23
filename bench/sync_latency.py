#!/usr/bin/env python3
"""End-to-end latency of one synchronous request: one car, 20 photos, 10 languages.

Starts on 127.0.0.1: a scratch PostgreSQL database, the OpenAI sandbox (vision 2 s, translation
1 s per call by default), the loopback image server and the service under gunicorn; then posts the
same signed request --runs times and prints each run's wall time and the median as a markdown
table. Target: median <= 3.5 s (vision 2 s + translations in parallel 1 s + overhead; one language
after another would need 2 + 9 x 1 = 11 s, plus the photo checks).

    .venv/bin/python bench/sync_latency.py [--runs 5] [--photos 20] [--languages en,de,...]
"""
from __future__ import annotations

import argparse
import os
import time

import requests

import harness
from harness import SandboxOptions, median, note

DEFAULT_LANGUAGES = "en,de,fr,es,it,pt,ru,pl,nl,ja"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured requests (default 5)")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests first (default 0)")
    parser.add_argument("--photos", type=int, default=20, help="photo URLs in the lot (default 20, the sync maximum)")
    parser.add_argument("--languages", default=DEFAULT_LANGUAGES, help=f"comma-separated (default {DEFAULT_LANGUAGES})")
    parser.add_argument("--vision-latency", type=float, default=2.0, help="sandbox seconds per vision call (2)")
    parser.add_argument("--text-latency", type=float, default=1.0, help="sandbox seconds per translation call (1)")
    parser.add_argument("--server", choices=("gunicorn", "main"), default="gunicorn",
                        help="gunicorn -c gunicorn.conf.py main:app (default) or python main.py")
    parser.add_argument("--workers", type=int, default=None,
                        help="GUNICORN_WORKERS (default: unset, so gunicorn.conf.py picks min(4, 2 x CPUs))")
    parser.add_argument("--target", type=float, default=3.5, help="median target in seconds (3.5)")
    parser.add_argument("--db-name", default="genservice_bench_sync", help="scratch database name; _<pid> is appended")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before giving up (60)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service/sandbox logs in the temp dir")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    sandbox = SandboxOptions(vision_latency=args.vision_latency, text_latency=args.text_latency)
    rows = []
    times = []
    load_before = harness.load_average()
    with harness.running_stack(args.db_name, sandbox, {"WORKER_ENABLED": "false"}, server=args.server,
                               workers=args.workers, keep_logs=args.keep_logs) as stack:
        stack_workers = len(stack.worker_pids())
        http = requests.Session()
        url = f"{stack.service_url}/api/v1/generate-descriptions"
        for index in range(args.warmup + args.runs):
            measured = index >= args.warmup
            run = index - args.warmup + 1
            # a fresh lot (own photo URLs) each time, so nothing could be served from a cache
            lots = harness.lots_with_images(1, args.photos, stack.image_base, prefix=f"sync{index}")
            body = harness.signed_generate_body(lots, languages)
            started = time.perf_counter()
            response = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=args.timeout)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
            answer = response.json()["lots"][0]
            got = [d["language"] for d in answer["descriptions"]]
            if got != languages or answer["processed_images"] != args.photos:
                raise RuntimeError(f"unexpected answer: languages {got}, processed_images {answer['processed_images']}")
            note(f"{'run ' + str(run) if measured else 'warm-up'}: {elapsed:.3f} s")
            if measured:
                times.append(elapsed)
                rows.append((f"run {run}", f"{elapsed:.3f}", len(got), answer["processed_images"]))

    verdict = "met" if median(times) <= args.target else "MISSED"
    rows.append(("**median**", f"**{median(times):.3f}**", "", ""))
    print(f"Sync latency: 1 lot, {args.photos} photos (loopback image server), {len(languages)} languages "
          f"({','.join(languages)}); sandbox vision {args.vision_latency:g} s, translation {args.text_latency:g} s "
          f"per call; {args.server}"
          + (f" with {stack_workers} workers" if args.server == "gunicorn" else "")
          + f" on PostgreSQL; warm-up requests: {args.warmup}; image server listen backlog "
          f"4096 (tests/support/image_server.py); 1-min load average {load_before} before, {harness.load_average()} after "
          f"(on {os.cpu_count()} CPUs).\n")
    print(harness.markdown_table(("run", "end-to-end latency (s)", "languages returned", "photos processed"), rows))
    print(f"\nTarget: median <= {args.target:g} s -> **{verdict}** (median {median(times):.3f} s; min "
          f"{min(times):.3f} s, max {max(times):.3f} s).")
    return 0


if __name__ == "__main__":
    harness.run(main)
