"""A loopback webhook receiver that records every request and answers as told.

Besides a status script, a delay and a redirect target, it can hold every answer until the test
releases it (``Behaviour.hold``), and it counts the requests it is answering at once, so tests
can see how many parallel attempts a URL gets without measuring time.
"""
from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.common import free_port

HOLD_LIMIT = 30.0


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
    hold: threading.Event | None = None             # when set, answers wait until the event is set
    body: bytes = b'{"status":"received"}'
    headers: dict = field(default_factory=dict)   # extra answer headers, e.g. Content-Encoding
    drip: float = 0.0                               # when set, the whole answer is sent a byte every `drip` s


class WebhookReceiver:
    def __init__(self):
        self.received: list[Received] = []
        self.behaviour = Behaviour()
        self.active = 0
        self.max_active = 0
        self.cut = 0                                    # answers the client hung up on before the end
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
                status, behaviour = receiver._arrive(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                try:
                    if behaviour.delay:
                        time.sleep(behaviour.delay)
                    if behaviour.hold is not None:
                        behaviour.hold.wait(HOLD_LIMIT)
                    self._answer(status, behaviour)
                finally:
                    receiver._leave()

            def _answer(self, status: int, behaviour: Behaviour) -> None:
                lines = [f"HTTP/1.1 {status} Answer", "Content-Type: application/json",
                         f"Content-Length: {len(behaviour.body)}"]
                if 300 <= status < 400 and behaviour.location:
                    lines.append(f"Location: {behaviour.location}")
                lines += [f"{name}: {value}" for name, value in behaviour.headers.items()]
                answer = ("\r\n".join(lines) + "\r\n\r\n").encode() + behaviour.body
                try:
                    if not behaviour.drip:
                        self.wfile.write(answer)
                        return
                    for index in range(len(answer)):
                        self.wfile.write(answer[index:index + 1])
                        self.wfile.flush()
                        time.sleep(behaviour.drip)
                except (BrokenPipeError, ConnectionResetError):
                    with receiver._lock:
                        receiver.cut += 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _arrive(self, request: Received):
        with self._cond:
            self.received.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            behaviour = self.behaviour
            status = behaviour.statuses.pop(0) if behaviour.statuses else behaviour.default_status
            self._cond.notify_all()
            return status, copy.copy(behaviour)

    def _leave(self) -> None:
        with self._cond:
            self.active -= 1

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.behaviour.hold is not None:
            self.behaviour.hold.set()
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

    def webhook_ids(self) -> Counter:
        """How many requests carried each webhook-id."""
        with self._lock:
            return Counter(r.headers.get("webhook-id") for r in self.received)


def closed_port_url(path: str = "/hook") -> str:
    """A loopback URL on which nothing listens (the port was bound, then released), so connecting is refused."""
    return f"http://127.0.0.1:{free_port()}{path}"
