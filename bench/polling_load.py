#!/usr/bin/env python3
"""Polling load: many clients on GET /api/v1/batch-status/{job_id} while a 50,000-lot job is in progress,
and whether the background worker keeps its pace meanwhile.

Starts on 127.0.0.1 (bench/harness.py): a scratch PostgreSQL database, the OpenAI sandbox, the
loopback image server and the service under gunicorn with its worker on (WORKER_POLL_INTERVAL=1,
rate limits off so the clients measure the service, not the limiter).

1. A job of --lots lots is created through the API. The sandbox keeps its vision batch in_progress
   for an hour, so once its photos are checked and the batch is submitted, it stays in processing
   and the workers look at it every poll interval, as in production.
2. Without load: --probes small probe jobs (--probe-lots lots, en+de) run one after another; each is
   timed from POST to "photos checked, vision batch submitted" and to "completed" (the sandbox
   answers their batches in about a second). The worker heartbeats' age is sampled meanwhile.
3. With load, once per --think-ms value (default 0 and 1000): --clients clients poll the big job's
   status for --duration seconds (after a 5 s warm-up at the same pace, so that every gunicorn thread
   has its database connection), signed with the spec's X-Signature, each on a keep-alive
   connection, back to back (0: the service's saturation) or pausing after each answer for a
   random time averaging that many ms (1000: about one poll a second per client; exponential
   pauses, so the clients do not poll in lockstep, cut at 4 s, within gunicorn's keep-alive).
   Back to back, wrk drives the load when installed (apt-get install wrk); paced clients are Python
   threads that each start at a random moment of their first pause, as independent clients would
   (--client wrk or python forces one generator for every phase). The same probe jobs run meanwhile.

A worker that the polling slowed down shows as slower probe jobs and older heartbeats under load.
Only the table goes to stdout; progress goes to stderr.

    .venv/bin/python bench/polling_load.py [--clients 100] [--duration 60] [--think-ms 0,1000] [--lots 50000]
                                           [--client auto|wrk|python] [--workers N]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

import psycopg
import requests

import harness
from harness import SandboxOptions, median, note

LANGUAGES = ["en", "de"]
WARM_UP_SECONDS = 5
MAX_PAUSE_MS = 4000  # below gunicorn's keep-alive (5 s): a client never reuses a connection the server closed
WRK_SCRIPT = """
wrk.method = "GET"
wrk.headers["X-Signature"] = "%(signature)s"
local think = %(think_ms)d
init = function(args)
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6) %% 1000)
end
local connections = %(connections_per_thread)d
local calls = 0
if think > 0 then
  -- independent clients: exponential pauses with this mean, so the clients do not poll in lockstep,
  -- cut at 4 s so that no client sends on a connection gunicorn closed (its keep-alive is 5 s).
  -- wrk also pauses before a connection's first request; the first call per connection answers 0, as a
  -- real client sends its request as soon as it has connected (gunicorn gives a new connection a thread
  -- that waits for its first request, so connections left idle would hold every thread and measure wrk)
  delay = function()
    calls = calls + 1
    if calls <= connections then return 0 end
    return math.min(%(max_pause_ms)d, math.floor(-math.log(1 - math.random()) * think))
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,' ..
    '"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="concurrent polling clients (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of polling (default 60)")
    parser.add_argument("--think-ms", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=[0, 1000],
                        help="pause of each client between its requests, one load phase per value "
                             "(default 0,1000: back to back, then about one poll a second per client)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk if installed (auto), or Python threads")
    parser.add_argument("--lots", type=int, default=50_000, help="lots of the job being polled (default 50,000)")
    parser.add_argument("--photos", type=int, default=1, help="photo URLs per lot of the big job (default 1)")
    parser.add_argument("--probes", type=int, default=3, help="probe jobs without load (default 3)")
    parser.add_argument("--probe-lots", type=int, default=200, help="lots per probe job (default 200)")
    parser.add_argument("--no-probes-under-load", dest="probes_under_load", action="store_false",
                        help="poll without running probe jobs meanwhile (latency of polling alone)")
    parser.add_argument("--workers", type=int, default=None,
                        help="GUNICORN_WORKERS (default: unset, gunicorn.conf.py picks min(4, 2 x CPUs))")
    parser.add_argument("--worker-processes", type=int, default=0,
                        help="run the background worker in this many `genservice worker` processes and the web "
                             "tier with WORKER_ENABLED=false (default 0: a worker thread in every gunicorn worker)")
    parser.add_argument("--target-p99-ms", type=float, default=50.0)
    parser.add_argument("--db-name", default="genservice_bench_polling")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


# ---- database readings -----------------------------------------------------------------------------

