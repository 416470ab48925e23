#!/usr/bin/env python3
"""A loopback photo host for the benches: every path is one small JPEG, every HEAD its headers.

One asyncio (aiohttp) process answers each request after --delay seconds at about 0.1 ms of CPU, so
on a 2-core machine the benches measure the service and not the photo host. Several processes may
share one port (SO_REUSEPORT); a process prints its port once it listens.

    python bench/photo_server.py --port 0 [--delay 0.05]
"""
from __future__ import annotations

import argparse
import asyncio
import socket

PHOTO = b"\xff\xd8" + b"\x00" * 1020 + b"\xff\xd9"
HOST = "127.0.0.1"


def serve(port: int, delay: float) -> None:
    from aiohttp import web

    async def photo(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        body = b"" if request.method == "HEAD" else PHOTO
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", "Content-Length": str(len(PHOTO))})

    app = web.Application()
    app.router.add_get("/{tail:.*}", photo, allow_head=True)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=True)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        sock.listen(4096)
        site = web.SockSite(runner, sock)
        await site.start()
        print(sock.getsockname()[1], flush=True)
        await asyncio.Event().wait()

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
