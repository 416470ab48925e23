"""Log lines escape control characters: nothing from a request can forge a line or drive a terminal."""
from __future__ import annotations

import http.client
import io
import json
import logging
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import logs

HOSTILE = "x\n2026-12-01 08:00:00,000 INFO [-] app: forged\r\x1b[31mred\x1b[0m\x9b2J\u2028tail\x00\x7f"
FORBIDDEN = ["\r", "\x1b", "\x9b", "\u2028", "\x00", "\x7f"]


@pytest.fixture
def log_stream():
    """The service's own handler, writing into a buffer for the test."""
    root = logging.getLogger()
    saved_level = root.level
    logs.configure("INFO", "text")
    handler = next(h for h in root.handlers if getattr(h, "_genservice", False))
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    formatter = handler.formatter
    yield buffer
    handler.setStream(previous)
    handler.setFormatter(formatter)
    root.setLevel(saved_level)


def _lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().split("\n")[:-1]


def _clean(text: str) -> None:
    for char in FORBIDDEN:
        assert char not in text, repr(char)


def test_escape_controls_makes_them_visible():
    assert logs.escape_controls("a\nb\rc\x1bd\x9be\u2028f\tg") == "a\\x0ab\\x0dc\\x1bd\\x9be\\u2028f\\x09g"
    assert logs.escape_controls("plain, ünïcode and \\ stay") == "plain, ünïcode and \\ stay"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_value_stays_on_one_line(log_stream, fmt):
    logs.configure("INFO", fmt)
    logging.getLogger("genservice.test").warning("value %s end", HOSTILE)
    lines = _lines(log_stream)
    assert len(lines) == 1
    _clean(lines[0])
    message = json.loads(lines[0])["message"] if fmt == "json" else lines[0]
    assert "x\\x0a2026-12-01 08:00:00,000 INFO [-] app: forged\\x0d\\x1b[31mred" in message
    assert message.endswith("\\x00\\x7f end")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_cannot_start_a_line_of_its_own(log_stream, fmt):
    logs.configure("INFO", fmt)
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logging.getLogger("genservice.test").exception("failed on %s", "\n/path")
    lines = _lines(log_stream)
    _clean(log_stream.getvalue())
    if fmt == "json":
        assert len(lines) == 1
        entry = json.loads(lines[0])
        assert entry["message"] == "failed on \\x0a/path" and "ValueError: x\\x0a2026" in entry["exception"]
    else:
        assert "failed on \\x0a/path" in lines[0]
        # every line after the first belongs to the traceback, indented; none looks like a record
        assert len(lines) > 2 and all(line.startswith("    ") for line in lines[1:])
        assert "    ValueError: x" in lines and not any(line.startswith("2026-12-01 08:00") for line in lines)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_encoded_newline_in_a_request_path_is_escaped_in_the_access_line(make_live, log_stream, fmt):
    server = make_live(LOG_LEVEL="INFO", LOG_FORMAT=fmt)
    logs.configure("INFO", fmt)
    log_stream.seek(0)
    log_stream.truncate()
    host = urlsplit(server.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    path = "/api/v1/batch-status/x%0a2026-12-01%2008:00:00,000%20INFO%20forged%0d%1b[2J%c2%9b"
    connection.request("GET", path, headers={"X-Request-ID": "abc\x1b[2J"})
    answer = connection.getresponse()
    assert answer.status in (401, 404)
    answer.read()
    connection.close()
    access = [line for line in _lines(log_stream) if "batch-status" in line]
    assert len(access) == 1, _lines(log_stream)
    _clean(access[0])
    text = json.loads(access[0])["message"] if fmt == "json" else access[0]
    assert "/api/v1/batch-status/x\\x0a2026-12-01 08:00:00,000 INFO forged\\x0d\\x1b[2J\\x9b" in text
    assert not any(line.startswith("2026-12-01 08:00:00") for line in _lines(log_stream))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\n", "\x1b", "\x7f", "\x9b", "\u2028",
                                                                         "\u2029", "\t", "\u00ad", " "])))
def test_escaping_is_the_same_with_or_without_the_printable_shortcut(text):
    assert logs.escape_controls(text) == text.translate(logs._ESCAPES)
