"""Logging: LOG_LEVEL, LOG_FORMAT=text|json, and a request id on every line and response."""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# C0 controls (newline, carriage return, escape, ...), DEL, C1 controls (0x9b is a one-byte CSI for
# some terminals) and the Unicode line and paragraph separators: none may reach a log line as is.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _CONTROLS}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape (a newline becomes ``\\x0a``),
    so a value taken from a request (a path with ``%0a``, a header, an exception message) can never
    start a line of its own or drive a terminal. Every character escaped is one ``str.isprintable`` refuses, so
    a printable text (nearly every line) is returned as it is without a look at each character."""
    return text if text.isprintable() else text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """Text lines: the message escaped; a traceback keeps its lines, each escaped and indented, so
    every line that does not start with a timestamp visibly belongs to the record above it.

    ``format`` is written out rather than inherited because the base class reuses ``exc_text``
    cached on the record by whichever handler formatted it first, unescaped.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += "\n" + _indented(super().formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + _indented(record.exc_text)
        if record.stack_info:
            line += "\n" + _indented(record.stack_info)
        return line


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


class RequestIdFilter(logging.Filter):
    """The request id of the request being served; Flask is not imported for it (the worker process
    never loads Flask, and where Flask is not loaded there is no request either)."""

    def filter(self, record: logging.LogRecord) -> bool:
        flask = sys.modules.get("flask")
        serving = flask is not None and flask.has_request_context()
        record.request_id = getattr(flask.g, "request_id", "-") if serving else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values escaped as in text lines (json.dumps with ensure_ascii=False
    would let C1 controls and U+2028 through)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": escape_controls(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = escape_controls(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_genservice", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._genservice = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def init_app(app: Flask) -> None:
    from flask import g, request
    from werkzeug.middleware.proxy_fix import ProxyFix

    hops = app.extensions["genservice"].settings.trusted_proxy_hops
    if hops:
        # the client address and scheme as nginx saw them; without a proxy (0) they cannot be forged
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    access = logging.getLogger("genservice.access")

    @app.before_request
    def _start():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        g.started = time.perf_counter()

    metrics = app.extensions["genservice"].metrics

    @app.after_request
    def _finish(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", "-")
        if access.isEnabledFor(logging.INFO):  # the line's fields are not worth gathering for nothing
            elapsed = (time.perf_counter() - getattr(g, "started", time.perf_counter())) * 1000
            access.info("%s %s %s %.1fms", request.method, request.path, response.status_code, elapsed)
        metrics.http_request(request.endpoint or "unknown", response.status_code)
        return response
