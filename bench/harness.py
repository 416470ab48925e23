"""What every bench needs: a scratch PostgreSQL database, the OpenAI sandbox, the loopback image
server and the service under gunicorn, each on 127.0.0.1, all torn down on exit, failure or Ctrl-C.

Only the bench scripts import this. Progress goes to stderr (``note``); stdout is left for the
markdown table.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_KEY = "bench-shared-key-0123456789-abcdefghijklmnop"
# the sandbox's control endpoints want a token; each bench run makes its own
SANDBOX_CONTROL_TOKEN = secrets.token_urlsafe(24)
SANDBOX_CONTROL_HEADERS = {"X-Sandbox-Token": SANDBOX_CONTROL_TOKEN}
PYTHON = sys.executable

_started = time.monotonic()


def note(message: str) -> None:
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def load_average() -> str:
    """The 1-minute load average, printed with each table: the machine may be shared with other work."""
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[0]
    except OSError:
        return "?"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- signals ---------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def run(main: "Callable[[], int]") -> None:
    """Run a bench's main, exiting 130 (and saying so on stderr) when it is interrupted."""
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP unwind the stack like Ctrl-C does, so every ``finally`` and ExitStack runs."""
    def handler(signum, _frame):
        raise Interrupted(f"signal {signum}")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)
    # Ctrl-C too, even when the bench was started with SIGINT ignored (a background job of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- processes -------------------------------------------------------------------------------

class Process:
    """A child in its own process group, so the group (e.g. gunicorn and its workers) can be ended."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, log_dir: str | None = None,
                 stdout=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log") if log_dir else None
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=stdout if stdout is not None else self._log,
                                     stderr=self._log, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                note(f"{self.name} did not stop in {timeout:.0f}s; killing it")
        # the group may outlive its leader (workers of a killed master): end whatever is left of it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def tail(self, lines: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as fh:
            return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")


def wait_http(url: str, timeout: float, process: Process | None = None, ok=(200,),
              headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.tail()}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status in ok:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    tail = process.tail() if process is not None else ""
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s (last: {last})\n{tail}")


# ---- PostgreSQL --------------------------------------------------------------------------------

@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """Create ``name``_<pid> afresh (dropping a leftover), yield its URL, drop it afterwards.

    The pid keeps two runs of the same bench (or a bench and its neighbour) from dropping each
    other's database halfway through.
    """
    import psycopg

    name = f"{name}_{os.getpid()}"

    def admin(sql: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)

    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    note(f"database {name} created")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        try:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            note(f"database {name} dropped")
        except Exception as exc:  # the bench result matters more than the cleanup error
            note(f"could not drop database {name}: {exc}")


# ---- the pieces ------------------------------------------------------------------------------

@dataclass
class SandboxOptions:
    vision_latency: float = 0.0
    text_latency: float = 0.0
    batch_validating_seconds: float = 0.0
    batch_in_progress_seconds: float = 0.0
    batch_finalizing_seconds: float = 0.0

    def argv(self) -> list[str]:
        return ["--vision-latency", str(self.vision_latency), "--text-latency", str(self.text_latency),
                "--batch-validating-seconds", str(self.batch_validating_seconds),
                "--batch-in-progress-seconds", str(self.batch_in_progress_seconds),
                "--batch-finalizing-seconds", str(self.batch_finalizing_seconds)]


# the test fixture's image server (its listen backlog is 4096, like a CDN's, so concurrent checks do not
# wait for SYN retransmits)
IMAGE_SERVER_CODE = """
import signal, sys, threading
from tests.support.image_server import ImageServer
server = ImageServer("127.0.0.1").start()
print(server.port, flush=True)
stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())
try:
    stopped.wait()
except KeyboardInterrupt:
    pass
server.stop()
"""


