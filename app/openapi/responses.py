"""Shared building blocks: responses, headers, parameters and the signature security scheme."""
from __future__ import annotations

from typing import Any

from app.config import Settings
from app.openapi.examples import EXAMPLE_JOB, error_example
from app.openapi.schemas import ref

# either scheme signs any signed operation: GS2 (every client) or the reference's X-Signature (the implicit
# client of SHARED_KEY and clients set to accept it)
SIGNED = [{"gs2": []}, {"signature": []}]
# generate-descriptions and estimate: the reference's signature may travel in the body field instead
SIGNED_IN_BODY_OR_HEADER = [{"gs2": []}, {"signature": []}, {}]


def json_content(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema, "examples": {name: {"value": value}
                                                                 for name, value in examples.items()}}}


def response(description: str, schema: dict[str, Any], examples: dict[str, Any],
             headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": json_content(schema, examples)}
    if headers:
        answer["headers"] = headers
    return answer


def error_response(description: str, **examples: dict[str, Any]) -> dict[str, Any]:
    return response(description, ref("Error"), examples)


def shared_responses(s: Settings) -> dict[str, Any]:
    limit = s.max_content_length
    return {
        "BadRequest": error_response(
            "The body is not a JSON object, or a field or query parameter is malformed.",
            invalid_json=error_example("INVALID_JSON", "Request body must be valid JSON", "Invalid request format"),
            invalid_field=error_example("VALIDATION_ERROR", "lots[0].images must be a non-empty array of "
                                        "{\"url\": ...} objects", "Invalid request", {"field": "lots[0].images"})),
        "MissingSignature": error_response(
            "No signature was sent.",
            missing=error_example("MISSING_SIGNATURE", "Request signature is required (an Authorization: "
                                  "GS2-HMAC-SHA256 header, or X-Signature)", "Authentication required")),
        "InvalidSignature": error_response(
            "The signature does not match the signed request under any current key, its GS2 timestamp is "
            "outside the 5-minute window, its nonce was used before, or its client is disabled.",
            invalid=error_example("INVALID_SIGNATURE", "Invalid HMAC signature", "Authentication failed"),
            expired=error_example("SIGNATURE_EXPIRED", "The signature's timestamp is more than 300 seconds from "
                                  "the server's clock; sign again", "Authentication failed",
                                  {"server_time": 1796040000, "timestamp": 1796039000}),
            replayed=error_example("SIGNATURE_REPLAYED", "This signature's nonce was used before: every request "
                                   "needs a new nonce and a new signature", "Authentication failed"),
            disabled=error_example("CLIENT_DISABLED", "Client auction-a is disabled", "Authentication failed",
                                   {"client_id": "auction-a"})),
        "JobNotFound": error_response(
            "No job has this id.",
            not_found=error_example("JOB_NOT_FOUND", f"Job {EXAMPLE_JOB} not found", "Not found",
                                    {"job_id": EXAMPLE_JOB})),
        "PayloadTooLarge": error_response(
            f"The body is larger than {limit:,} bytes, or a batch has more than {s.max_batch_size:,} lots.",
            too_many_lots=error_example("BATCH_SIZE_EXCEEDED",
                                        f"Batch size exceeds maximum limit of {s.max_batch_size:,} lots",
                                        "Request too large",
                                        {"provided_lots": s.max_batch_size + 1, "max_allowed": s.max_batch_size}),
            body_too_large=error_example("PAYLOAD_TOO_LARGE", f"Request body exceeds the limit of {limit:,} bytes",
                                         "Request too large", {"max_bytes": limit})),
        "RateLimited": {
            **error_response("Too many requests from this client in the current window, or too many without a "
                             "valid signature from this address (details.counted_by: address).",
                             limited=error_example("RATE_LIMITED", "Rate limit exceeded (10 per 1 minute); retry "
                                                   "after the time in Retry-After", "Too many requests"),
                             address=error_example("RATE_LIMITED", "Too many requests without a valid signature from "
                                                   "this address (1000 per 1 minute); retry after the time in "
                                                   "Retry-After", "Too many requests", {"counted_by": "address"})),
            "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
        },
        "InternalError": error_response(
            "An unexpected failure; it is logged with the request id.",
            internal=error_example("INTERNAL_ERROR", "The service failed to handle this request; it has been logged",
                                   "Internal server error")),
    }


GS2_DESCRIPTION = (
    "The replay-safe scheme every client signs with: `Authorization: GS2-HMAC-SHA256 "
    "Credential=<client id>/<key id>, Timestamp=<unix seconds>, Nonce=<16-128 of A-Z a-z 0-9 . _ ~ ->, "
    "Signature=<hex>`. The signature is the hex HMAC-SHA256, under the signing key HMAC-SHA256(secret, "
    "\"GS2-HMAC-SHA256 signing key\"), of eight lines joined by \\n: `GS2-HMAC-SHA256`, `<client id>/<key id>`, "
    "the timestamp, the nonce, the method, the path as sent, the raw query string as sent (without `?`) and the "
    "hex SHA-256 of the raw body. Refused with 403 `SIGNATURE_EXPIRED` more than 300 s from the server's clock, "
    "403 `SIGNATURE_REPLAYED` when the nonce was used before, 403 `INVALID_SIGNATURE` when wrong or the key is "
    "unknown or expired, 403 `CLIENT_DISABLED` for a disabled client. The implicit client of SHARED_KEY signs "
    "as `default` with the key id `sk_` + the first 16 hex digits of SHA-256(\"genservice key id\\n\" + key).")


def security_schemes() -> dict[str, Any]:
    return {"gs2": {"type": "http", "scheme": "GS2-HMAC-SHA256", "description": GS2_DESCRIPTION},
            "signature": {
        "type": "apiKey", "in": "header", "name": "X-Signature",
        "description": "`sha256=` followed by the hex HMAC-SHA256 of the signed message under SHARED_KEY "
                       "(the prefix is optional). What is signed depends on the operation: the canonical JSON "
                       "of `lots` for generate-descriptions, the job id for job routes, the delivery id for a "
                       "redelivery, the raw query string "
                       "for the job list and the raw body for image validation. A missing signature is "
                       "answered with 401, a wrong one with 403. Accepted from the implicit client of SHARED_KEY "
                       "(unless REFERENCE_SIGNATURES=false) and from clients added with --reference-scheme.",
    }}


def headers() -> dict[str, Any]:
    return {
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
        "Content-Disposition": {"description": "`attachment; filename=\"batch_results_{job_id}.json\"`",
                                "schema": {"type": "string"}},
    }


def parameters() -> dict[str, Any]:
    return {"JobId": {
        "name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "The id returned when the job was accepted; also the message to sign in X-Signature.",
        "example": EXAMPLE_JOB,
    }}


def shared(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def polling_errors(*, not_found: bool = True) -> dict[str, Any]:
    errors = {"401": shared("MissingSignature"), "403": shared("InvalidSignature")}
    if not_found:
        errors["404"] = shared("JobNotFound")
    errors.update({"429": shared("RateLimited"), "500": shared("InternalError")})
    return errors


def json_body(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": json_content(schema, examples)}
