"""The server side of the ``genservice`` command: ``serve``, ``worker`` and ``sandbox``.

The command itself (its parser, the API commands and the lot files) lives in :mod:`genclient.cli`,
which imports this module only when a server command runs. ``worker`` builds the Runtime and its
worker without the web app, so that process never imports Flask. ``python -m app.cli`` still runs
the whole command, and the names the API commands had here are still importable from here.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from genclient.cli import *  # noqa: F401,F403  (the API commands, for code that imported them from here)
from genclient.cli import DEV_KEY_FILE, UsageError, build_parser, main  # noqa: F401
from genclient.lots import CSV_COLUMNS  # noqa: F401

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def instance_dir() -> Path:
    return Path(os.environ.get("INSTANCE_PATH") or "instance").absolute()


# ---- server commands ----------------------------------------------------------------------------

def ensure_dev_key():
    """The settings, as `python main.py` reads them: without SHARED_KEY, instance/dev_shared_key (made once)."""
    from app.config import development_settings

    return development_settings()


def gunicorn_config(given: str | None) -> Path | None:
    if given:
        if not Path(given).is_file():
            raise UsageError(f"no gunicorn config at {given}")
        return Path(given)
    for candidate in (Path.cwd() / "gunicorn.conf.py", PROJECT_ROOT / "gunicorn.conf.py"):
        if candidate.is_file():
            return candidate
    return None


def gunicorn_argv(args: argparse.Namespace) -> list[str]:
    """The gunicorn command line; without gunicorn.conf.py, equivalent settings are passed."""
    argv = [sys.executable, "-m", "gunicorn"]
    config = gunicorn_config(args.config)
    if config is not None:
        argv += ["-c", str(config)]
    else:
        argv += ["--worker-class", "gthread", "--threads", "8", "--timeout", "300", "--graceful-timeout", "30"]
    if args.host or args.port:
        from app.config import Settings

        argv += ["--bind", Settings.from_env(check=False).listen_address(args.host, args.port)]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    return argv + ["app:create_app()"]


def cmd_serve(args: argparse.Namespace) -> int:
    if args.dev:
        return serve_dev(args)
    argv = gunicorn_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    return 1  # not reached


def serve_dev(args: argparse.Namespace) -> int:
    settings = ensure_dev_key()
    from app import create_app

    app = create_app(settings)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app.run(host=args.host or settings.host, port=args.port or settings.port, threaded=True, use_reloader=False)
    finally:
        app.extensions["genservice"].close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """The background worker alone: no HTTP, stops cleanly on SIGTERM or SIGINT."""
    settings = ensure_dev_key()
    from app import logs
    from app.runtime import Runtime

    logs.configure(settings.log_level, settings.log_format)
    runtime = Runtime(settings)
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        runtime.start_worker()
        print(f"worker {runtime.instance_id} running (database {runtime.db.safe_url}, OpenAI: "
              f"{runtime.openai_mode}); stop with SIGTERM or Ctrl-C", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if runtime.worker is None or not runtime.worker.alive:
                print("worker threads ended unexpectedly", file=sys.stderr)
                return 1
    finally:
        runtime.close()
    return 0


def install_stop_handlers(stop: threading.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def cmd_sandbox(args: argparse.Namespace) -> int:
    return run_sandbox(args.sandbox_args)


def run_sandbox(argv: list[str]) -> int:
    """The sandbox's own command; a SIGTERM that comes before it set its handler still ends it cleanly."""
    from services.sandbox.__main__ import main as sandbox_main

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return sandbox_main(argv)
    except KeyboardInterrupt:
        return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