@dataclass
class Stack:
    """The running pieces; ``service_url`` is the gunicorn (or main.py) server."""
    workdir: str
    database_url: str
    sandbox_url: str
    image_base: str
    service_url: str
    server: Process
    processes: list[Process] = field(default_factory=list)

    def helper_pid(self, name: str) -> int | None:
        """The pid of the image server ("image-server") or the sandbox ("sandbox")."""
        return next((p.pid for p in self.processes if p.name == name), None)

    def database_backend_pids(self) -> list[int]:
        """PostgreSQL backends connected to the scratch database (the service's connections)."""
        import psycopg

        name = self.database_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            return [row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))]

    def cpu_groups(self) -> dict[str, "Callable[[], list[int]]"]:
        """What CpuMeter watches: the service's processes, the helpers and the database backends."""
        return {
            "service": self.service_pids,
            "PostgreSQL": self.database_backend_pids,
            "sandbox": lambda: [pid for pid in [self.helper_pid("sandbox")] if pid],
            "image server": lambda: [pid for pid in [self.helper_pid("image-server")] if pid],
            "bench client": lambda: [os.getpid()],
        }

    def worker_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master), or the server itself for main.py."""
        children = _children(self.server.pid)
        return children or [self.server.pid]

    def service_pids(self) -> list[int]:
        """Every process of the service: the web workers and any background worker of its own."""
        return self.worker_pids() + [p.pid for p in self.processes if p.name.startswith("worker-") and p.alive()]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                            found.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return found


IMAGE_SERVERS = ("asyncio", "threaded")


def start_image_server(stack: contextlib.ExitStack, log_dir: str, processes: list[Process] | None = None,
                       kind: str = "asyncio") -> str:
    """The loopback photo host: ``asyncio`` (bench/photo_server.py, a bare protocol on one event loop,
    ~20 µs of CPU a request) or ``threaded`` (the test suite's ImageServer, a thread per connection,
    ~0.25 ms)."""
    if kind == "asyncio":
        argv = [PYTHON, os.path.join(ROOT, "bench", "photo_server.py"), "--port", "0"]
    elif kind == "threaded":
        argv = [PYTHON, "-c", IMAGE_SERVER_CODE]
    else:
        raise ValueError(f"image server kind {kind!r}: one of {IMAGE_SERVERS}")
    process = Process("image-server", argv, env=dict(os.environ, PYTHONPATH=ROOT), log_dir=log_dir,
                      stdout=subprocess.PIPE)
    stack.callback(process.stop)
    if processes is not None:
        processes.append(process)
    line = process.proc.stdout.readline().decode().strip()
    if not line.isdigit():
        raise RuntimeError(f"image server did not start:\n{process.tail()}")
    base = f"http://{HOST}:{int(line)}"
    wait_http(f"{base}/img/probe.jpg", 10, process)
    note(f"image server on {base}")
    return base


def start_sandbox(stack: contextlib.ExitStack, log_dir: str, options: SandboxOptions,
                  processes: list[Process] | None = None) -> str:
    port = free_port()
    process = Process("sandbox", [PYTHON, "-m", "services.sandbox", "--host", HOST, "--port", str(port),
                                  *options.argv()], env=dict(os.environ, SANDBOX_CONTROL_TOKEN=SANDBOX_CONTROL_TOKEN),
                      log_dir=log_dir)
    stack.callback(process.stop)
    if processes is not None:
        processes.append(process)
    root = f"http://{HOST}:{port}"
    wait_http(f"{root}/sandbox/config", 20, process, headers=SANDBOX_CONTROL_HEADERS)
    note(f"sandbox on {root} ({' '.join(options.argv())})")
    return f"{root}/v1"


def service_env(database_url: str, sandbox_url: str, workdir: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):  # the service reads only what the bench sets
        if name.startswith(("OPENAI_", "SANDBOX_", "GUNICORN_", "PROMETHEUS_")) or name in (
                "DATABASE_URL", "SHARED_KEY", "SHARED_KEYS", "BATCH_VALIDATE_IMAGES", "WORKER_ENABLED"):
            del env[name]
    metrics_dir = os.path.join(workdir, "metrics")
    os.makedirs(metrics_dir, exist_ok=True)
    env.update({
        "DATABASE_URL": database_url,
        "SHARED_KEY": BENCH_KEY,
        "OPENAI_BASE_URL": sandbox_url,
        "OPENAI_API_KEY": "",
        "OPENAI_SANDBOX": "true",
        "ALLOW_PRIVATE_URLS": "true",
        "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1,localhost,::1",
        "RATELIMIT_ENABLED": "false",
        "LOG_LEVEL": "warning",
        "INSTANCE_PATH": os.path.join(workdir, "instance"),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def start_service(stack: contextlib.ExitStack, log_dir: str, env: dict[str, str], server: str = "gunicorn",
                  workers: int | None = None) -> tuple[str, Process]:
    port = free_port()
    env = dict(env, HOST=HOST, PORT=str(port), GUNICORN_BIND=f"{HOST}:{port}")
    if workers is not None:
        env["GUNICORN_WORKERS"] = str(workers)
    if server == "gunicorn":
        # --no-control-socket: gunicorn 27's default socket path is shared by every instance on the host
        argv = [os.path.join(os.path.dirname(PYTHON), "gunicorn"), "-c", "gunicorn.conf.py", "--no-control-socket",
                "main:app"]
    else:
        argv = [PYTHON, "main.py"]
    process = Process("service", argv, env=env, log_dir=log_dir)
    stack.callback(process.stop)
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/health", 60, process)
    note(f"service ({server}) on {url}, pid {process.pid}")
    return url, process


def start_worker_processes(stack: contextlib.ExitStack, log_dir: str, env: dict[str, str], count: int,
                           processes: list[Process]) -> None:
    """``genservice worker`` processes: the background worker without HTTP, beside a web tier that runs
    with WORKER_ENABLED=false."""
    argv = [os.path.join(os.path.dirname(PYTHON), "genservice"), "worker"]
    for index in range(count):
        process = Process(f"worker-{index}", argv, env=dict(env, WORKER_ENABLED="true"), log_dir=log_dir)
        stack.callback(process.stop)
        processes.append(process)
    note(f"{count} background worker process(es): {[p.pid for p in processes if p.name.startswith('worker-')]}")


@contextlib.contextmanager
def running_stack(db_name: str, sandbox: SandboxOptions, service_extra: dict[str, str] | None = None,
                  server: str = "gunicorn", workers: int | None = None, keep_logs: bool = False,
                  worker_processes: int = 0, image_server: str = "asyncio") -> Iterator[Stack]:
    install_signal_handlers()
    workdir = tempfile.mkdtemp(prefix="genservice-bench-")
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_workdir, workdir, keep_logs)
        database_url = stack.enter_context(scratch_database(db_name))
        helpers: list[Process] = []
        image_base = start_image_server(stack, workdir, helpers, kind=image_server)
        sandbox_url = start_sandbox(stack, workdir, sandbox, helpers)
        env = service_env(database_url, sandbox_url, workdir, service_extra)
        if worker_processes:
            start_worker_processes(stack, workdir, env, worker_processes, helpers)
            env = dict(env, WORKER_ENABLED="false")
        url, process = start_service(stack, workdir, env, server=server, workers=workers)
        running = Stack(workdir, database_url, sandbox_url, image_base, url, process, helpers)
        # wait until every gunicorn worker has booted (each runs the migrations and starts its worker thread)
        expected = workers if workers is not None else min(4, (os.cpu_count() or 1) * 2)
        if server == "gunicorn":
            deadline = time.monotonic() + 30
            while len(running.worker_pids()) < expected and time.monotonic() < deadline:
                time.sleep(0.1)
        try:
            yield running
        except BaseException:
            note(f"service log tail:\n{process.tail(40)}")
            raise


def _remove_workdir(path: str, keep: bool) -> None:
    if keep:
        note(f"logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


# ---- memory ------------------------------------------------------------------------------------

def proc_status_kb(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float:
    return (proc_status_kb(pid, "VmRSS") or 0) / 1024


def hwm_mb(pid: int) -> float:
    return (proc_status_kb(pid, "VmHWM") or 0) / 1024


def reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of a process we own; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS of ``pids`` every ``interval`` seconds; keeps each one's peak and the peak of the sum.

    Combined with VmHWM (reset at start when allowed) so a spike between samples is not missed.
    """

    def __init__(self, pids: Sequence[int], interval: float = 0.02):
        self.pids = list(pids)
        self.interval = interval
        self.before = {pid: rss_mb(pid) for pid in self.pids}
        self.hwm_reset = all(reset_hwm(pid) for pid in self.pids)
        self.peak = dict(self.before)
        self.peak_total = sum(self.before.values())
        self.after: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _sample(self) -> None:
        total = 0.0
        for pid in self.pids:
            value = rss_mb(pid)
            total += value
            if value > self.peak[pid]:
                self.peak[pid] = value
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self._sample()
        if self.hwm_reset:
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], hwm_mb(pid))
        self.after = {pid: rss_mb(pid) for pid in self.pids}

    # the process that grew most is the one that did the work
    @property
    def busiest(self) -> int:
        return max(self.pids, key=lambda pid: self.peak[pid] - self.before[pid])

    def growth(self, pid: int) -> tuple[float, float]:
        """(peak - before, after - before) in MB."""
        return self.peak[pid] - self.before[pid], self.after.get(pid, 0.0) - self.before[pid]


