"""ApiError: an HTTP error in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""
from __future__ import annotations

from typing import Any

_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The requested resource does not exist.", "invalid_request_error", None),
    408: ("Request timed out.", "timeout", None),
    409: ("The request conflicts with the current state of the resource.", "invalid_request_error", None),
    429: ("Rate limit reached for requests in organization org-sandbox on requests per min (RPM): "
          "Limit 500, Used 500, Requested 1. Please try again in 0s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class ApiError(Exception):
    """Raised anywhere in the sandbox; the HTTP layer turns it into the error response."""

    def __init__(self, status: int, message: str | None = None, *, type: str | None = None,
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        default_message, default_type, default_code = _DEFAULTS.get(status, _DEFAULTS[500 if status >= 500 else 400])
        self.status = status
        self.message = message or default_message
        self.type = type or default_type
        self.param = param
        self.code = code if code is not None else default_code
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def missing_parameter(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_type(param: str, expected: str) -> ApiError:
    return ApiError(400, f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{object_id}'.")
