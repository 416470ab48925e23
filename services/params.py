"""Query parameters checked once, the same way for every listing; 400 names the parameter."""
from __future__ import annotations

from typing import Mapping

from services.errors import ServiceError

MAX_OFFSET = 10_000_000


def int_param(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServiceError(400, "VALIDATION_ERROR", f"'{name}' must be an integer", {"field": name}) from None
    if value < low or value > high:
        raise ServiceError(400, "VALIDATION_ERROR", f"'{name}' must be between {low} and {high}", {"field": name})
    return value


def page_params(args: Mapping[str, str], default_limit: int, max_limit: int) -> dict[str, int]:
    return {"limit": int_param(args, "limit", default_limit, 1, max_limit),
            "offset": int_param(args, "offset", 0, 0, MAX_OFFSET)}
