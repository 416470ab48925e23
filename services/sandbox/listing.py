"""Cursor pagination shaped like OpenAI's list endpoints."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar

from services.sandbox.errors import invalid_request

T = TypeVar("T")


def read_limit(args: Mapping[str, str], default: int, maximum: int) -> int:
    raw = args.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request(f"Invalid 'limit': expected an integer, got '{raw}'.", "limit", "invalid_value") from None
    if not 1 <= limit <= maximum:
        raise invalid_request(f"Invalid 'limit': must be between 1 and {maximum}.", "limit", "invalid_value")
    return limit


def cursor_page(items: Sequence[T], render: Callable[[T], dict[str, Any]], *, limit: int,
                after: str | None, key: Callable[[T], str]) -> dict[str, Any]:
    """``items`` already in list order; ``after`` is the id of the last item of the previous page.

    An ``after`` that names no item yields an empty page, so a client paging through a list
    whose items vanished stops instead of looping.
    """
    start = 0
    if after:
        ids = [key(item) for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    chosen = items[start:start + limit]
    data = [render(item) for item in chosen]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(items),
    }
