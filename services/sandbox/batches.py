"""BatchRecord and its lifecycle, computed from the clock rather than driven by a thread.

A batch is validating for ``validating`` seconds, in_progress for ``in_progress`` seconds
(request counts rise linearly), finalizing for ``finalizing`` seconds, then completed. An
expired batch stays in_progress until the same end time and then expires. A cancel freezes
progress, shows cancelling for ``cancelling`` seconds, then cancelled.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any

from services.sandbox.batch_io import BatchInput, RunResult, executed_count

DAY = 24 * 3600
ACTIVE = ("validating", "in_progress", "finalizing")
SETTLED = ("completed", "expired", "cancelled")


@dataclass(frozen=True)
class Timing:
    validating: float = 0.0
    in_progress: float = 0.0
    finalizing: float = 0.0
    cancelling: float = 0.0


@dataclass
class Phase:
    status: str
    progress: float = 0.0
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchRecord:
    id: str
    seq: int
    created: float
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    timing: Timing
    outcome: str
    expire_fraction: float
    unsafe: bool
    input: BatchInput
    input_path: str | None
    errors: list[dict[str, Any]]
    order: list[int] = field(default_factory=list)
    failing: frozenset[int] = frozenset()
    fail_positions: list[int] = field(default_factory=list)
    cancel_at: float | None = None
    cancel_executed: int = 0
    result: RunResult | None = None
    # the lines run ahead of time (see SandboxState: as OpenAI runs a batch on its own, not when asked),
    # kept unpublished until the batch completes; dropped if it is cancelled first
    prepared: RunResult | None = None
    prepared_with: Any = field(default=None, repr=False)  # the catalog those lines ran with
    output_file_id: str | None = None
    error_file_id: str | None = None
    run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total(self) -> int:
        return 0 if self.errors else len(self.input.custom_ids)

    @property
    def planned_executions(self) -> int:
        fraction = self.expire_fraction if self.outcome == "expired" else 1.0
        return executed_count(self.total, fraction)

    def executions_at(self, progress: float) -> int:
        return executed_count(self.planned_executions, progress)


def phase(record: BatchRecord, now: float) -> Phase:
    if record.cancel_at is not None and now >= record.cancel_at:
        return _cancel_phase(record, now)
    return _natural_phase(record, now)


def _natural_phase(record: BatchRecord, now: float) -> Phase:
    t = record.timing
    validated = record.created + t.validating
    processed = validated + t.in_progress
    finished = processed + t.finalizing
    if now < validated:
        return Phase("validating")
    if record.errors:
        return Phase("failed", 0.0, {"failed_at": validated})
    stamps = {"in_progress_at": validated}
    if record.outcome == "expired":
        if now < finished:
            return Phase("in_progress", _fraction(now, validated, finished), stamps)
        return Phase("expired", 1.0, {**stamps, "expired_at": finished})
    if now < processed:
        return Phase("in_progress", _fraction(now, validated, processed), stamps)
    stamps["finalizing_at"] = processed
    if now < finished:
        return Phase("finalizing", 1.0, stamps)
    return Phase("completed", 1.0, {**stamps, "completed_at": finished})


def _cancel_phase(record: BatchRecord, now: float) -> Phase:
    assert record.cancel_at is not None
    before = _natural_phase(record, record.cancel_at)
    stamps = {**before.stamps, "cancelling_at": record.cancel_at}
    done = record.cancel_at + record.timing.cancelling
    if now < done:
        return Phase("cancelling", before.progress, stamps)
    return Phase("cancelled", before.progress, {**stamps, "cancelled_at": done})


def _fraction(now: float, start: float, end: float) -> float:
    if end <= start:
        return 1.0
    return min(1.0, max(0.0, (now - start) / (end - start)))


def request_counts(record: BatchRecord, current: Phase) -> dict[str, int]:
    if record.result is not None:
        return {"total": record.total, "completed": record.result.completed, "failed": record.result.failed}
    if current.status in ("validating", "failed"):
        return {"total": 0, "completed": 0, "failed": 0}
    executed = record.cancel_executed if record.cancel_at is not None else record.executions_at(current.progress)
    failed = bisect.bisect_left(record.fail_positions, executed)
    return {"total": record.total, "completed": executed - failed, "failed": failed}


def to_api(record: BatchRecord, current: Phase) -> dict[str, Any]:
    stamp = {key: int(value) for key, value in current.stamps.items()}
    result = record.result
    usage = {
        "input_tokens": result.input_tokens if result else 0,
        "input_tokens_details": {"cached_tokens": result.cached_tokens if result else 0},
        "output_tokens": result.output_tokens if result else 0,
        "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens if result else 0},
        "total_tokens": (result.input_tokens + result.output_tokens) if result else 0,
    }
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "model": record.input.model,
        "errors": {"object": "list", "data": record.errors} if record.errors and current.status == "failed" else None,
        "input_file_id": record.input_file_id,
        "completion_window": record.completion_window,
        "status": current.status,
        "output_file_id": record.output_file_id,
        "error_file_id": record.error_file_id,
        "created_at": int(record.created),
        "in_progress_at": stamp.get("in_progress_at"),
        "expires_at": int(record.created) + DAY,
        "finalizing_at": stamp.get("finalizing_at"),
        "completed_at": stamp.get("completed_at"),
        "failed_at": stamp.get("failed_at"),
        "expired_at": stamp.get("expired_at"),
        "cancelling_at": stamp.get("cancelling_at"),
        "cancelled_at": stamp.get("cancelled_at"),
        "request_counts": request_counts(record, current),
        "usage": usage,
        "metadata": record.metadata,
    }
