"""The server side of the ``genservice`` command: ``serve``, ``worker``, ``sandbox`` and ``clients``.

The command itself (its parser, the API commands and the lot files) lives in :mod:`genclient.cli`,
which imports this module only when a server command runs. ``worker`` builds the Runtime and its
worker without the web app, so that process never imports Flask. ``python -m app.cli`` still runs
the whole command, and the names the API commands had here are still importable from here.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path

from genclient.cli import *  # noqa: F401,F403  (the API commands, for code that imported them from here)
from genclient.cli import DEV_KEY_FILE, UsageError, build_parser, main  # noqa: F401
from genclient.lots import CSV_COLUMNS, print_json  # noqa: F401

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


# ---- genservice clients: managing the callers in the database --------------------------------------
#
# The commands parse their arguments and print; what they do is services/clients.py. They open the
# database the server would (DATABASE_URL, else the development SQLite file under INSTANCE_PATH) and
# bring its schema up to date first, as a server start does.

_GRACE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: what ``set`` takes to give a limit back to the deployment's setting
DEPLOYMENT = "default"
LIMIT_OPTIONS = ("rate_limit_sync", "rate_limit_batch", "rate_limit_polling", "max_queued_lots", "max_daily_cost_usd")
#: what ``set`` changes; an option it was not given is absent from its arguments (argparse.SUPPRESS)
SETTABLE = ("name", "reference_scheme", *LIMIT_OPTIONS)


def grace_period(value: str) -> timedelta:
    """``24h``, ``30m``, ``90s``, ``2d``, ``0`` (seconds without a unit)."""
    match = _GRACE.fullmatch(value.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError("expected a duration such as 24h, 30m, 90s, 2d or 0")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _or_deployment(parse):
    def convert(value: str):
        return None if value.strip().lower() == DEPLOYMENT else parse(value)
    convert.__name__ = parse.__name__
    return convert


def rate(value: str) -> str:
    from app.config import _rate

    try:
        return _rate(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected a rate such as 100/minute (or '100/minute;2000/hour')") from None


def lots_count(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def dollars(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError("must be a number of dollars, 0 or more")
    return number


def _limit_options(parser: argparse.ArgumentParser, clearable: bool) -> None:
    """The limit options of ``add`` (absent: None, the deployment's setting) or of ``set`` (absent: unchanged,
    ``default``: back to the deployment's setting)."""
    wrap = _or_deployment if clearable else (lambda parse: parse)
    reset = f" ('{DEPLOYMENT}': the deployment's setting again)" if clearable else ""
    absent = {"default": argparse.SUPPRESS} if clearable else {}
    for kind in ("sync", "batch", "polling"):
        parser.add_argument(f"--rate-limit-{kind}", type=wrap(rate), metavar="RATE", **absent,
                            help=f"{kind} requests of this client, e.g. 100/minute (default: RATE_LIMIT_{kind.upper()})"
                                 + reset)
    parser.add_argument("--max-queued-lots", type=wrap(lots_count), metavar="N", **absent,
                        help="lots of this client queued at once (default: MAX_QUEUED_LOTS)" + reset)
    parser.add_argument("--max-daily-cost-usd", type=wrap(dollars), metavar="USD", **absent,
                        help="this client's daily OpenAI budget in dollars (default: MAX_DAILY_COST_USD)" + reset)


def build_clients_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genservice clients", description=(
        "Manage the API's clients (callers with keys, limits and a webhook secret of their own) in the database "
        "of DATABASE_URL. Key secrets are printed once, when made."))
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = commands.add_parser("add", help="add a client; prints its first key and its webhook secret once")
    add.add_argument("client_id", metavar="ID", help="1-64 of a-z 0-9 . _ - (not 'default')")
    add.add_argument("--name", default="", help="a name for people (dashboard, list)")
    add.add_argument("--reference-scheme", action="store_true",
                     help="also accept the reference's X-Signature scheme from this client (default: GS2 only)")
    _limit_options(add, clearable=False)
    add.add_argument("--json", action="store_true", help="print JSON")

    listing = commands.add_parser("list", help="every client, the implicit one of SHARED_KEY first")
    listing.add_argument("--show-secrets", action="store_true", help="include the webhook secrets")
    listing.add_argument("--json", action="store_true", help="print JSON")

    rotate = commands.add_parser("rotate-key", help="a new key, valid at once; the old ones keep working for the grace")
    rotate.add_argument("client_id", metavar="ID")
    rotate.add_argument("--grace", type=grace_period, default=timedelta(hours=24),
                        help="how long the client's current keys stay valid: 24h (default), 30m, 90s, 2d, 0 (at once)")
    rotate.add_argument("--json", action="store_true", help="print JSON")

    hook = commands.add_parser("rotate-webhook-secret", help="a new webhook secret, used at once; the old one keeps "
                                                             "signing too for the grace")
    hook.add_argument("client_id", metavar="ID")
    hook.add_argument("--grace", type=grace_period, default=timedelta(hours=24),
                      help="how long webhooks also carry a signature with the old secret: 24h (default), 0 (none)")
    hook.add_argument("--json", action="store_true", help="print JSON")

    for action, meaning in (("disable", "refuse every request of the client (403 CLIENT_DISABLED)"),
                            ("enable", "accept the client's requests again")):
        commands.add_parser(action, help=meaning).add_argument("client_id", metavar="ID")

    change = commands.add_parser("set", help="change a client's name, scheme or limits (only the options given)")
    change.add_argument("client_id", metavar="ID")
    change.add_argument("--name", default=argparse.SUPPRESS)
    change.add_argument("--reference-scheme", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                        help="accept the reference's X-Signature scheme too (--no-reference-scheme: GS2 only)")
    _limit_options(change, clearable=True)
    change.add_argument("--json", action="store_true", help="print the client as JSON")
    return parser


