"""gunicorn settings: ``gunicorn main:app`` (or ``-c gunicorn.conf.py``) behind nginx.

Each worker process builds its own app after the fork, and with it its own background worker
thread; they share the work through database leases. With OPENAI_SANDBOX=true and
neither OPENAI_API_KEY nor OPENAI_BASE_URL, the master starts one OpenAI sandbox that every worker uses
(without OPENAI_SANDBOX=true, a start without a key stops with a message). The master reads the
settings once, here; each worker reads them again after the fork, with what the master added.
"""
import multiprocessing
import os
import tempfile

from app.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as _error:
    raise SystemExit(f"configuration error: {_error}") from None

bind = _settings.gunicorn_bind or _settings.listen_address()
workers = _settings.gunicorn_workers or min(4, multiprocessing.cpu_count() * 2)
threads = _settings.gunicorn_threads
worker_class = "gthread"
timeout = 300
graceful_timeout = 30
keepalive = 5
preload_app = False
# one control socket per instance: the default path is shared by every gunicorn of the host user
control_socket = _settings.gunicorn_control_socket or os.path.join(
    tempfile.gettempdir(), f"genservice-gunicorn-{bind.replace(':', '-').replace('/', '_')}.ctl")
accesslog = None
errorlog = "-"

_sandbox = None


def on_starting(server):
    """Hand the workers (through the environment they inherit) one metrics folder and, if asked for, one sandbox."""
    global _sandbox
    if not _settings.prometheus_multiproc_dir:
        # set before anything imports prometheus_client, which picks its multiprocess mode on import
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="genservice-metrics-")
    if _settings.openai_sandbox and _settings.uses_sandbox and not _settings.openai_base_url:
        from app.runtime import start_sandbox

        _sandbox = start_sandbox(_settings, server.log)
        os.environ["OPENAI_BASE_URL"] = _sandbox.url


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_int(worker):
    _stop_runtime(worker)


def worker_exit(server, worker):
    _stop_runtime(worker)


def _stop_runtime(worker):
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("genservice") if app is not None else None
    if runtime is not None and runtime.worker is not None:
        runtime.worker.stop(timeout=10)


def on_exit(server):
    if _sandbox is not None:
        _sandbox.stop()
