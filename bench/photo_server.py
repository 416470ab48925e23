#!/usr/bin/env python3
"""A loopback photo host for the benches: every path is one small JPEG, every HEAD its headers.

It stands in for a CDN that lives on other machines, so it should take as little as possible of
the two cores the service is measured on: a bare asyncio protocol (no HTTP framework) that reads
request heads, answers each after --delay seconds with canned headers and keeps the connection
open (HTTP/1.1), about 20 µs of CPU a request. Several processes may share one port
(SO_REUSEPORT); a process prints its port once it listens.

    python bench/photo_server.py --port 0 [--delay 0.05]
"""
from __future__ import annotations

import argparse
import asyncio
import socket

PHOTO = b"\xff\xd8" + b"\x00" * 1020 + b"\xff\xd9"
HOST = "127.0.0.1"
_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(PHOTO))
_KEEP = _HEAD + b"\r\n"
_CLOSE = _HEAD + b"Connection: close\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 16 * 1024


class PhotoProtocol(asyncio.Protocol):
    def __init__(self, delay: float):
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            method = head[:head.find(b" ")]
            close = b"connection: close" in head.lower()
            answer = (_CLOSE if close else _KEEP) + (b"" if method == b"HEAD" else PHOTO)
            self._answer(answer, close)
            if close:
                return
        if len(self.buffer) > MAX_HEAD:
            self._answer(_BAD, True)

    def _answer(self, answer: bytes, close: bool) -> None:
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self._write, answer, close)
        else:
            self._write(answer, close)

    def _write(self, answer: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(answer)
        if close:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.transport = None


def serve(port: int, delay: float) -> None:
    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        server = await asyncio.get_running_loop().create_server(lambda: PhotoProtocol(delay), sock=sock,
                                                                 backlog=4096)
        print(sock.getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one (printed)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer (0)")
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.delay)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