def _clients_runtime():
    """The settings and the database the server would use, migrated to the current schema."""
    from app.config import Settings
    from database.migrate import upgrade
    from database.session import Database, normalize_url

    settings = Settings.from_env(check=False)
    db = Database(normalize_url(settings.database_url, settings.instance_path), pool_size=1)
    upgrade(db)
    return settings, db


def _limits_dict(limits) -> dict:
    return {field: getattr(limits, field) for field in LIMIT_OPTIONS}


def _when(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def client_document(summary, show_secrets: bool) -> dict:
    """One client as ``list --json`` prints it."""
    identity = summary.identity
    document = {"id": identity.id, "name": identity.name, "enabled": identity.enabled, "implicit": identity.implicit,
                "schemes": ["GS2-HMAC-SHA256"] + (["X-Signature"] if identity.reference_scheme else []),
                "keys": [{"key_id": key_id, "expires_at": _when(expires)} for key_id, expires in summary.keys],
                "limits": _limits_dict(identity.limits), "created_at": _when(summary.created_at)}
    if show_secrets:
        document["webhook_secret"] = identity.webhook_secret
    return document


def _print_client_text(document: dict, out) -> None:
    state = "enabled" if document["enabled"] else "DISABLED"
    name = f" ({document['name']})" if document["name"] else ""
    print(f"{document['id']}{name}  {state}  schemes: {', '.join(document['schemes'])}", file=out)
    for key in document["keys"] or [{"key_id": "(no active key)", "expires_at": None}]:
        expiry = f"expires {key['expires_at']}" if key["expires_at"] else "no expiry"
        print(f"  key {key['key_id']}  {expiry}", file=out)
    limits = [f"{field}={value}" for field, value in document["limits"].items() if value is not None]
    print(f"  limits: {', '.join(limits) if limits else 'the deployment settings'}", file=out)
    if "webhook_secret" in document:
        print(f"  webhook secret: {document['webhook_secret'] or '(none)'}", file=out)


def _print_issued(document: dict, as_json: bool, what: str) -> None:
    if as_json:
        print_json(document)
        return
    print(f"{what} for client {document['client_id']}")
    print(f"  key id:         {document['key_id']}")
    print(f"  key secret:     {document['secret']}")
    if "webhook_secret" in document:
        print(f"  webhook secret: {document['webhook_secret']}")
    for key in document.get("other_keys", ()):
        print(f"  key {key['key_id']} keeps working until {key['expires_at']}")
    print("The key secret is shown only now: hand it to the client over a safe channel.", file=sys.stderr)


def clients_command(args: argparse.Namespace, settings, db) -> int:
    from services import clients

    if args.action == "add":
        limits = clients.ClientLimits(**{field: getattr(args, field) for field in LIMIT_OPTIONS})
        issued = clients.add_client(db, args.client_id, args.name, reference_scheme=args.reference_scheme,
                                    limits=limits)
        identity = clients.get_client(db, settings, args.client_id)
        _print_issued({"client_id": issued.client_id, "key_id": issued.key_id, "secret": issued.secret,
                       "webhook_secret": identity.webhook_secret}, args.json, "added")
    elif args.action == "rotate-key":
        issued = clients.rotate_key(db, args.client_id, args.grace)
        keys = next((s.keys for s in clients.list_clients(db, settings) if s.identity.id == issued.client_id), ())
        _print_issued({"client_id": issued.client_id, "key_id": issued.key_id, "secret": issued.secret,
                       "other_keys": [{"key_id": key_id, "expires_at": _when(expires)}
                                      for key_id, expires in keys if key_id != issued.key_id]}, args.json, "new key")
    elif args.action == "rotate-webhook-secret":
        secret = clients.rotate_webhook_secret(db, args.client_id, args.grace)
        document = {"client_id": args.client_id, "webhook_secret": secret,
                    "previous_secret_signs_for_seconds": int(args.grace.total_seconds())}
        if args.json:
            print_json(document)
        else:
            print(f"new webhook secret for client {args.client_id}\n  webhook secret: {secret}")
            if args.grace:
                print(f"  webhooks carry a signature with the previous secret too for {args.grace}")
    elif args.action in ("disable", "enable"):
        clients.set_enabled(db, args.client_id, args.action == "enable")
        print(f"client {args.client_id} {args.action}d")
    elif args.action == "set":
        changes = {field: value for field, value in vars(args).items() if field in SETTABLE}
        if not changes:
            raise UsageError("nothing to change: give --name, --reference-scheme or a limit option")
        identity = clients.update_client(db, args.client_id, **changes)
        document = {"id": identity.id, "name": identity.name, "enabled": identity.enabled,
                    "reference_scheme": identity.reference_scheme, "limits": _limits_dict(identity.limits)}
        if args.json:
            print_json(document)
        else:
            shown = ", ".join(f"{field}={DEPLOYMENT if value is None else value}" for field, value in changes.items())
            print(f"client {identity.id} changed: {shown}")
    else:  # list
        documents = [client_document(summary, args.show_secrets) for summary in clients.list_clients(db, settings)]
        if args.json:
            print_json(documents)
        elif not documents:
            print("no clients: set SHARED_KEY, or add one with `genservice clients add ID`")
        for document in documents if not args.json else ():
            _print_client_text(document, sys.stdout)
    return 0


def run_clients(argv: list[str]) -> int:
    """``genservice clients ...``: 0 done, 1 refused (its JSON error on stderr), 2 bad arguments."""
    from services.errors import ServiceError

    from sqlalchemy.exc import OperationalError

    from app.config import ConfigError

    args = build_clients_parser().parse_args(argv)
    try:
        settings, db = _clients_runtime()
    except ConfigError as exc:
        print(f"genservice clients: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"genservice clients: cannot open the database: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    try:
        return clients_command(args, settings, db)
    except UsageError as exc:
        print(f"genservice clients {args.action}: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print_json({"status": exc.status, **exc.to_dict()}, sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        db.dispose()


if __name__ == "__main__":
    sys.exit(main())
