#!/usr/bin/env python3
"""Photo checks at scale: 250,000 distinct photo URLs against a loopback image server that answers
each request after 50 ms.

The server is a small aiohttp app in --server-processes processes sharing one port (SO_REUSEPORT),
so it is not the bottleneck; its CPU per request is printed beside the client's. Two clients check
the same number of distinct URLs (fresh names each, nothing cached):

* the floor: a bare aiohttp loop sending the same HEADs with the same number in flight, no SSRF
  guard, no redirects, no verdicts;
* the service's ImageChecker (services/images.py) through check_many_lots, as the batch worker
  calls it: the SSRF guard on every URL and on the address connected to, per-host cap, deadline
  per check, HEAD then GET when needed, verdicts expanded back to lots.

Both run in this process; CPU per check is this process's CPU time (every thread) divided by the
checks. Target: all 250,000 in at most 120 s.

    .venv/bin/python bench/photo_checks.py [--urls 250000] [--in-flight 512] [--delay 0.05]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time

import harness
from harness import note

TARGET_SECONDS = 120.0
SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photo_server.py")


# ---- the image server (run as child processes, bench/photo_server.py) ------------------------------

def start_servers(stack, count: int, delay: float) -> tuple[int, list[harness.Process]]:
    port = harness.free_port()
    processes = []
    for index in range(count):
        process = harness.Process(f"photo-server-{index}", [harness.PYTHON, SERVER, "--port", str(port),
                                                            "--delay", str(delay)])
        stack.callback(process.stop)
        processes.append(process)
    harness.wait_http(f"http://{harness.HOST}:{port}/img/ready.jpg", 20)
    return port, processes


# ---- the two clients ----------------------------------------------------------------------------------

async def bare_heads(urls: list[str], in_flight: int) -> int:
    """The floor: HEAD every URL with ``in_flight`` workers on one plain aiohttp session."""
    import aiohttp

    ok = 0
    iterator = iter(urls)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal ok
            for url in iterator:
                async with session.head(url, allow_redirects=False) as response:
                    ok += response.status == 200 and response.headers.get("Content-Type", "").startswith("image/")

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return ok


def checker_run(urls: list[str], in_flight: int, page: int) -> int:
    from services.images import ImageChecker
    from services.netguard import OutboundPolicy

    policy = OutboundPolicy(allow_private=True, allowed_hosts=(harness.HOST,))
    ok = 0
    with ImageChecker(policy, timeout=10.0, concurrency=in_flight, host_concurrency=in_flight) as checker:
        for start in range(0, len(urls), page):
            lots = [[url] for url in urls[start:start + page]]
            ok += sum(len(result.valid_urls) for result in checker.check_many_lots(lots))
    return ok


def sync_run(base: str, runs: int, photos: int) -> dict:
    """The sync path: one lot's photos through check_many, ``runs`` times, beside 20 bare concurrent HEADs."""
    import statistics

    import aiohttp

    from services.images import ImageChecker
    from services.netguard import OutboundPolicy

    policy = OutboundPolicy(allow_private=True, allowed_hosts=(harness.HOST,))
    service, floor = [], []
    with ImageChecker(policy) as checker:  # the service's defaults: 256 in flight, 32 per host
        for run in range(runs):
            urls = [f"{base}/sync-{run}/photo-{n}.jpg" for n in range(photos)]
            started = time.perf_counter()
            valid = len(checker.check_many(urls).valid_urls)
            service.append(time.perf_counter() - started)
            if valid != photos:
                raise RuntimeError(f"sync run {run}: {valid} of {photos} photos valid")

    async def bare() -> None:
        async with aiohttp.ClientSession() as session:
            async def head(url: str) -> None:
                async with session.head(url) as response:
                    assert response.status == 200
            for run in range(runs):
                started = time.perf_counter()
                await asyncio.gather(*(head(f"{base}/sync-floor-{run}/photo-{n}.jpg") for n in range(photos)))
                floor.append(time.perf_counter() - started)

    asyncio.run(bare())

    def summary(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered) * 1000, ordered[int(0.9 * (len(ordered) - 1))] * 1000
    return {"service": summary(service), "floor": summary(floor)}


