"""Every error leaves as JSON ``{error, message, code, details?}``; never an HTML page or a trace."""
from __future__ import annotations

import json
import logging

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.errors import TITLES, ServiceError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "BAD_REQUEST", 401: "MISSING_SIGNATURE", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "UNPROCESSABLE_ENTITY",
    429: "RATE_LIMITED", 500: "INTERNAL_ERROR", 503: "SERVICE_UNAVAILABLE",
}


def error_response(status: int, code: str, message: str, details: dict | None = None, error: str | None = None,
                   headers: dict | None = None, extra: dict | None = None) -> Response:
    body = {"error": error or TITLES.get(status, "Error"), **(extra or {}), "message": message, "code": code}
    if details is not None:
        body["details"] = details
    try:
        response = jsonify(body)
    except UnicodeEncodeError:
        # a value echoed from the request holds an unpaired surrogate, which has no UTF-8 form: escaped as
        # JSON allows (\udc00), the answer stays JSON instead of becoming a 500
        response = Response(json.dumps(body) + "\n", mimetype="application/json")
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def service_error_response(exc: ServiceError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.error, headers, exc.extra)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return error_response(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds the limit of {limit:,} bytes",
                              {"max_bytes": limit})
    message = exc.description or TITLES.get(status, "Error")
    if status == 429:
        message = f"Rate limit exceeded ({message}); retry after the time in Retry-After"
    if status == 404:
        message = f"No such resource: {request.path}"
    headers = {}
    if status == 405 and exc.get_response().headers.get("Allow"):
        headers["Allow"] = exc.get_response().headers["Allow"]
    return error_response(status, HTTP_CODES.get(status, "HTTP_ERROR"), message, headers=headers)


def _database_unavailable(exc: OperationalError) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
    return error_response(503, "SERVICE_UNAVAILABLE", "The database is unreachable; retry shortly",
                          headers={"Retry-After": "5"})


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "INTERNAL_ERROR", "The service failed to handle this request; it has been logged")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServiceError, service_error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
