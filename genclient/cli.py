"""The ``genservice`` command: call the API, or run the service, its worker or the sandbox.

The API commands (``sign``, ``submit``, ``estimate``, ``jobs``, ``status``, ``results``, ``cancel``,
``deliveries``, ``redeliver``) need only this package and ``requests``. The server commands
(``serve``, ``worker``, ``sandbox``, ``clients``) live in :mod:`app.cli`, imported only when one of them runs, so
calling the API never loads Flask or the server. Exit codes: 0 success, 1 the API answered with an
error (its JSON is printed on stderr) or could not be reached, 2 a usage error (bad arguments or
input file).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import requests

from genclient.client import (DEFAULT_URL, FINAL_STATUSES, GS2, IMPLICIT_CLIENT, REFERENCE, ApiError,
                              GenerationClient, WaitTimeout, gs2_authorization, sign, sign_lots)
from genclient.lots import UsageError, load_request, parse_languages, print_json, write_results

DEV_KEY_FILE = "dev_shared_key"


# ---- keys ---------------------------------------------------------------------------------------

def dev_key_path() -> Path:
    """Where the development server keeps the key it created (INSTANCE_PATH, else ./instance)."""
    return Path(os.environ.get("INSTANCE_PATH") or "instance").absolute() / DEV_KEY_FILE


def resolve_key(given: str | None) -> str:
    """--key, else GENSERVICE_KEY, else SHARED_KEY (or the first of SHARED_KEYS), else the key `python main.py`
    created."""
    if given:
        return given
    env_key = (os.environ.get("GENSERVICE_KEY", "").strip() or os.environ.get("SHARED_KEY", "").strip()
               or os.environ.get("SHARED_KEYS", "").split(",")[0].strip())
    if env_key:
        return env_key
    dev_key = dev_key_path()
    if dev_key.is_file():
        return dev_key.read_text().strip()
    raise UsageError(f"no shared key: pass --key, set SHARED_KEY, or start the development server once "
                     f"(`make run`) so that {dev_key} exists")


# ---- progress -----------------------------------------------------------------------------------

class ProgressBar:
    """A text bar on stderr: redrawn in place on a terminal, one line per change elsewhere."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.inline = self.stream.isatty()
        self.last = ""

    def render(self, status: dict[str, Any]) -> str:
        progress = status.get("progress") or {}
        percent = float(progress.get("completion_percentage") or 0.0)
        filled = int(round(self.width * min(percent, 100.0) / 100))
        stage = (status.get("processing_details") or {}).get("current_stage") or ""
        done = (progress.get("processed_lots") or 0) + (progress.get("failed_lots") or 0)
        line = (f"[{'#' * filled}{'-' * (self.width - filled)}] {percent:5.1f}%  "
                f"{done}/{progress.get('total_lots', '?')} lots ({progress.get('failed_lots', 0)} failed)  "
                f"{status.get('status', '')}")
        return f"{line} ({stage})" if stage and stage != status.get("status") else line

    def __call__(self, status: dict[str, Any]) -> None:
        line = self.render(status)
        if line == self.last:
            return
        if self.inline:
            self.stream.write("\r" + line.ljust(len(self.last)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def close(self) -> None:
        if self.inline and self.last:
            self.stream.write("\n")
            self.stream.flush()


# ---- API commands -------------------------------------------------------------------------------

def client_from(args: argparse.Namespace) -> GenerationClient:
    """A client signing as --client-id/--key-id (or GENSERVICE_CLIENT_ID/GENSERVICE_KEY_ID) with the key, or as
    the implicit client when no client id is given; --reference-signature signs the reference's way."""
    key = resolve_key(args.key)
    client_id = args.client_id or os.environ.get("GENSERVICE_CLIENT_ID", "").strip() or None
    # the environment's key id belongs to the environment's client, not to one named on the command line
    key_id = args.key_id or (None if args.client_id else os.environ.get("GENSERVICE_KEY_ID", "").strip() or None)
    scheme = REFERENCE if args.reference_signature else GS2
    if client_id in (None, IMPLICIT_CLIENT):
        return GenerationClient(key, args.url, key_id=key_id, scheme=scheme, timeout=args.timeout)
    if key_id is None:
        raise UsageError(f"client {client_id} needs its key id: pass --key-id or set GENSERVICE_KEY_ID")
    return GenerationClient(base_url=args.url, client_id=client_id, key_id=key_id, secret=key, scheme=scheme,
                            timeout=args.timeout)


def cmd_sign(args: argparse.Namespace) -> int:
    key = resolve_key(args.key)
    if args.gs2 is not None:
        print(gs2_header(args, key))
    elif args.job_id is not None:
        print(sign(key, args.job_id))
    elif args.string is not None:
        print(sign(key, args.string))
    else:
        print(sign_lots(key, load_request(args.file).lots))
    return 0


def gs2_header(args: argparse.Namespace, key: str) -> str:
    """The Authorization value for one request (``--gs2 METHOD PATH[?QUERY]``, body from ``--body``): fresh
    timestamp and nonce, so it is good for one request within 5 minutes."""
    method, target = args.gs2
    if not target.startswith("/"):
        raise UsageError("--gs2 takes a method and the path as it will be sent, e.g. GET /api/v1/batch-status/ID")
    path, _, query = target.partition("?")
    body = b""
    if args.body is not None:
        try:
            body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.body}: {exc.strerror}") from None
    signer = client_from(argparse.Namespace(key=key, url=DEFAULT_URL, timeout=1.0, client_id=args.client_id,
                                            key_id=args.key_id, reference_signature=False))
    return gs2_authorization(signer.key, signer.client_id, signer.key_id, method.upper(), path, query, body)


def cmd_submit(args: argparse.Namespace) -> int:
    loaded = load_request(args.file)
    languages = parse_languages(args.languages) or loaded.languages or ["en"]
    version = loaded.version or "1.0.0"
    lots = loaded.lots
    if args.webhook:
        lots = [{**lot, "webhook": lot.get("webhook") or args.webhook} for lot in lots]
    if len(lots) > 1 and args.out and not args.wait:
        raise UsageError("--out needs --wait for a batch job (2 or more lots)")
    client = client_from(args)
    if len(lots) == 1:
        return finish(client.generate_sync(lots[0], languages, version), args.out, languages)
    accepted = client.create_batch(lots, languages, version)
    if not args.wait:
        print_json(accepted)
        return 0
    print(f"job {accepted['job_id']} accepted: {accepted['total_lots']} lots, languages "
          f"{', '.join(accepted['languages'])}", file=sys.stderr)
    final = wait_with_bar(client, accepted["job_id"], args.poll_interval, args.wait_timeout)
    return write_job_results(client, final, args.out)


def cmd_estimate(args: argparse.Namespace) -> int:
    loaded = load_request(args.file)
    languages = parse_languages(args.languages) or loaded.languages or ["en"]
    print_json(client_from(args).estimate(loaded.lots, languages, loaded.version or "1.0.0"))
    return 0


def write_job_results(client: GenerationClient, status: dict[str, Any], out: str | None) -> int:
    """A completed job's results (a JSON file is streamed to disk), or a failed or cancelled job's lots and exit 1."""
    job_id, languages = status["job_id"], status.get("languages") or []
    if status.get("status") == "completed":
        if out and not out.lower().endswith(".csv"):
            print(f"wrote {client.download(job_id, out)}", file=sys.stderr)
            return 0
        return finish(client.results(job_id) or {}, out, languages)
    print(f"job {status.get('status')}: {status.get('error_message') or 'no reason given'}", file=sys.stderr)
    finish(partial_results(client, job_id), out, languages)
    return 1


def partial_results(client: GenerationClient, job_id: str) -> dict[str, Any]:
    """A failed or cancelled job's lots, each with its result or its error (the download endpoint has them)."""
    with tempfile.TemporaryDirectory() as folder:
        path = client.download(job_id, Path(folder) / "results.json")
        return json.loads(path.read_text(encoding="utf-8"))


def wait_with_bar(client: GenerationClient, job_id: str, poll_interval: float, timeout: float | None):
    bar = ProgressBar()
    try:
        return client.wait(job_id, poll_interval=poll_interval, timeout=timeout, on_progress=bar)
    finally:
        bar.close()


def finish(answer: dict[str, Any], out: str | None, languages: Sequence[str]) -> int:
    if not out:
        print_json(answer)
        return 0
    count = write_results(answer, out, languages)
    print(f"wrote {count} lot(s) to {out}", file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    print_json(client_from(args).list_jobs(args.status, args.limit, args.offset, args.created_after,
                                           args.created_before))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print_json(client_from(args).status(args.job_id))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    client = client_from(args)
    status = client.status(args.job_id)
    if status.get("status") not in FINAL_STATUSES:
        percent = (status.get("progress") or {}).get("completion_percentage", 0)
        print(f"job {args.job_id} is {status.get('status')} ({percent}% done): no results yet", file=sys.stderr)
        return 1
    return write_job_results(client, status, args.out)


def cmd_cancel(args: argparse.Namespace) -> int:
    print_json(client_from(args).cancel(args.job_id))
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    print_json(client_from(args).webhook_deliveries(args.job_id, args.limit, args.offset))
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    print_json(client_from(args).redeliver(args.delivery_id))
    return 0


# ---- server commands: the service itself, imported only when one runs ---------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from app.cli import cmd_serve as serve

    return serve(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from app.cli import cmd_worker as worker

    return worker(args)


def cmd_sandbox(args: argparse.Namespace) -> int:
    return run_sandbox(args.sandbox_args)


def run_sandbox(argv: list[str]) -> int:
    from app.cli import run_sandbox as sandbox

    return sandbox(argv)


def run_clients(argv: list[str]) -> int:
    from app.cli import run_clients as manage

    return manage(argv)


# ---- parser -------------------------------------------------------------------------------------

def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("GENSERVICE_URL", DEFAULT_URL),
                        help="service base URL (default: $GENSERVICE_URL or %(default)s)")
    parser.add_argument("--key", help="the key's secret (default: $GENSERVICE_KEY, else $SHARED_KEY, else "
                                      "instance/dev_shared_key)")
    parser.add_argument("--client-id", help="sign as this client (default: $GENSERVICE_CLIENT_ID, else the implicit "
                                            "client 'default' of SHARED_KEY)")
    parser.add_argument("--key-id", help="the key's id, as `genservice clients add` printed it (default: "
                                         "$GENSERVICE_KEY_ID; for the implicit client, derived from the key)")
    parser.add_argument("--reference-signature", action="store_true",
                        help="sign the reference's way (X-Signature) instead of GS2")
    parser.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per HTTP call (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genservice", description="Generation Service: run it, or call its API.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str, client: bool = True, **kw):
        sub = commands.add_parser(name, help=help, description=help, **kw)
        if client:
            add_client_options(sub)
        sub.set_defaults(handler=handler)
        return sub

    serve = command("serve", cmd_serve, "serve the API with gunicorn (or Flask's server with --dev)", client=False)
    serve.add_argument("--host", help="address to listen on (default: $HOST; gunicorn 0.0.0.0, --dev 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 5000)")
    serve.add_argument("--dev", action="store_true", help="Flask's development server, one process")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes")
    serve.add_argument("--config", help="gunicorn config file (default: ./gunicorn.conf.py when present)")

    command("worker", cmd_worker, "run the background worker without HTTP until SIGTERM/SIGINT", client=False)
    sandbox = command("sandbox", cmd_sandbox, "run the OpenAI-compatible sandbox on 127.0.0.1; its control token is "
                      "printed at start unless given by --control-token or $SANDBOX_CONTROL_TOKEN (options: "
                      "genservice sandbox -h)",
                      client=False, add_help=False)
    sandbox.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    clients = command("clients", lambda args: run_clients(args.clients_args),
                      "manage the API's clients in the database (DATABASE_URL): add, list, rotate-key, disable, "
                      "enable, set (options: genservice clients -h)", client=False, add_help=False)
    clients.add_argument("clients_args", nargs=argparse.REMAINDER)

    sign_cmd = command("sign", cmd_sign, "print the reference's sha256=<hex> signature of a lots file, a job id or a "
                       "string, or with --gs2 a GS2 Authorization value for one request", client=False)
    sign_cmd.add_argument("--key", help="the key's secret (default: $GENSERVICE_KEY, else $SHARED_KEY, else "
                                        "instance/dev_shared_key)")
    sign_cmd.add_argument("--client-id", help="with --gs2: sign as this client (default: $GENSERVICE_CLIENT_ID, else "
                                              "the implicit client)")
    sign_cmd.add_argument("--key-id", help="with --gs2: the key's id (default: $GENSERVICE_KEY_ID)")
    sign_cmd.add_argument("--body", help="with --gs2: the file whose bytes are the request body ('-': stdin)")
    what = sign_cmd.add_mutually_exclusive_group(required=True)
    what.add_argument("file", nargs="?", help="JSON or CSV lots file, as for submit ('-' reads JSON from stdin)")
    what.add_argument("--job-id", help="sign a job id (the X-Signature of the job endpoints)")
    what.add_argument("--string", help="sign a raw string, e.g. the query string of batch-jobs")
    what.add_argument("--gs2", nargs=2, metavar=("METHOD", "PATH"),
                      help="the Authorization value of one GS2 request, e.g. --gs2 GET "
                           "'/api/v1/batch-jobs?status=completed' (valid once, for 5 minutes)")

    submit = command("submit", cmd_submit, "send lots: one is answered at once, several become a batch job")
    submit.add_argument("file", help="JSON (request body, list of lots or {\"lots\": [...]}) or CSV file; '-' = stdin")
    submit.add_argument("--languages", help="comma-separated codes, e.g. en,ru (default: the file's, else en)")
    submit.add_argument("--webhook", help="webhook URL for lots that have none")
    submit.add_argument("--wait", action="store_true", help="poll a batch job until it ends, then fetch results")
    submit.add_argument("--poll-interval", type=positive_float, default=2.0, help="seconds between polls (default 2)")
    submit.add_argument("--wait-timeout", type=positive_float, help="give up waiting after this many seconds")
    submit.add_argument("--out", help="write the results to this .json or .csv file instead of stdout")

    estimate = command("estimate", cmd_estimate, "what sending a file would cost in dollars (nothing is sent to "
                                                 "OpenAI)")
    estimate.add_argument("file", help="the same input as submit")
    estimate.add_argument("--languages", help="comma-separated codes (default: the file's, else en)")

    jobs = command("jobs", cmd_jobs, "list batch jobs, newest first")
    jobs.add_argument("--status", choices=("pending", "processing", "translating", "completed", "failed", "cancelled"))
    jobs.add_argument("--limit", type=int)
    jobs.add_argument("--offset", type=int)
    jobs.add_argument("--created-after", help="ISO 8601 timestamp")
    jobs.add_argument("--created-before", help="ISO 8601 timestamp")

    command("status", cmd_status, "show a job's status").add_argument("job_id")
    results = command("results", cmd_results, "fetch a finished job's results (exit 1 while it runs)")
    results.add_argument("job_id")
    results.add_argument("--out", help="write to this .json (streamed) or .csv file instead of stdout")
    command("cancel", cmd_cancel, "cancel a pending or running job").add_argument("job_id")
    deliveries = command("deliveries", cmd_deliveries, "list a job's webhook deliveries with their attempts")
    deliveries.add_argument("job_id")
    deliveries.add_argument("--limit", type=int)
    deliveries.add_argument("--offset", type=int)
    command("redeliver", cmd_redeliver, "send a recorded webhook delivery again").add_argument("delivery_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        # its options belong to the sandbox's own parser, which argparse.REMAINDER would not pass on intact
        return run_sandbox(argv[1:])
    if argv[:1] == ["clients"]:
        # a server command with its own parser (app.cli), loaded only now
        return run_clients(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"genservice {args.command}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print_json(exc.to_dict(), sys.stderr)
        return 1
    except WaitTimeout as exc:
        print(f"genservice {args.command}: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"genservice {args.command}: cannot reach {getattr(args, 'url', 'the service')}: {exc}",
              file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: say nothing more, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
