#!/usr/bin/env python3
"""What a body costs the serving process before and after its signature is known.

Starts on 127.0.0.1: a scratch PostgreSQL database, the OpenAI sandbox, the loopback image server,
the service under gunicorn (gunicorn.conf.py, WORKER_ENABLED=false, so only the accept path runs)
and the parse-and-verify floor app (bench/accept_floor.py, gunicorn gthread, one worker). Then:

* unsigned: 8,000,000 empty lots (``{"lots":[{},{},...]}``, 24 MB) with a made-up signature, which
  must be refused with a 4xx, 100,000 nested ``[``, and ``X-Signature: sha256=é`` sent as raw UTF-8
  and Latin-1 bytes to a job route and to generate (403 expected);
* signed: 50,000 lots x 5 photo URLs (~18 MB, the published recipe), which must answer 201, and
  the same body POSTed to the floor app, which only parses and verifies it (the two in turn).

Each row: HTTP status, time from the first byte sent to the answer read, CPU seconds of the serving
process (and of PostgreSQL's backends for the signed body), and the serving process's memory growth to its peak (VmHWM reset through /proc/<pid>/clear_refs before each POST, and VmRSS
sampled every 20 ms). The unsigned bodies go first, to processes that have not yet grown.

Targets: 8M-lot body 4xx with growth <= 200 MB; signed accept median <= 2 x the floor's median.

    .venv/bin/python bench/hostile_body.py [--runs 3] [--lots 50000] [--photos 5] [--empty-lots 8000000]
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
    parser.add_argument("--runs", type=int, default=3, help="POSTs per row (default 3)")
    parser.add_argument("--lots", type=int, default=50_000)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--empty-lots", type=int, default=8_000_000)
    parser.add_argument("--target-mb", type=float, default=200.0)
    parser.add_argument("--target-ratio", type=float, default=2.0)
    parser.add_argument("--db-name", default="genservice_bench_hostile", help="scratch database; _<pid> is appended")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: harness.cpu_seconds(pid) or 0.0 for pid in pids}


def post(session: requests.Session, url: str, body: bytes, pids: list[int], timeout: float,
         database_pids=lambda: []) -> tuple[int, float, float, float, float]:
    """(status, seconds, growth to peak of the process that grew most (MB), its CPU seconds, PostgreSQL CPU seconds).

    CPU seconds are less disturbed than wall time by other work on a shared machine."""
    cpu_before = cpu_of(pids)
    database_before = cpu_of(database_pids())
    with RssSampler(pids) as sampler:
        started = time.perf_counter()
        answer = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout)
        elapsed = time.perf_counter() - started
    busiest = sampler.busiest
    growth, _kept = sampler.growth(busiest)
    cpu = (harness.cpu_seconds(busiest) or 0.0) - cpu_before.get(busiest, 0.0)
    database_after = cpu_of(database_pids())
    database = sum(value - database_before.get(pid, 0.0) for pid, value in database_after.items())
    return answer.status_code, elapsed, growth, cpu, database


def raw_request(base: str, method: str, path: str, signature: bytes, body: bytes | None) -> int:
    """One request whose X-Signature header is sent as the given bytes, as a hostile client would."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest(method, path)
        connection.putheader("X-Signature", signature)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def empty_lots_body(count: int) -> bytes:
    return b'{"signature":"sha256=' + b"0" * 64 + b'","version":"1.0.0","lots":[' + b"{}," * (count - 1) + b"{}]}"


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    verdicts = []
    load_before = harness.load_average()
    with harness.running_stack(args.db_name, SandboxOptions(), {"WORKER_ENABLED": "false"},
                               keep_logs=args.keep_logs) as stack, contextlib.ExitStack() as extra:
        floor_url, floor = harness.start_accept_floor(extra, stack.workdir)
        pids = stack.worker_pids()
        session = requests.Session()
        url = f"{stack.service_url}/api/v1/generate-descriptions"

        def measure(label: str, make_body, target: str, expect):
            statuses, times, growths, cpus = [], [], [], []
            size = 0.0
            for run in range(1, args.runs + 1):
                body = make_body(run)
                size = len(body) / 1e6
                status, elapsed, growth, cpu, _database = post(session, url, body, pids, args.timeout)
                del body
                note(f"{label} run {run}: {status} in {elapsed:.3f} s, growth {growth:+.0f} MB, CPU {cpu:.2f} s")
                statuses.append(status)
                times.append(elapsed)
                growths.append(growth)
                cpus.append(cpu)
            ok = all(expect(status) for status in statuses)
            rows.append((label, f"{size:.1f}", "/".join(sorted({str(s) for s in statuses})),
                         " / ".join(f"{t:.3f}" for t in times), f"**{median(times):.3f}**",
                         f"{median(cpus):.2f}", "–", f"{max(growths):+.0f}", target))
            return ok, max(growths)

        nested = b'{"lots":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        ok, _ = measure("unsigned: 100,000 nested `[`", lambda run: nested, "4xx", lambda s: 400 <= s < 500)
        verdicts.append(("nested body answers 4xx", ok, ""))
        # a non-ASCII signature header, sent as raw bytes (UTF-8 and Latin-1) to a job route and to generate
        statuses = []
        for raw_header in ("sha256=é".encode(), "sha256=é".encode("latin-1")):
            for method, path, payload in (("GET", f"/api/v1/batch-status/{'0' * 8}-0000-0000-0000-{'0' * 12}", None),
                                          ("POST", "/api/v1/generate-descriptions", b'{"lots":[{},{}]}')):
                statuses.append(raw_request(stack.service_url, method, path, raw_header, payload))
        note(f"non-ASCII X-Signature: {statuses}")
        rows.append(("unsigned: `X-Signature: sha256=é` (UTF-8 and Latin-1 bytes), job route and generate", "0.0",
                     "/".join(sorted({str(v) for v in statuses})), "", "", "", "–", "", "403"))
        verdicts.append(("non-ASCII signature answers 403", all(v == 403 for v in statuses), ""))
        empty = empty_lots_body(args.empty_lots)
        ok, growth = measure(f"unsigned: {args.empty_lots:,} empty lots, made-up signature", lambda run: empty,
                             f"4xx, growth <= {args.target_mb:g} MB", lambda s: 400 <= s < 500)
        del empty
        verdicts.append((f"{args.empty_lots:,} empty lots: 4xx and growth <= {args.target_mb:g} MB",
                         ok and growth <= args.target_mb, f"{growth:+.0f} MB"))

        # one signed body for every run (lot ids are unique per job, so it can be accepted again), POSTed
        # to the service and to the floor in turn, so both see the same load
        lots = harness.lots_with_images(args.lots, args.photos, stack.image_base, prefix="signed")
        body = harness.signed_generate_body(lots, ["en", "de", "fr"])
        del lots
        results = {"service": ([], [], [], [], []), "floor": ([], [], [], [], [])}
        targets = {"service": (url, lambda: pids), "floor": (f"{floor_url}/api/v1/generate-descriptions",
                                                             lambda: harness.floor_pids(floor))}
        for run in range(1, args.runs + 1):
            for name, (where, pids_of) in targets.items():
                measured = post(session, where, body, pids_of(), args.timeout, stack.database_backend_pids)
                note(f"signed {name} run {run}: {measured[0]} in {measured[1]:.3f} s, growth {measured[2]:+.0f} MB, "
                     f"CPU {measured[3]:.2f} s, PostgreSQL CPU {measured[4]:.2f} s")
                for bucket, value in zip(results[name], measured):
                    bucket.append(value)
        for name, label in (("service", f"signed: {args.lots:,} lots x {args.photos} URLs, the service"),
                            ("floor", "floor: the same body, json.loads + signature only (accept_floor.py)")):
            statuses, times, growths, cpus, database = results[name]
            rows.append((label, f"{len(body) / 1e6:.1f}", "/".join(sorted({str(v) for v in statuses})),
                         " / ".join(f"{t:.3f}" for t in times), f"**{median(times):.3f}**",
                         f"{median(cpus):.2f}", f"{median(database):.2f}", f"{max(growths):+.0f}", "201"))
        ratio = median(results["service"][1]) / median(results["floor"][1])
        cpu_ratio = median(results["service"][3]) / max(1e-9, median(results["floor"][3]))
        rows.append(("**service / floor**", "", "", "", f"**{ratio:.2f} x**", f"{cpu_ratio:.2f} x", "", "",
                     f"<= {args.target_ratio:g} x"))
        accepted = all(v == 201 for v in results["service"][0] + results["floor"][0])
        verdicts.append((f"signed accept <= {args.target_ratio:g} x its floor", accepted and ratio <= args.target_ratio,
                         f"{ratio:.2f} x ({median(results['service'][1]):.3f} s vs {median(results['floor'][1]):.3f} s)"))

    print(f"Hostile and signed bodies against gunicorn ({len(pids)} workers) on PostgreSQL, WORKER_ENABLED=false; "
          f"{args.runs} POSTs per row; 1-min load average {load_before} before, {harness.load_average()} after "
          f"(on {os.cpu_count()} CPUs).\n")
    print(harness.markdown_table(("request", "body (MB)", "status", "runs (s)", "median (s)",
                                  "serving process CPU (s)", "PostgreSQL CPU (s)", "largest growth to peak (MB)",
                                  "target"), rows))
    print()
    for label, ok, figure in verdicts:
        print(f"- {label}: **{'met' if ok else 'MISSED'}** {figure}")
    return 0


if __name__ == "__main__":
    harness.run(main)
