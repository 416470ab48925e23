"""SandboxConfig: every latency, fault and batch knob of the sandbox, settable at run time."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from services.sandbox.catalog import check_overrides

BATCH_OUTCOMES = ("completed", "failed", "expired")


class ConfigError(ValueError):
    """A config update names an unknown field or carries a value of the wrong kind."""


@dataclass
class SandboxConfig:
    """Knobs of the emulator.

    ``fail_next`` and ``slow_next`` are queues consumed by the next /v1/responses or
    /v1/chat/completions calls; ``batch_outcome_count`` counts down with each batch created
    and then puts ``batch_outcome`` back to ``"completed"``. ``catalog_overrides`` changes the
    model catalog for this sandbox: ``{model: {"shutdown_date", "efforts", "default_effort",
    "sampling", "max_output_tokens", "shut_down"}}`` (any subset; a model the catalog does not
    have is added with today's GPT-6 rules). ``prompt_cache_seconds`` is how long an unused
    prompt prefix stays cached.
    """

    vision_latency: float = 0.0
    text_latency: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    fail_rate_429: float = 0.0
    fail_rate_500: float = 0.0
    fault_seed: int = 0
    retry_after_seconds: float = 0.0
    slow_next: int = 0
    slow_seconds: float = 5.0
    required_api_key: str | None = None
    inject_unsafe_markup: bool = False
    batch_validating_seconds: float = 0.0
    batch_in_progress_seconds: float = 0.0
    batch_finalizing_seconds: float = 0.0
    batch_cancelling_seconds: float = 0.0
    batch_line_failure_rate: float = 0.0
    batch_fail_custom_ids: list[str] = field(default_factory=list)
    batch_outcome: str = "completed"
    batch_outcome_count: int | None = None
    batch_expire_completed_fraction: float = 0.5
    catalog_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    prompt_cache_seconds: float = 600.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> "SandboxConfig":
        return dataclasses.replace(self, fail_next=list(self.fail_next),
                                   batch_fail_custom_ids=list(self.batch_fail_custom_ids),
                                   catalog_overrides=copy.deepcopy(self.catalog_overrides))

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update atomically: either every field is valid and set, or none is."""
        if not isinstance(changes, Mapping):
            raise ConfigError("config update must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        values = {name: _coerce(name, value) for name, value in changes.items()}
        for name, value in values.items():
            setattr(self, name, value)


_FLOATS = {"vision_latency", "text_latency", "slow_seconds", "retry_after_seconds", "batch_validating_seconds",
           "batch_in_progress_seconds", "batch_finalizing_seconds", "batch_cancelling_seconds",
           "prompt_cache_seconds"}
_FRACTIONS = {"fail_rate_429", "fail_rate_500", "batch_line_failure_rate", "batch_expire_completed_fraction"}
_COUNTS = {"slow_next", "fault_seed"}


def _coerce(name: str, value: Any) -> Any:
    if name in _FLOATS:
        return _number(name, value, 0.0, None)
    if name in _FRACTIONS:
        return _number(name, value, 0.0, 1.0)
    if name in _COUNTS:
        return _integer(name, value)
    if name == "batch_outcome_count":
        return None if value is None else _integer(name, value)
    if name == "fail_next":
        if not isinstance(value, list) or not all(_is_int(v) and 400 <= v <= 599 for v in value):
            raise ConfigError("fail_next must be a list of HTTP error statuses (400-599)")
        return list(value)
    if name == "batch_fail_custom_ids":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("batch_fail_custom_ids must be a list of strings")
        return list(value)
    if name == "batch_outcome":
        if value not in BATCH_OUTCOMES:
            raise ConfigError(f"batch_outcome must be one of {', '.join(BATCH_OUTCOMES)}")
        return value
    if name == "inject_unsafe_markup":
        if not isinstance(value, bool):
            raise ConfigError("inject_unsafe_markup must be true or false")
        return value
    if name == "catalog_overrides":
        try:
            return check_overrides(value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if name == "required_api_key":
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigError("required_api_key must be a non-empty string or null")
        return value
    raise ConfigError(f"unknown config field: {name}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(name: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer")
    return value


def _number(name: str, value: Any, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}")
    return float(value)
