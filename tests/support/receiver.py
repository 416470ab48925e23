"""A loopback webhook receiver that records every request and answers as told."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float

    def json(self):
        return json.loads(self.body)


@dataclass
class Behaviour:
    statuses: list = field(default_factory=list)   # consumed one per request; then default_status
    default_status: int = 200
    delay: float = 0.0
    location: str | None = None


class WebhookReceiver:
    def __init__(self):
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.monotonic()))
                    status = receiver.behaviour.statuses.pop(0) if receiver.behaviour.statuses \
                        else receiver.behaviour.default_status
                    delay = receiver.behaviour.delay
                    receiver._cond.notify_all()
                if delay:
                    time.sleep(delay)
                payload = b'{"status":"received"}'
                try:
                    self.send_response(status)
                    if 300 <= status < 400 and receiver.behaviour.location:
                        self.send_header("Location", receiver.behaviour.location)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} webhook requests, got {len(self.received)}")
                self._cond.wait(remaining)
            return list(self.received)
