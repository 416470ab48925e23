"""Subprocess servers for tests and benches: the sandbox, gunicorn, an image server, a scratch database.

Each server runs in its own process group on 127.0.0.1, writes its output to a log file, and is
ended with its whole group (gunicorn's workers included) by ``stop()``. A ``ProcessSet`` remembers
what it started and stops everything in reverse order, so a fixture can promise cleanup even when
a test fails half-way:

    with ProcessSet(tmp_path) as procs:
        sandbox = start_sandbox(procs, batch_in_progress_seconds=1)
        service = start_gunicorn(procs, service_env(database_url, sandbox.url, tmp_path))

Ports: servers that can bind port 0 do so and report the port they got (no race with other
processes for a "free" port).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Any, Iterator, Mapping

from tests.support.common import wait_until as wait_for  # the process tests and benches call it so

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
PYTHON = sys.executable
GUNICORN = os.path.join(os.path.dirname(PYTHON), "gunicorn")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0,
              headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """A small stdlib HTTP call (no session state to leak between processes); JSON in and out."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={**({"Content-Type": "application/json"} if data else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def http_status(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> int | None:
    """The status code of GET ``url``, or None when nothing answers."""
    try:
        request = urllib.request.Request(url, headers=dict(headers or {}))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        exc.close()
        return exc.code
    except OSError:
        return None


# ---- one process ---------------------------------------------------------------------------------

class ServerProcess:
    """A child process in its own session (so its whole group can be signalled), output to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None,
                 log_dir: str | None = None, cwd: str = ROOT):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        log_dir = log_dir or tempfile.mkdtemp(prefix="genservice-proc-")
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float) -> re.Match:
        """Wait for ``pattern`` (a regex) to appear in the log; fails early if the process exits."""
        regex = re.compile(pattern)

        def found():
            match = regex.search(self.log())
            if match is None and not self.alive:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return match
        return wait_for(found, timeout, lambda: f"{pattern!r} in the log of {self.name}:\n{self.tail()}")

    def wait_http(self, url: str, timeout: float, ok: tuple[int, ...] = (200,),
                  headers: Mapping[str, str] | None = None) -> None:
        def ready():
            if not self.alive:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return http_status(url, timeout=2, headers=headers) in ok
        wait_for(ready, timeout, lambda: f"{url} to answer {ok} ({self.name}):\n{self.tail()}", interval=0.1)

    def children(self) -> list[int]:
        """Direct children's pids (gunicorn: its workers)."""
        if self.proc is None:
            return []
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def terminate(self) -> None:
        """SIGTERM to the whole group, without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left of it (workers outliving their master)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class ProcessSet:
    """Starts processes and stops all of them, last first, on ``stop_all()`` or leaving the ``with``."""

    def __init__(self, log_dir: str | os.PathLike | None = None):
        self.log_dir = str(log_dir) if log_dir is not None else tempfile.mkdtemp(prefix="genservice-procs-")
        self.processes: list[ServerProcess] = []
        self._lock = threading.Lock()

    def add(self, process: ServerProcess) -> ServerProcess:
        with self._lock:
            self.processes.append(process)
        return process

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> ServerProcess:
        return self.add(ServerProcess(name, argv, env, self.log_dir)).start()

    def stop_all(self) -> None:
        """Ask every process to stop at once (they shut down in parallel), then make sure each has."""
        with self._lock:
            processes, self.processes = self.processes[::-1], []
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()

    def __enter__(self) -> "ProcessSet":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()


# ---- the servers -----------------------------------------------------------------------------------

class SandboxProcess(ServerProcess):
    """``python -m services.sandbox`` on a port of its own choosing, with its control endpoints."""

    root_url: str = ""
    control_token: str = ""

    @property
    def control_headers(self) -> dict[str, str]:
        return {"X-Sandbox-Token": self.control_token}

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"{self.root_url}/v1"

    def configure(self, **changes: Any) -> dict:
        status, body = http_json("POST", f"{self.root_url}/sandbox/config", changes, headers=self.control_headers)
        assert status == 200, f"sandbox config {changes} refused: {body}"
        return body

    def stats(self) -> dict:
        status, body = http_json("GET", f"{self.root_url}/sandbox/stats", headers=self.control_headers)
        assert status == 200, body
        return body

    def reset(self) -> None:
        status, body = http_json("POST", f"{self.root_url}/sandbox/reset", {}, headers=self.control_headers)
        assert status == 200, body


def start_sandbox(procs: ProcessSet, name: str = "sandbox", timeout: float = 20.0, **options: Any) -> SandboxProcess:
    """Start the sandbox; ``options`` are its command-line flags, e.g. ``batch_in_progress_seconds=1``."""
    argv = [PYTHON, "-m", "services.sandbox", "--host", HOST, "--port", "0"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (False, None):
            argv += [flag, str(value)]
    token = secrets.token_urlsafe(24)
    process = SandboxProcess(name, argv, minimal_env({"PYTHONPATH": ROOT, "SANDBOX_CONTROL_TOKEN": token}),
                             procs.log_dir)
    process.control_token = token
    procs.add(process).start()
    match = process.wait_log(r"base URL (http://[\d.]+:\d+)/v1", timeout)
    process.root_url = match.group(1)
    process.wait_http(f"{process.root_url}/sandbox/config", timeout, headers=process.control_headers)
    return process


class ServiceProcess(ServerProcess):
    """gunicorn serving ``main:app`` (``-c gunicorn.conf.py``), bound to a port it reports in its log."""

    url: str = ""
    workers: int = 1

    def worker_pids(self) -> list[int]:
        return self.children()

    def wait_ready(self, timeout: float = 60.0) -> "ServiceProcess":
        """Wait for the bound address, /health 200 and every worker process; returns self."""
        match = self.wait_log(r"Listening at: (http://[\d.]+:\d+)", timeout)
        self.url = match.group(1)
        self.wait_http(f"{self.url}/health", timeout)
        wait_for(lambda: len(self.worker_pids()) >= self.workers, timeout, f"{self.workers} workers of {self.name}")
        return self


def launch_gunicorn(procs: ProcessSet, env: Mapping[str, str], name: str = "gunicorn",
                    workers: int = 2) -> ServiceProcess:
    """Start gunicorn with ``workers`` workers on 127.0.0.1:<port it picks> without waiting for it
    (start several, then ``wait_ready()`` each: they boot in parallel)."""
    env = dict(env, GUNICORN_WORKERS=str(workers), GUNICORN_BIND=f"{HOST}:0")
    argv = [GUNICORN, "-c", "gunicorn.conf.py", *_control_socket_args(os.path.join(procs.log_dir, f"{name}.ctl")),
            "main:app"]
    process = ServiceProcess(name, argv, env, procs.log_dir)
    process.workers = workers
    procs.add(process).start()
    return process


def start_gunicorn(procs: ProcessSet, env: Mapping[str, str], name: str = "gunicorn", workers: int = 2,
                   timeout: float = 60.0) -> ServiceProcess:
    """Start gunicorn and return once it serves (/health 200) with all its workers."""
    return launch_gunicorn(procs, env, name, workers).wait_ready(timeout)


def _control_socket_args(path: str) -> list[str]:
    """gunicorn 25+ opens a control socket at one fixed path per user; give each instance its own."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return []
    if any(setting.name == "control_socket" for setting in KNOWN_SETTINGS):
        if len(path) > 100:  # a unix socket path has at most 107 bytes
            path = os.path.join(tempfile.mkdtemp(prefix="gunicorn-"), "ctl")
        return ["--control-socket", path]
    return []


