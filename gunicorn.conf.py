"""gunicorn settings: ``gunicorn main:app`` (or ``-c gunicorn.conf.py``) behind nginx.

Each worker process builds its own app after the fork, and with it its own background worker
thread; they share the work through database leases. With OPENAI_SANDBOX=true and
neither OPENAI_API_KEY nor OPENAI_BASE_URL, the master starts one OpenAI sandbox that every worker uses
(without OPENAI_SANDBOX=true, a start without a key stops with a message).
"""
import multiprocessing
import os
import tempfile

bind = os.environ.get("GUNICORN_BIND", f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = 300
graceful_timeout = 30
keepalive = 5
preload_app = False
# one control socket per instance: the default path is shared by every gunicorn of the host user
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or os.path.join(
    tempfile.gettempdir(), f"genservice-gunicorn-{bind.replace(':', '-').replace('/', '_')}.ctl")
accesslog = None
errorlog = "-"

_sandbox = None


def on_starting(server):
    global _sandbox
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="genservice-metrics-")
    wants_sandbox = os.environ.get("OPENAI_SANDBOX", "").strip().lower() in ("1", "true", "yes", "on")
    if wants_sandbox and not os.environ.get("OPENAI_API_KEY") and not os.environ.get("OPENAI_BASE_URL"):
        from services.sandbox import SandboxConfig, SandboxServer

        seconds = float(os.environ.get("SANDBOX_BATCH_SECONDS", "5"))
        _sandbox = SandboxServer(SandboxConfig(
            vision_latency=float(os.environ.get("SANDBOX_VISION_LATENCY", "0")),
            text_latency=float(os.environ.get("SANDBOX_TEXT_LATENCY", "0")),
            batch_validating_seconds=seconds / 5, batch_in_progress_seconds=seconds * 3 / 5,
            batch_finalizing_seconds=seconds / 5)).start()
        os.environ["OPENAI_BASE_URL"] = _sandbox.url
        server.log.warning("OPENAI_API_KEY is not set: all workers use the OpenAI sandbox at %s", _sandbox.url)


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
