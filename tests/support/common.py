"""The helpers every kind of test needs: a free loopback port and a wait loop."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then released): for a server that must be told its
    port up front, or as the target of a connection that must be refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str] = "condition",
               interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy (which is returned); after ``timeout`` seconds fail
    with an AssertionError naming ``message`` (a string, or a function called then, e.g. for the last state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting for {text}")
        time.sleep(interval)
