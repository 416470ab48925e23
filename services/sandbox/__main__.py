"""Run the sandbox standalone: ``python -m services.sandbox --host 127.0.0.1 --port 8001``.

It listens on loopback unless ``--host`` says otherwise. Its control endpoints need a token:
``--control-token`` or ``SANDBOX_CONTROL_TOKEN``, else one is made up and printed at start.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading

from services.sandbox.config import BATCH_OUTCOMES, SandboxConfig
from services.sandbox.server import SandboxServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.sandbox",
                                     description="OpenAI-compatible emulator for the Generation Service.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else exposes the sandbox)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--vision-latency", type=float, default=0.0, help="seconds per request with images")
    parser.add_argument("--text-latency", type=float, default=0.0, help="seconds per request without images")
    parser.add_argument("--batch-validating-seconds", type=float, default=0.0)
    parser.add_argument("--batch-in-progress-seconds", type=float, default=0.0)
    parser.add_argument("--batch-finalizing-seconds", type=float, default=0.0)
    parser.add_argument("--batch-cancelling-seconds", type=float, default=0.0)
    parser.add_argument("--batch-line-failure-rate", type=float, default=0.0)
    parser.add_argument("--batch-outcome", choices=BATCH_OUTCOMES, default="completed")
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    parser.add_argument("--inject-unsafe-markup", action="store_true")
    parser.add_argument("--log-requests", action="store_true")
    parser.add_argument("--control-token", default=os.environ.get("SANDBOX_CONTROL_TOKEN") or None,
                        help="token for /sandbox/config, /sandbox/reset and /sandbox/stats (default: "
                             "$SANDBOX_CONTROL_TOKEN, else a random one printed at start)")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> SandboxConfig:
    config = SandboxConfig()
    config.update({
        "vision_latency": args.vision_latency,
        "text_latency": args.text_latency,
        "batch_validating_seconds": args.batch_validating_seconds,
        "batch_in_progress_seconds": args.batch_in_progress_seconds,
        "batch_finalizing_seconds": args.batch_finalizing_seconds,
        "batch_cancelling_seconds": args.batch_cancelling_seconds,
        "batch_line_failure_rate": args.batch_line_failure_rate,
        "batch_outcome": args.batch_outcome,
        "fail_rate_429": args.fail_rate_429,
        "fail_rate_500": args.fail_rate_500,
        "fault_seed": args.fault_seed,
        "slow_seconds": args.slow_seconds,
        "required_api_key": args.api_key,
        "inject_unsafe_markup": args.inject_unsafe_markup,
    })
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = SandboxServer(config_from(args), host=args.host, port=args.port, log_requests=args.log_requests,
                               control_token=args.control_token)
    except ValueError as exc:
        print(f"python -m services.sandbox: {exc}", file=sys.stderr)
        return 2
    server.start()
    print(f"OpenAI sandbox listening; base URL {server.url} (control: {server.root_url}/sandbox/config)",
          flush=True)
    if args.control_token is None:
        print(f"control token (send as X-Sandbox-Token or Authorization: Bearer): {server.control_token}",
              flush=True)
    if not _loopback(args.host):
        print(f"warning: the sandbox listens on {args.host}, not only on loopback; it is a development and test "
              f"tool, never a stand-in for OpenAI in production", file=sys.stderr, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
