"""Serve made-up car photos on http://127.0.0.1:8088 for trying the service without internet.

    python examples/serve_images.py            # then: genservice submit examples/lots.json --wait

``/cars/<name>.jpg`` is a 640x480 JPEG of a blocky car whose colour and dent follow from the name;
``/missing/...`` answers 404, to show how a lot with an unreachable photo comes back. Standard
library only: the JPEG encoder below writes flat 8x8 blocks (DC coefficients only), which is all a
picture drawn in blocks needs.
"""
from __future__ import annotations

import argparse
import hashlib
import struct
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH, HEIGHT = 640, 480
QUANT = 8
# the standard luminance DC table of the JPEG specification (Annex K), used for every component
DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
DC_VALUES = tuple(range(12))
# every block is flat, so the AC table needs only end-of-block
AC_BITS = (1,) + (0,) * 15
AC_VALUES = (0,)


# ---- the picture --------------------------------------------------------------------------------

def palette(name: str) -> tuple[tuple[int, int, int], float, float]:
    digest = hashlib.sha256(name.encode()).digest()
    colours = ((180, 30, 35), (25, 60, 140), (220, 220, 225), (70, 72, 78), (200, 160, 40), (40, 110, 60))
    return colours[digest[0] % len(colours)], 0.2 + digest[1] / 255 * 0.55, 0.45 + digest[2] / 255 * 0.2


def pixel(u: float, v: float, body: tuple[int, int, int], dent_u: float, dent_v: float) -> tuple[int, int, int]:
    """The colour at (u, v) in [0, 1): sky, road, car body, cabin, windows, wheels and a dent."""
    for wheel_u in (0.3, 0.7):
        if ((u - wheel_u) * 4 / 3) ** 2 + (v - 0.68) ** 2 < 0.08 ** 2:
            return (20, 20, 20)
    if (u - dent_u) ** 2 + (v - dent_v) ** 2 < 0.05 ** 2 and 0.15 <= u <= 0.85 and 0.42 <= v <= 0.68:
        return tuple(max(0, c // 2 - 10) for c in body)  # type: ignore[return-value]
    if 0.33 <= u <= 0.65 and 0.30 <= v <= 0.40:
        return (150, 180, 200)
    if (0.3 <= u <= 0.68 and 0.28 <= v <= 0.42) or (0.15 <= u <= 0.85 and 0.42 <= v <= 0.68):
        return body
    if v >= 0.6:
        return (90, 90, 95)
    return (110 + int(100 * v), 160 + int(60 * v), 235)


def blocks(name: str) -> list[tuple[int, int, int]]:
    """One RGB colour per 8x8 block, row by row."""
    body, dent_u, dent_v = palette(name)
    bw, bh = WIDTH // 8, HEIGHT // 8
    return [pixel((x + 0.5) / bw, (y + 0.5) / bh, body, dent_u, dent_v) for y in range(bh) for x in range(bw)]


# ---- the JPEG -----------------------------------------------------------------------------------

def ycbcr(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b,
            128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
            128 + 0.5 * r - 0.418688 * g - 0.081312 * b)


def huffman_codes(bits: tuple[int, ...], values: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """Canonical codes: value -> (code, length)."""
    codes, code, k = {}, 0, 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[values[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


class BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def write(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.count = 0

    def flush(self) -> bytes:
        if self.count:
            self.write((1 << (8 - self.count)) - 1, 8 - self.count)
        return bytes(self.out)


def encode_dc(writer: BitWriter, diff: int, dc_codes, eob) -> None:
    size = abs(diff).bit_length()
    writer.write(*dc_codes[size])
    if size:
        writer.write(diff if diff > 0 else diff + (1 << size) - 1, size)
    writer.write(*eob)


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def jpeg(colours: list[tuple[int, int, int]], width: int = WIDTH, height: int = HEIGHT) -> bytes:
    dc_codes, eob = huffman_codes(DC_BITS, DC_VALUES), huffman_codes(AC_BITS, AC_VALUES)[0]
    writer, previous = BitWriter(), [0, 0, 0]
    for colour in colours:
        for component, level in enumerate(ycbcr(colour)):
            dc = round(8 * (level - 128) / QUANT)  # the DC term of a flat block is 8 x its level-shifted value
            encode_dc(writer, dc - previous[component], dc_codes, eob)
            previous[component] = dc
    components = b"".join(bytes((i, 0x11, 0)) for i in (1, 2, 3))
    tables = (bytes((0x00,) + DC_BITS + DC_VALUES) + bytes((0x10,) + AC_BITS + AC_VALUES))
    return b"".join((
        b"\xff\xd8",
        segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
        segment(0xDB, bytes((0,)) + bytes((QUANT,)) * 64),
        segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components),
        segment(0xC4, tables),
        segment(0xDA, bytes((3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0))),
        writer.flush(),
        b"\xff\xd9",
    ))


@lru_cache(maxsize=256)
def car_photo(name: str) -> bytes:
    return jpeg(blocks(name))


# ---- the server ---------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    server_version = "example-images/1.0"
    quiet = False

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/cars/") and path.endswith(".jpg") and len(path) > len("/cars/.jpg"):
            self.reply(200, "image/jpeg", car_photo(path[len("/cars/"):-len(".jpg")]), head)
        else:
            self.reply(404, "text/plain; charset=utf-8", b"no such photo\n", head)

    def reply(self, status: int, content_type: str, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    Handler.quiet = args.quiet
    try:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as exc:
        raise SystemExit(f"demo photos not served: {args.host}:{args.port} is not free ({exc.strerror})") from None
    print(f"serving car photos on http://{args.host}:{server.server_port}/cars/<any-name>.jpg (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