# socketserver's listen backlog of 5 drops SYNs when many image checks connect at once (a 1 s retransmit each)
IMAGE_SERVER_CODE = """
import signal, threading
from tests.support import image_server
image_server._Server.request_queue_size = 4096
server = image_server.ImageServer("127.0.0.1").start()
print("image server port", server.port, flush=True)
stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())
stopped.wait()
server.stop()
"""


class ImageServerProcess(ServerProcess):
    """tests.support.image_server.ImageServer in a process of its own (so a load test does not share its GIL)."""

    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def start_image_server(procs: ProcessSet, name: str = "image-server", timeout: float = 20.0) -> ImageServerProcess:
    process = ImageServerProcess(name, [PYTHON, "-c", IMAGE_SERVER_CODE], minimal_env({"PYTHONPATH": ROOT}),
                                 procs.log_dir)
    procs.add(process).start()
    port = process.wait_log(r"image server port (\d+)", timeout).group(1)
    process.base = f"http://{HOST}:{port}"
    process.wait_http(process.url("/img/probe.jpg"), timeout)
    return process


# ---- environment -------------------------------------------------------------------------------

def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH, HOME, locale and temp dir only: a server reads no setting the caller did not give it."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") if name in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def service_env(database_url: str, openai_base_url: str, workdir: str | os.PathLike, shared_key: str,
                **settings: Any) -> dict[str, str]:
    """The environment of a service process on loopback: sandbox, outbound allowlist, no rate limits.

    ``settings`` are extra variables (``WORKER_POLL_INTERVAL=0.5``); their names are upper-cased.
    """
    workdir = str(workdir)
    metrics_dir = tempfile.mkdtemp(prefix="metrics-", dir=workdir)
    env = minimal_env({
        "DATABASE_URL": database_url,
        "SHARED_KEY": shared_key,
        "OPENAI_BASE_URL": openai_base_url,
        "OPENAI_API_KEY": "",
        "OPENAI_SANDBOX": "true",
        "ALLOW_PRIVATE_URLS": "true",
        "OUTBOUND_ALLOWED_HOSTS": "127.0.0.1,localhost,::1",
        "RATELIMIT_ENABLED": "false",
        "INSTANCE_PATH": os.path.join(workdir, "instance"),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "LOG_LEVEL": "INFO",
    })
    env.update({key.upper(): str(value) for key, value in settings.items()})
    return env


# ---- PostgreSQL ----------------------------------------------------------------------------------

def _admin(sql: str, admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def database_url(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def scratch_database(name: str, admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """Create the PostgreSQL database ``name`` afresh (a leftover is dropped), yield its URL, drop it after.

    ``admin_url`` is any database URL on the server (its maintenance database is used for the DDL).
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", name):
        raise ValueError(f"not a plain database name: {name!r}")
    # named per process, so two test runs on one server (two developers, or CI beside a bench) never drop
    # each other's database in the middle of a test
    name = f"{name}_{os.getpid()}"
    admin_url = admin_url.rsplit("/", 1)[0] + "/postgres"
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url)
    _admin(f'CREATE DATABASE "{name}"', admin_url)
    try:
        yield database_url(name, admin_url)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_url)
