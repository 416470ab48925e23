"""Stats: counters the tests read through GET /sandbox/stats to prove what the service sent."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Mapping

COUNTERS = ("responses_calls", "responses_vision_calls", "responses_text_calls", "chat_calls",
            "chat_vision_calls", "chat_text_calls", "slow_calls", "files_uploaded", "bytes_uploaded",
            "files_deleted", "batches_created", "batches_cancelled", "batch_lines_executed",
            "batches_failed_validation", "stored_responses")


def metadata_key(metadata: Mapping[str, str] | None) -> str:
    """A stable string for a batch's metadata: sorted ``k=v`` pairs joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted((metadata or {}).items()))


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._by_metadata: Counter[str] = Counter()

    def bump(self, name: str, amount: int = 1) -> None:
        assert name in COUNTERS, name
        with self._lock:
            self._counts[name] += amount

    def fault(self, status: int) -> None:
        with self._lock:
            self._faults[str(status)] += 1

    def refused(self, code: str | None, amount: int = 1) -> None:
        """A request (direct or a batch line) refused the way OpenAI refuses it, by error code."""
        with self._lock:
            self._refused[code or "invalid_request"] += amount

    def batch_created(self, metadata: Mapping[str, str] | None) -> None:
        with self._lock:
            self._counts["batches_created"] += 1
            self._by_metadata[metadata_key(metadata)] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {name: self._counts[name] for name in COUNTERS}
            data["injected_faults"] = dict(self._faults)
            data["refused"] = dict(self._refused)
            data["batch_creates_by_metadata"] = dict(self._by_metadata)
        return data