def measure(name: str, run, count: int, servers: list[harness.Process]) -> dict:
    note(f"{name}: {count} checks ...")
    cpu_before = time.process_time()
    server_before = sum(harness.cpu_seconds(p.pid) or 0.0 for p in servers)
    started = time.perf_counter()
    ok = run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server_cpu = sum(harness.cpu_seconds(p.pid) or 0.0 for p in servers) - server_before
    note(f"{name}: {ok} ok in {elapsed:.1f} s")
    return {"name": name, "count": count, "ok": ok, "seconds": elapsed, "rate": count / elapsed,
            "cpu_ms": 1000 * cpu / count, "server_ms": 1000 * server_cpu / count}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=250_000, help="distinct photo URLs per client (250000)")
    parser.add_argument("--in-flight", type=int, default=512,
                        help="requests in flight, for both clients (IMAGE_CHECK_CONCURRENCY and, the server being "
                             "one host, IMAGE_HOST_CONCURRENCY; default 512)")
    parser.add_argument("--page", type=int, default=25_000,
                        help="lots of one photo per check_many_lots call (default 25000)")
    parser.add_argument("--delay", type=float, default=0.05, help="server seconds before each answer (0.05)")
    parser.add_argument("--server-processes", type=int, default=2, help="image server processes (2)")
    parser.add_argument("--sync-runs", type=int, default=40,
                        help="one-lot check_many calls of --sync-photos photos for the sync row (40; 0 skips)")
    parser.add_argument("--sync-photos", type=int, default=20, help="photos per sync call (20, the sync maximum)")
    parser.add_argument("--skip-floor", action="store_true", help="measure the service's checker only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.install_signal_handlers()
    import contextlib

    load_before = harness.load_average()
    rows = []
    with contextlib.ExitStack() as stack:
        port, servers = start_servers(stack, args.server_processes, args.delay)
        base = f"http://{harness.HOST}:{port}"
        results = []
        if not args.skip_floor:
            floor_urls = [f"{base}/floor/{n}.jpg" for n in range(args.urls)]
            results.append(measure("floor: bare aiohttp HEADs, no guard", lambda: asyncio.run(
                bare_heads(floor_urls, args.in_flight)), args.urls, servers))
        sync = sync_run(base, args.sync_runs, args.sync_photos) if args.sync_runs else None
        urls = [f"{base}/lot-{n // 5}/photo-{n % 5}.jpg" for n in range(args.urls)]
        results.append(measure("service: ImageChecker.check_many_lots", lambda: checker_run(
            urls, args.in_flight, args.page), args.urls, servers))
    for r in results:
        rows.append((r["name"], f"{r['count']:,}", f"{r['ok']:,}", f"{r['seconds']:.1f}", f"{r['rate']:,.0f}",
                     f"{r['cpu_ms']:.3f}", f"{r['server_ms']:.3f}"))
    print(f"Photo checks: {args.urls:,} distinct URLs per client against a loopback aiohttp image server "
          f"({args.server_processes} processes on one port) answering each request after {args.delay * 1000:g} ms; "
          f"{args.in_flight} in flight; service pages of {args.page:,} lots of one photo; "
          f"1-min load average {load_before} before, {harness.load_average()} after (on {os.cpu_count()} CPUs).\n")
    print(harness.markdown_table(("client", "checks", "ok", "seconds", "checks/s", "client CPU ms/check",
                                  "server CPU ms/request"), rows))
    if sync:
        print(f"\nSync path ({args.sync_photos} photos of one lot per call, {args.sync_runs} calls, service defaults: "
              "256 in flight, 32 per host):\n")
        print(harness.markdown_table(("client", "median ms", "p90 ms"), [
            ("floor: bare aiohttp, the HEADs at once", f"{sync['floor'][0]:.1f}", f"{sync['floor'][1]:.1f}"),
            ("service: ImageChecker.check_many", f"{sync['service'][0]:.1f}", f"{sync['service'][1]:.1f}")]))
    service = results[-1]
    verdict = "met" if service["seconds"] <= TARGET_SECONDS and service["ok"] == service["count"] else "MISSED"
    print(f"\nTarget: all {args.urls:,} checked in at most {TARGET_SECONDS:g} s -> **{verdict}** "
          f"({service['seconds']:.1f} s, {service['ok']:,} ok)."
          + (f" Service at {service['rate'] / results[0]['rate']:.2f} of the floor's rate, "
             f"{service['cpu_ms'] / results[0]['cpu_ms']:.1f}x its CPU per check." if len(results) > 1 else ""))
    return 0


if __name__ == "__main__":
    harness.run(main)
