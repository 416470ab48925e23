#!/usr/bin/env python3
"""Time to accept a 50,000-lot batch (POST -> 201) and the server's memory growth while it does.

Starts on 127.0.0.1: a scratch PostgreSQL database, the OpenAI sandbox, the loopback image server
and the service under gunicorn (WORKER_ENABLED=false by default, so only the accept path runs).
Each run posts a fresh job: --lots lots with --photos URLs each, signed with the spec's recipe
(HMAC-SHA256 over the compact, key-sorted JSON of ``lots``). The body is built and signed before
the clock starts; the time is from sending the first byte to reading the 201.

Memory: VmRSS of every gunicorn worker process (from /proc) just before the POST, sampled every
20 ms during it, VmHWM (reset through /proc/<pid>/clear_refs before the POST, so it is the peak of
this run) and VmRSS after. The table shows the worker that served the request (the one that grew).

The floor: bench/accept_floor.py (a Flask app under gunicorn that only parses the body with json.loads and
verifies its signature) receives the same body right after the service, in every run, so both see the
same load; the table prints both and the ratio of their medians (wall time and CPU seconds).

Targets: median time to 201 <= 3 s and <= 2 x the floor's; memory growth <= 300 MB.

    .venv/bin/python bench/batch_accept.py [--runs 3] [--lots 50000] [--photos 5] [--worker]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time

import requests

import harness
from harness import RssSampler, SandboxOptions, median, note


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="jobs posted, each measured (default 3)")
    parser.add_argument("--lots", type=int, default=50_000, help="lots per job (default 50,000, the maximum)")
    parser.add_argument("--photos", type=int, default=5, help="photo URLs per lot (default 5)")
    parser.add_argument("--languages", default="en,de,fr", help="comma-separated (default en,de,fr)")
    parser.add_argument("--worker", action="store_true",
                        help="run with WORKER_ENABLED=true (the worker then starts on the job during later runs)")
    parser.add_argument("--server", choices=("gunicorn", "main"), default="gunicorn",
                        help="gunicorn -c gunicorn.conf.py main:app (default) or python main.py")
    parser.add_argument("--workers", type=int, default=None,
                        help="GUNICORN_WORKERS (default: unset, so gunicorn.conf.py picks min(4, 2 x CPUs))")
    parser.add_argument("--target-seconds", type=float, default=3.0)
    parser.add_argument("--target-mb", type=float, default=300.0)
    parser.add_argument("--target-ratio", type=float, default=2.0, help="service median / floor median (2)")
    parser.add_argument("--db-name", default="genservice_bench_accept", help="scratch database name; _<pid> is appended")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per POST before giving up (120)")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    extra = {"WORKER_ENABLED": "true" if args.worker else "false"}
    rows = []
    times: list[float] = []
    load_before = harness.load_average()
    growths: list[float] = []
    cpu_rows: list[float] = []
    body_mb = 0.0
    sign_s = []
    floor_times: list[float] = []
    floor_cpu: list[float] = []
    floor_growths: list[float] = []
    with harness.running_stack(args.db_name, SandboxOptions(), extra, server=args.server, workers=args.workers,
                               keep_logs=args.keep_logs) as stack, contextlib.ExitStack() as cleanup:
        floor_url, floor = harness.start_accept_floor(cleanup, stack.workdir)
        pids = stack.worker_pids()
        note(f"server worker processes: {pids}")
        http = requests.Session()
        url = f"{stack.service_url}/api/v1/generate-descriptions"
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            lots = harness.lots_with_images(args.lots, args.photos, stack.image_base, prefix=f"accept{run}")
            body = harness.signed_generate_body(lots, languages)
            del lots
            sign_s.append(time.perf_counter() - started)
            body_mb = len(body) / 1e6
            note(f"run {run}: body {body_mb:.1f} MB built and signed in {sign_s[-1]:.2f} s; posting")
            with RssSampler(pids) as sampler, harness.CpuMeter(
                    {"service": lambda: pids, "PostgreSQL": stack.database_backend_pids}, interval=0.2) as cpu:
                started = time.perf_counter()
                response = http.post(url, data=body, headers={"Content-Type": "application/json"},
                                     timeout=args.timeout)
                elapsed = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
            accepted = response.json()
            if accepted.get("total_lots") != args.lots:
                raise RuntimeError(f"unexpected answer: {accepted}")
            pid = sampler.busiest
            peak, after = sampler.growth(pid)
            used = cpu.used()
            worker_cpu = cpu.last["service"].get(pid, 0.0) - cpu.first["service"].get(pid, 0.0)
            total_before = sum(sampler.before.values())
            note(f"run {run}: 201 in {elapsed:.3f} s (job {accepted['job_id']}); worker {pid} "
                 f"{sampler.before[pid]:.0f} -> peak {sampler.peak[pid]:.0f} -> {sampler.after[pid]:.0f} MB")
            times.append(elapsed)
            growths.append(peak)
            cpu_rows.append(worker_cpu)
            floor_row = post_to_floor(http, floor_url, body, harness.floor_pids(floor), args.timeout)
            floor_times.append(floor_row[0])
            floor_cpu.append(floor_row[1])
            floor_growths.append(floor_row[2])
            note(f"run {run}: floor 201 in {floor_row[0]:.3f} s, CPU {floor_row[1]:.2f} s, growth {floor_row[2]:+.0f} MB")
            rows.append((f"run {run}", f"{elapsed:.3f}", f"{worker_cpu:.2f}", f"{used['PostgreSQL']:.2f}",
                         pid, f"{sampler.before[pid]:.0f}", f"{sampler.peak[pid]:.0f}",
                         f"{sampler.after[pid]:.0f}", f"{peak:+.0f}", f"{after:+.0f}",
                         f"{total_before:.0f} -> {sampler.peak_total:.0f}"))
            del body

    time_ok = median(times) <= args.target_seconds
    mem_ok = max(growths) <= args.target_mb
    ratio = median(times) / median(floor_times)
    cpu_ratio = median(cpu_rows) / max(1e-9, median(floor_cpu))
    ratio_ok = ratio <= args.target_ratio
    rows.append(("**median**", f"**{median(times):.3f}**", f"{median(cpu_rows):.2f}", "", "", "", "", "",
                 f"**{median(growths):+.0f}**", "", ""))
    rows.append(("floor (accept_floor.py), runs", " / ".join(f"{t:.3f}" for t in floor_times),
                 " / ".join(f"{c:.2f}" for c in floor_cpu), "", "", "", "", "",
                 " / ".join(f"{g:+.0f}" for g in floor_growths), "", ""))
    rows.append(("floor median", f"{median(floor_times):.3f}", f"{median(floor_cpu):.2f}", "", "", "", "", "",
                 f"{median(floor_growths):+.0f}", "", ""))
    rows.append(("**service / floor**", f"**{ratio:.2f} x**", f"{cpu_ratio:.2f} x", "", "", "", "", "", "", "", ""))
    print(f"Batch accept: {args.lots:,} lots x {args.photos} photo URLs, languages {','.join(languages)}; "
          f"body {body_mb:.1f} MB, built and signed by the client in {median(sign_s):.2f} s (not timed); "
          f"{args.server}" + (f" with {len(pids)} worker processes" if args.server == "gunicorn" else "")
          + f" on PostgreSQL; WORKER_ENABLED={extra['WORKER_ENABLED']}; a fresh job per run; 1-min load average "
            f"{load_before} before, {harness.load_average()} after (on {os.cpu_count()} CPUs).\n")
    print(harness.markdown_table(
        ("run", "POST -> 201 (s)", "CPU s in the serving worker", "CPU s in PostgreSQL", "serving pid", "RSS before (MB)", "peak RSS (MB)", "RSS after (MB)",
         "growth to peak (MB)", "growth kept (MB)", "all workers RSS before -> peak sum (MB)"), rows))
    print(f"\nTargets: median <= {args.target_seconds:g} s -> **{'met' if time_ok else 'MISSED'}** "
          f"({median(times):.3f} s); memory growth <= {args.target_mb:g} MB -> **{'met' if mem_ok else 'MISSED'}** "
          f"(largest growth to peak {max(growths):+.0f} MB); median <= {args.target_ratio:g} x the floor's -> "
          f"**{'met' if ratio_ok else 'MISSED'}** ({ratio:.2f} x: {median(times):.3f} s vs {median(floor_times):.3f} s; "
          f"CPU {cpu_ratio:.2f} x).")
    return 0


def post_to_floor(http: requests.Session, url: str, body: bytes, pids: list[int], timeout: float
                  ) -> tuple[float, float, float]:
    """(seconds to 201, CPU seconds of the floor's worker, its growth to peak in MB) for one POST of ``body``."""
    cpu_before = {pid: harness.cpu_seconds(pid) or 0.0 for pid in pids}
    with RssSampler(pids) as sampler:
        started = time.perf_counter()
        answer = http.post(f"{url}/api/v1/generate-descriptions", data=body,
                           headers={"Content-Type": "application/json"}, timeout=timeout)
        elapsed = time.perf_counter() - started
    if answer.status_code != 201:
        raise RuntimeError(f"floor answered HTTP {answer.status_code}: {answer.text[:300]}")
    busiest = sampler.busiest
    growth, _kept = sampler.growth(busiest)
    return elapsed, (harness.cpu_seconds(busiest) or 0.0) - cpu_before.get(busiest, 0.0), growth


if __name__ == "__main__":
    harness.run(main)