class Readings:
    """Reads job progress and worker heartbeats straight from PostgreSQL (costs the service nothing)."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url, autocommit=True)
        self.lock = threading.Lock()

    def job(self, job_id: str) -> tuple[str, str | None, int, int]:
        with self.lock:
            return self.conn.execute("SELECT status, openai_vision_batch_id, processed_lots, failed_lots "
                                     "FROM batch_jobs WHERE id = %s", (job_id,)).fetchone()

    def pending_lots(self, job_id: str) -> int:
        with self.lock:
            return self.conn.execute("SELECT count(*) FROM batch_lots WHERE job_id = %s AND status = 'pending'",
                                     (job_id,)).fetchone()[0]

    def lock_waiters(self) -> int:
        """Sessions of the service's database waiting for a lock right now (row, tuple or relation locks)."""
        with self.lock:
            return self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'").fetchone()[0]

    def heartbeat_ages(self) -> dict[int, float]:
        """Seconds since each live worker process last beat, by pid."""
        with self.lock:
            rows = self.conn.execute("SELECT pid, extract(epoch FROM now() - last_beat_at) FROM worker_heartbeats"
                                     ).fetchall()
        return {pid: float(age) for pid, age in rows}

    def close(self) -> None:
        self.conn.close()


class HeartbeatSampler:
    """The oldest heartbeat seen while sampling, and whose it was (a worker thread busy or stalled that long);
    and how often any session of the service waited for a database lock (sampled every 0.1 s)."""

    def __init__(self, readings: Readings, interval: float = 0.5, lock_interval: float = 0.1):
        self.readings = readings
        self.interval = interval
        self.lock_interval = lock_interval
        self.oldest = (0.0, None)
        self.lock_samples = 0
        self.lock_waits = 0  # samples that found a session waiting for a lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(self.lock_interval):
            self.lock_samples += 1
            if self.readings.lock_waiters():
                self.lock_waits += 1
            if time.monotonic() >= next_beat:
                next_beat += self.interval
                for pid, age in self.readings.heartbeat_ages().items():
                    if age > self.oldest[0]:
                        self.oldest = (age, pid)

    def __enter__(self) -> "HeartbeatSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        note(f"oldest worker heartbeat: {self.oldest[0]:.1f} s (pid {self.oldest[1]}); a session waited for "
             f"a lock in {self.lock_waits} of {self.lock_samples} samples")


def cpu_seconds(pids) -> float:
    """User + system CPU time used so far by these processes (from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


# ---- jobs ------------------------------------------------------------------------------------------

def post_job(http: requests.Session, service: str, lots: list[dict]) -> str:
    body = harness.signed_generate_body(lots, LANGUAGES)
    answer = http.post(f"{service}/api/v1/generate-descriptions", data=body,
                       headers={"Content-Type": "application/json"}, timeout=300)
    if answer.status_code != 201:
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:500]}")
    return answer.json()["job_id"]


def wait_job(readings: Readings, job_id: str, until: str, timeout: float) -> float:
    """Seconds until the job's vision batch is submitted (``until="submitted"``) or it ends ("ended")."""
    started = time.monotonic()
    last_note = started
    while time.monotonic() - started < timeout:
        status, batch_id, processed, failed = readings.job(job_id)
        if until == "submitted" and batch_id:
            return time.monotonic() - started
        if status in ("completed", "failed", "cancelled"):
            if until == "submitted" or status != "completed":
                raise RuntimeError(f"job {job_id} ended {status} before {until}")
            return time.monotonic() - started
        if time.monotonic() - last_note > 10:
            last_note = time.monotonic()
            note(f"job {job_id[:8]}: {status}, {readings.pending_lots(job_id):,} lots still to check")
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not {until} after {timeout:.0f} s")


def run_probe(http, service: str, readings: Readings, image_base: str, name: str, lots: int) -> tuple[float, float]:
    started = time.monotonic()
    job_id = post_job(http, service, harness.lots_with_images(lots, 1, image_base, prefix=name))
    wait_job(readings, job_id, "submitted", 120)
    submitted = time.monotonic() - started
    wait_job(readings, job_id, "ended", 300)
    return submitted, time.monotonic() - started


# ---- load generators -------------------------------------------------------------------------------

def wrk_load(url: str, signature: str, clients: int, duration: float, think_ms: int) -> dict:
    threads = max(1, min(clients, os.cpu_count() or 1))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"signature": signature, "think_ms": think_ms, "max_pause_ms": MAX_PAUSE_MS,
                                   "connections_per_thread": -(-clients // threads)})
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration:g}s", "--timeout",
                              "10s", "-s", script.name, url], capture_output=True, text=True,
                             timeout=duration + 60)
    finally:
        os.unlink(script.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line)
    return {"requests": data["requests"], "seconds": data["duration_us"] / 1e6,
            "errors": data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"],
            "p50": data["p50"] / 1000, "p90": data["p90"] / 1000, "p99": data["p99"] / 1000,
            "max": data["max"] / 1000, "tool": "wrk"}


