"""A loopback HTTP server with image-like routes, for tests that need real HTTP.

Routes (``?size=N`` overrides the body size where a body is generated):

* ``/img/<name>``            200 image/jpeg, small body (HEAD and GET)
* ``/missing/...``           404
* ``/html/...``              200 text/html
* ``/big/...``               200 image/jpeg, Content-Length 11 MB; GET streams it
* ``/nohead/...``            405 on HEAD, 200 image/png on GET
* ``/nolength/...``          200 image/jpeg, chunked, no Content-Length
* ``/slow/<seconds>/...``    sleeps, then 200 image/jpeg
* ``/redirect/<n>/<name>``   302 chain of n hops ending at ``/img/<name>``
* ``/redirect-to?url=U``     302 (or ``&status=``) to U
* ``/drip/<seconds>/...``    a 200 image/jpeg answer sent one byte every <seconds>, status line first
* any POST                   body read and discarded, 204
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SMALL_SIZE = 1024
BIG_SIZE = 11 * 1024 * 1024
_CHUNK = 64 * 1024


def image_bytes(size: int) -> bytes:
    """``size`` bytes that start and end like a JPEG."""
    if size < 4:
        return b"\xff" * size
    return b"\xff\xd8" + b"\x00" * (size - 4) + b"\xff\xd9"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096
    owner: "ImageServer"

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up early (timeouts, size limits) are expected."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self.server.owner._record("POST", self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(204, None, b"", head=True)

    def _dispatch(self, head: bool) -> None:
        owner = self.server.owner
        owner._record(self.command, self.path)
        owner._enter()
        try:
            self._route(head)
        finally:
            owner._leave()

    def _route(self, head: bool) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        segments = parts.path.strip("/").split("/")
        route, rest = segments[0], segments[1:]
        size = int(query.get("size", [0])[0]) or None

        if route == "img":
            self._reply(200, "image/jpeg", image_bytes(size or SMALL_SIZE), head)
        elif route == "html":
            self._reply(200, "text/html; charset=utf-8", b"<html><body>not an image</body></html>", head)
        elif route == "big":
            self._stream(size or BIG_SIZE, head)
        elif route == "nohead" and head:
            self._reply(405, "text/plain", b"", head, extra={"Allow": "GET"})
        elif route == "nohead":
            self._reply(200, "image/png", image_bytes(size or SMALL_SIZE), head)
        elif route == "nolength":
            self._chunked(image_bytes(size or 2 * SMALL_SIZE), head)
        elif route == "slow" and rest:
            owner._stopping.wait(float(rest[0]))
            self._reply(200, "image/jpeg", image_bytes(size or SMALL_SIZE), head)
        elif route == "drip" and rest:
            self._drip(float(rest[0]), head)
        elif route == "redirect" and len(rest) >= 2:
            hops, name = int(rest[0]), "/".join(rest[1:])
            target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/img/{name}"
            self._redirect(302, target)
        elif route == "redirect-to" and "url" in query:
            self._redirect(int(query.get("status", [302])[0]), query["url"][0])
        else:
            self._reply(404, "text/plain", b"not found", head)

    def _reply(self, status: int, ctype: str | None, body: bytes, head: bool,
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _drip(self, interval: float, head: bool) -> None:
        body = b"" if head else image_bytes(SMALL_SIZE)
        answer = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {SMALL_SIZE}\r\n\r\n"
                  .encode() + body)
        owner = self.server.owner
        try:
            for index in range(len(answer)):
                self.wfile.write(answer[index:index + 1])
                self.wfile.flush()
                if owner._stopping.wait(interval):
                    return
        except (BrokenPipeError, ConnectionResetError):
            with owner._lock:
                owner.cut += 1
        self.close_connection = True

    def _redirect(self, status: int, location: str) -> None:
        self._reply(status, "text/plain", b"", head=False, extra={"Location": location})

    def _stream(self, size: int, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        chunk = b"\x00" * _CHUNK
        sent = 0
        while sent < size:
            piece = chunk[: min(_CHUNK, size - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def _chunked(self, body: bytes, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        for start in range(0, len(body), _CHUNK):
            piece = body[start:start + _CHUNK]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


class ImageServer:
    """Threaded HTTP server on a loopback address and a free port.

    ``requests`` lists every (method, path-with-query) received, in order.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self.active = 0
        self.max_active = 0                 # most requests it was answering at once
        self.cut = 0                        # drip answers the client hung up on before the end
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def url(self, path: str, host: str | None = None) -> str:
        """Absolute URL for ``path``; ``host`` lets a test use another name, e.g. "localhost"."""
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        return f"http://{name}:{self.port}{path}"

    def start(self) -> "ImageServer":
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="image-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; handlers sleeping on /slow/ are woken so they finish quickly."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def __enter__(self) -> "ImageServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
