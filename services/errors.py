"""Errors the services raise; the web layer turns them into the spec's JSON error bodies."""
from __future__ import annotations

from typing import Any

TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Authentication failed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    502: "External service error",
    503: "Service unavailable",
    504: "External service timeout",
}


class ServiceError(Exception):
    """A failure with a stable machine code, a message for people and an HTTP status hint."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 error: str | None = None, retry_after: int | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.error = error or TITLES.get(status, "Error")
        self.retry_after = retry_after
        self.extra = extra or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, **self.extra, "message": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


class UpstreamError(ServiceError):
    """OpenAI failed (502) or did not answer in time (504)."""

    def __init__(self, message: str, *, timeout: bool = False, upstream_message: str | None = None,
                 retry_after: int | None = None, api: str = "vision", upstream_status: int | None = None,
                 refused: bool = False):
        details: dict[str, Any] = {"openai_error": upstream_message or message, "api": api}
        if retry_after is not None:
            details["retry_after"] = retry_after
        super().__init__(504 if timeout else 502, "OPENAI_TIMEOUT" if timeout else "OPENAI_API_ERROR",
                         message, details)
        self.api = api
        self.timeout = timeout
        self.upstream_status = upstream_status
        # OpenAI refused the request as configured (model, parameter): retrying can only fail again
        self.refused = refused

    @property
    def rate_limited(self) -> bool:
        return self.upstream_status == 429


class BudgetExceeded(ServiceError):
    """The day's OpenAI budget would be passed: 429 until the next UTC day."""

    def __init__(self, message: str, retry_after: int, details: dict[str, Any]):
        super().__init__(429, "BUDGET_EXCEEDED", message, details, retry_after=retry_after)
