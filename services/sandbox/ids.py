"""Identifiers in the formats OpenAI uses, so logs and tests look like the real thing."""
from __future__ import annotations

import secrets
import string

_BASE62 = string.ascii_letters + string.digits


def _base62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def file_id() -> str:
    return "file-" + _base62(22)


def batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def batch_request_id() -> str:
    return "batch_req_" + secrets.token_hex(16)


def response_id() -> str:
    return "resp_" + secrets.token_hex(25)


def message_id() -> str:
    return "msg_" + secrets.token_hex(25)


def reasoning_id() -> str:
    return "rs_" + secrets.token_hex(25)


def chat_completion_id() -> str:
    return "chatcmpl-" + _base62(29)


def request_id() -> str:
    return "req_" + secrets.token_hex(16)
