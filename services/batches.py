"""Batch API files: JSONL request lines, shard limits, and reading output lines back.

Pure functions: the worker decides when to call them and records every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

CUSTOM_ID_PREFIX = "lot-"


def custom_id(seq: int) -> str:
    return f"{CUSTOM_ID_PREFIX}{seq}"


def seq_of(custom_id_value: str) -> int | None:
    if not isinstance(custom_id_value, str) or not custom_id_value.startswith(CUSTOM_ID_PREFIX):
        return None
    try:
        return int(custom_id_value[len(CUSTOM_ID_PREFIX):])
    except ValueError:
        return None


def request_line(seq: int, body: dict[str, Any], endpoint: str = "/v1/responses") -> bytes:
    """One JSONL line, compact UTF-8 (orjson: a line is built twice per lot, to size the shard and to
    write it, and the standard encoder cost eight times as much CPU)."""
    line = {"custom_id": custom_id(seq), "method": "POST", "url": endpoint, "body": body}
    return orjson.dumps(line) + b"\n"


class ShardCutter:
    """Decides where a shard ends: at most ``max_requests`` lines and ``max_bytes`` bytes per file."""

    def __init__(self, max_requests: int, max_bytes: int):
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.count = 0
        self.size = 0

    def fits(self, line_size: int) -> bool:
        if self.count == 0:
            return True
        return self.count + 1 <= self.max_requests and self.size + line_size <= self.max_bytes

    def add(self, line_size: int) -> None:
        self.count += 1
        self.size += line_size

    def reset(self) -> None:
        self.count = 0
        self.size = 0


@dataclass
class OutputLine:
    seq: int | None
    body: dict[str, Any] | None
    error: str | None
    # OpenAI's error code and parameter when it refused the request as sent (e.g. unsupported_parameter)
    code: str | None = None
    param: str | None = None


def parse_output_line(line: dict[str, Any]) -> OutputLine:
    """One line of an output or error file: the response body on success, else a short reason."""
    seq = seq_of(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code")
    body = response.get("body")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        return OutputLine(seq, None, f"{code}: {message}" if code else str(message))
    if status != 200 or not isinstance(body, dict):
        error_body = (body or {}).get("error") if isinstance(body, dict) else None
        error_body = error_body if isinstance(error_body, dict) else {}
        detail = error_body.get("message")
        return OutputLine(seq, None, f"HTTP {status}: {detail or 'request failed'}", error_body.get("code"),
                          error_body.get("param"))
    return OutputLine(seq, body, None)