def python_load(url: str, signature: str, clients: int, duration: float, think_ms: int) -> dict:
    parts = urllib.parse.urlsplit(url)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        mine = latencies[index]
        start_gate.wait()
        if think_ms:
            # independent clients arrive at their own moments: each connects and sends its first request
            # at a random point of its first pause, not all 100 in the same millisecond
            time.sleep(rng.uniform(0, min(MAX_PAUSE_MS, think_ms)) / 1000)
        while time.monotonic() < deadline[0]:
            began = time.perf_counter()
            try:
                conn.request("GET", parts.path, headers={"X-Signature": signature})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[index] += 1
            except OSError:
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                continue
            mine.append((time.perf_counter() - began) * 1000)
            if think_ms:
                time.sleep(min(MAX_PAUSE_MS, rng.expovariate(1 / think_ms)) / 1000)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline[0] = began + duration
    start_gate.wait()
    for thread in threads:
        thread.join(duration + 30)
    seconds = time.monotonic() - began
    merged = sorted(value for values in latencies for value in values)
    if not merged:
        raise RuntimeError("no request succeeded")

    def pct(p: float) -> float:
        return merged[min(len(merged) - 1, int(round(p / 100 * (len(merged) - 1))))]
    return {"requests": len(merged) + sum(errors), "seconds": seconds, "errors": sum(errors), "p50": pct(50),
            "p90": pct(90), "p99": pct(99), "max": merged[-1], "tool": "python threads"}


# ---- the bench -------------------------------------------------------------------------------------