# ---- CPU time ----------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    """CPU seconds used by groups of processes between start and stop, sampled every ``interval`` s.

    Unlike wall time this hardly depends on what else the machine runs, so it says how long the work
    would take at least on an idle machine: total CPU / number of cores. A process that appears after
    the start counts from zero; one that ends between samples loses at most one interval.
    """

    def __init__(self, groups: dict[str, "Callable[[], list[int]]"], interval: float = 1.0):
        self.groups = groups
        self.interval = interval
        self.first: dict[str, dict[int, float]] = {name: {} for name in groups}
        self.last: dict[str, dict[int, float]] = {name: {} for name in groups}
        self._started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def __enter__(self) -> "CpuMeter":
        self._sample()
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _sample(self) -> None:
        for name, pids in self.groups.items():
            try:
                found = pids()
            except Exception:  # a failed look-up (e.g. the database going away) skips one sample
                continue
            for pid in found:
                value = cpu_seconds(pid)
                if value is None:
                    continue
                self.first[name].setdefault(pid, value if not self._started else 0.0)
                self.last[name][pid] = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            self._sample()

    def used(self) -> dict[str, float]:
        return {name: sum(self.last[name][pid] - self.first[name].get(pid, 0.0) for pid in self.last[name])
                for name in self.groups}


# ---- the accept path's floor ----

def start_accept_floor(stack: contextlib.ExitStack, log_dir: str) -> tuple[str, Process]:
    """bench/accept_floor.py under gunicorn (gthread, 1 worker x 8 threads), keyed like the service."""
    port = free_port()
    # -c /dev/null: not the service's gunicorn.conf.py, which the working directory would supply
    argv = [os.path.join(os.path.dirname(PYTHON), "gunicorn"), "-c", "/dev/null", "--no-control-socket",
            "-b", f"{HOST}:{port}",
            "-w", "1", "-k", "gthread", "--threads", "8", "--timeout", "300", "--chdir", "bench", "accept_floor:app"]
    env = dict(os.environ, SHARED_KEY=BENCH_KEY)
    process = Process("floor", argv, env=env, log_dir=log_dir)
    stack.callback(process.stop)
    url = f"http://{HOST}:{port}"
    wait_http(f"{url}/ready", 30, process)
    note(f"floor app on {url}, pid {process.pid}")
    return url, process


def floor_pids(process: Process) -> list[int]:
    return _children(process.pid) or [process.pid]


# ---- the client --------------------------------------------------------------------------------

def signed_generate_body(lots: list[dict], languages: Sequence[str], key: str = BENCH_KEY) -> bytes:
    """The request body as the spec's Python recipe builds it (``tests/support/client.py``)."""
    from tests.support.client import body_signature

    payload = {"signature": body_signature(lots, key), "version": "1.0.0", "languages": list(languages),
               "lots": lots}
    return json.dumps(payload).encode()


def lots_with_images(count: int, photos: int, image_base: str, prefix: str, info: str = "") -> list[dict]:
    """``count`` lots, each with its own ``photos`` URLs on the image server (no URL repeats)."""
    from tests.support.client import lot

    info = info or "2019 Toyota Camry, front collision"
    return [lot(f"{prefix}-{i:06d}", [f"{image_base}/img/{prefix}-{i:06d}-{j}.jpg" for j in range(photos)], info)
            for i in range(count)]


def header_signature(message: str, key: str = BENCH_KEY) -> str:
    from tests.support.client import header_signature as sign

    return sign(message, key)