def probes_while(condition, http, stack, readings, prefix: str, lots: int, count: int | None,
                 spare: float) -> list[tuple[float, float]]:
    """Run probe jobs one after another: ``count`` of them, or while ``condition()`` holds and a probe
    (about ``spare`` seconds) still fits."""
    results = []
    index = 0
    while (count is not None and index < count) or (count is None and condition(spare)):
        results.append(run_probe(http, stack.service_url, readings, stack.image_base, f"{prefix}{index}", lots))
        note(f"probe {prefix}{index}: photos checked and batch submitted in {results[-1][0]:.2f} s, "
             f"completed in {results[-1][1]:.2f} s")
        index += 1
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --client python")

    def generator(think_ms: int):
        """wrk for back-to-back load (a Python client could not saturate the service); Python threads for
        paced clients, since wrk opens every connection at the same instant and sends all first requests
        together, which measures that burst rather than 100 independent clients."""
        tool = args.client
        if tool == "auto":
            tool = "wrk" if shutil.which("wrk") and not think_ms else "python"
        return wrk_load if tool == "wrk" else python_load
    extra = {"WORKER_ENABLED": "true", "WORKER_POLL_INTERVAL": "1"}
    # the big job's vision batch stays in_progress for an hour; probes' batches are made quick later
    sandbox = SandboxOptions(batch_in_progress_seconds=3600)
    load_before = harness.load_average()
    with harness.running_stack(args.db_name, sandbox, extra, workers=args.workers, keep_logs=args.keep_logs,
                               worker_processes=args.worker_processes) as stack:
        sandbox_root = stack.sandbox_url.rsplit("/v1", 1)[0]
        readings = Readings(stack.database_url)
        http = requests.Session()
        try:
            note(f"creating the {args.lots:,}-lot job")
            lots = harness.lots_with_images(args.lots, args.photos, stack.image_base, prefix="big")
            started = time.monotonic()
            big = post_job(http, stack.service_url, lots)
            accepted = time.monotonic() - started
            del lots
            checked = wait_job(readings, big, "submitted", 1800)
            note(f"big job {big}: accepted in {accepted:.1f} s; photos checked and vision batch submitted "
                 f"{checked:.1f} s later; it now stays in processing")
            answer = http.post(f"{sandbox_root}/sandbox/config", json={"batch_in_progress_seconds": 1.0}, timeout=10,
                               headers=harness.SANDBOX_CONTROL_HEADERS)
            answer.raise_for_status()
            # building and uploading the big shard is one long step, during which that process does not beat;
            # start measuring once every worker has beaten since
            fresh = time.monotonic()
            while max(readings.heartbeat_ages().values(), default=0) > 8 and time.monotonic() - fresh < 300:
                time.sleep(0.5)
            note(f"every worker beat within 8 s after {time.monotonic() - fresh:.1f} s")

            with HeartbeatSampler(readings) as idle_beats:
                idle = probes_while(None, http, stack, readings, "idle", args.probe_lots, args.probes, 0)
            idle_load = os.getloadavg()[0]
            spare = 1.5 * median([p[1] for p in idle])

            url = f"{stack.service_url}/api/v1/batch-status/{big}"
            signature = harness.header_signature(big)
            check = http.get(url, headers={"X-Signature": signature}, timeout=10)
            if check.status_code != 200 or check.json()["status"] != "processing":
                raise RuntimeError(f"the big job is not being processed: {check.status_code} {check.text[:300]}")
            phases = []
            for think_ms in args.think_ms:
                load = generator(think_ms)
                note(f"warming up for {WARM_UP_SECONDS} s (database connections of every gunicorn thread, "
                     f"keep-alive connections)")
                load(url, signature, args.clients, WARM_UP_SECONDS, think_ms)
                note(f"{load.__name__}: {args.clients} clients polling {url} for {args.duration:g} s, "
                     f"pausing {think_ms} ms on average between a client's requests")
                outcome: dict = {}
                runner = threading.Thread(target=lambda: outcome.update(
                    load(url, signature, args.clients, args.duration, think_ms)), daemon=True)
                pids = stack.service_pids()
                cpu_before = cpu_seconds(pids)
                load_started = time.monotonic()
                runner.start()
                with HeartbeatSampler(readings) as beats:
                    time.sleep(min(2.0, args.duration / 10))  # let the clients connect first
                    probes = probes_while(lambda need: args.probes_under_load and
                                          time.monotonic() - load_started + need < args.duration,
                                          http, stack, readings, f"busy{think_ms}-", args.probe_lots, None, spare)
                    runner.join(args.duration + 90)
                if not outcome:
                    raise RuntimeError("the load generator did not report")
                outcome["cpu_ms"] = (cpu_seconds(pids) - cpu_before) * 1000 / max(1, outcome["requests"])
                outcome["loadavg"] = os.getloadavg()[0]
                note(f"{outcome['requests']:,} requests, p50 {outcome['p50']:.1f} ms, p99 {outcome['p99']:.1f} ms, "
                     f"{outcome['errors']} errors")
                phases.append((think_ms, outcome, probes, beats))
            still = readings.job(big)[0]
            if still != "processing":
                raise RuntimeError(f"the big job left processing during the bench: {still}")
        finally:
            readings.close()

    def probe_cells(probes, beats):
        locks = f"{beats.lock_waits} / {beats.lock_samples}"
        if not probes:
            return ["0", "-", "-", f"{beats.oldest[0]:.1f}", locks]
        return [str(len(probes)), f"{median([p[0] for p in probes]):.2f}", f"{median([p[1] for p in probes]):.2f}",
                f"{beats.oldest[0]:.1f}", locks]

    rows = [["no polling", "-", "-", "-", "-", "-", "-", "-", "-", *probe_cells(idle, idle_beats), f"{idle_load:.1f}"]]
    for think_ms, outcome, probes, beats in phases:
        pace = "back to back" if not think_ms else f"pausing {think_ms} ms on average"
        met = "met" if outcome["p99"] <= args.target_p99_ms else "missed"
        rows.append([f"{args.clients} clients, {pace} ({outcome['tool']})", f"{outcome['requests']:,}",
                     f"{outcome['requests'] / outcome['seconds']:,.0f}", f"{outcome['p50']:.1f}",
                     f"{outcome['p99']:.1f} ({met})", f"{outcome['p90']:.1f}", f"{outcome['max']:.0f}",
                     str(outcome["errors"]), f"{outcome['cpu_ms']:.1f}", *probe_cells(probes, beats),
                     f"{outcome['loadavg']:.1f}"])
    print(harness.markdown_table(
        ("load", "requests", "throughput (req/s)", "p50 (ms)", f"p99 (ms, target <= {args.target_p99_ms:g})",
         "p90 (ms)", "max (ms)", "errors", "service CPU per request (ms)", f"probe jobs ({args.probe_lots} lots, en+de)",
         "probe: accepted -> photos checked, batch submitted (s)", "probe: accepted -> completed (s)",
         "oldest worker heartbeat (s)", "samples with a session waiting for a lock", "machine load average (1 min)"),
        rows))
    where = (f"{args.worker_processes} `genservice worker` process(es), web tier with WORKER_ENABLED=false"
             if args.worker_processes else "a worker thread in each gunicorn worker")
    note(f"{args.lots:,}-lot job polled; gunicorn workers: {args.workers or 'gunicorn.conf.py default'}; {where}; "
         f"1-min load average {load_before} before, {harness.load_average()} after, on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    harness.run(main)
