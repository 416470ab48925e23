"""The ``components.schemas`` of the document: every request and response body, declared once.

Response schemas list what a client may rely on and allow more properties, because the
service answers with supersets of the published shapes. Limits come from Settings.
"""
from __future__ import annotations

from typing import Any

from app.config import Settings
from app.schemas import MAX_ADDITIONAL_INFO, MAX_LOT_ID, MAX_URL
from database.models import JOB_FINAL, JOB_STATUSES

SIGNATURE_PATTERN = "^(sha256=)?[0-9a-fA-F]{64}$"
EXAMPLE_SIGNATURE = "sha256=" + "3f" * 32


# ---- small schema helpers -------------------------------------------------------------------

def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def obj(properties: dict[str, Any], required: tuple[str, ...] | list[str] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


COUNT = {"type": "integer", "minimum": 0}
TIMESTAMP = {"type": "string", "format": "date-time"}
MAYBE_TIMESTAMP = nullable("string", format="date-time")
STRING = {"type": "string"}


# ---- components: schemas ----------------------------------------------------------------------

def request_schemas(s: Settings) -> dict[str, Any]:
    return {
        "Signature": {
            "type": "string", "pattern": SIGNATURE_PATTERN,
            "description": "Hex HMAC-SHA256 of the signed message, with or without the `sha256=` prefix.",
            "examples": [EXAMPLE_SIGNATURE, "3f" * 32],
        },
        "LanguageCode": {
            "type": "string", "pattern": "^[A-Za-z]{2}([-_]([A-Za-z]{2}|[0-9]{3}))?$",
            "description": "ISO 639-1 code, optionally with a region (`pt-BR`). Unknown codes are answered with 422.",
            "examples": ["en", "ru", "pt-BR"],
        },
        "ImageRef": {
            "anyOf": [
                obj({"url": {"type": "string", "maxLength": MAX_URL}}, ["url"]),
                {"type": "string", "maxLength": MAX_URL, "description": "The URL alone (accepted for older clients)."},
            ],
            "description": "An http(s) photo URL; anything else is answered with 422 INVALID_IMAGE_URLS.",
        },
        "LotInput": obj({
            "lot_id": {"type": "string", "minLength": 1, "maxLength": MAX_LOT_ID, "pattern": "\\S",
                       "description": "Unique within the request."},
            "additional_info": nullable("string", maxLength=MAX_ADDITIONAL_INFO,
                                        description="Free text about the car, used as context for the photos."),
            "images": array(ref("ImageRef"), minItems=1, maxItems=max(s.max_images_per_lot, s.max_sync_images),
                            description=f"At most {s.max_sync_images} photos for a single lot, "
                                        f"{s.max_images_per_lot} per lot in a batch."),
            "webhook": nullable("string", maxLength=MAX_URL,
                                description="Batch only: http(s) URL that receives the signed result "
                                            "notification for this lot."),
        }, ["lot_id", "images"]),
        "GenerateRequest": obj({
            "signature": {**ref("Signature"), "description": "HMAC of the canonical JSON of `lots` (see the "
                                                               "security scheme); may be sent as X-Signature instead."},
            "version": {"type": "string", "maxLength": 32, "default": "1.0.0",
                        "description": "Echoed back in the answer and the results."},
            "languages": nullable("array", items=ref("LanguageCode"), minItems=1, maxItems=s.max_languages,
                                  default=["en"], description=f"Languages of the descriptions, at most "
                                                              f"{s.max_languages}; English when omitted."),
            "lots": array(ref("LotInput"), minItems=1, maxItems=s.max_batch_size,
                          description=f"One lot is answered at once; 2 to {s.max_batch_size:,} become a batch job."),
        }, ["lots"]),
        "ImageValidationRequest": obj({
            "urls": array({"type": "string", "maxLength": MAX_URL}, minItems=1, maxItems=50),
        }, ["urls"]),
    }


def result_schemas() -> dict[str, Any]:
    return {
        "Description": obj({
            "language": STRING,
            "damages": {"type": "string", "contentMediaType": "text/html",
                        "description": "HTML limited to p, ul, ol, li, strong, em, b, i, br, h3, h4; no attributes."},
        }, ["language", "damages"]),
        "LotResult": obj({
            "lot_id": STRING,
            "status": {"type": "string", "enum": ["completed", "failed", "pending"]},
            "processed_at": MAYBE_TIMESTAMP,
            "processed_images": COUNT,
            "descriptions": array(ref("Description")),
            "missing_images": array(STRING, description="Photo URLs that could not be used."),
            "error": {"type": "string", "description": "Why the lot failed (failed lots only)."},
            "usage": ref("LotUsage"),
        }, ["lot_id", "status", "processed_images", "descriptions", "missing_images"]),
        "LotUsage": obj({
            "input_tokens": COUNT, "cached_input_tokens": COUNT, "output_tokens": COUNT, "reasoning_tokens": COUNT,
            "cost_usd": {"type": "number", "minimum": 0,
                         "description": "US dollars, priced from the model registry (Batch API lines at half price)."},
        }, ["input_tokens", "output_tokens", "cost_usd"]),
        "Estimate": obj({
            "total_lots": COUNT, "processing_mode": {"type": "string", "enum": ["synchronous", "batch"]},
            "estimated_cost_usd": {"type": "number", "minimum": 0}, "per_lot_usd": {"type": "number", "minimum": 0},
            "basis": STRING, "spent_today_usd": {"type": "number", "minimum": 0},
            "reserved_usd": {"type": "number", "minimum": 0,
                             "description": "What accepted, unfinished jobs are still expected to spend."},
            "daily_budget_usd": nullable("number"), "remaining_today_usd": {"type": "number", "minimum": 0},
            "budget_scope": {"type": "string", "enum": ["client", "deployment"],
                             "description": "Whose daily budget the figures are: the caller's own, or the "
                                            "deployment's (every client's spending); the one with the least left."},
            "within_budget": {"type": "boolean"}, "languages": array(STRING),
            "models": obj({"vision": STRING, "translation": STRING}),
        }, ["total_lots", "processing_mode", "estimated_cost_usd", "within_budget"]),
        "SyncResult": obj({
            "version": STRING,
            "processing_mode": {"const": "synchronous"},
            "total_lots": {"const": 1},
            "processed_at": TIMESTAMP,
            "lots": array(ref("LotResult"), minItems=1, maxItems=1),
            "cost_usd": {"type": "number", "minimum": 0, "description": "What this answer cost, in US dollars."},
        }, ["version", "processing_mode", "total_lots", "processed_at", "lots"]),
        "TokenUsage": obj({"input_tokens": COUNT, "output_tokens": COUNT, "total_tokens": COUNT,
                           "cached_input_tokens": COUNT, "reasoning_tokens": COUNT},
                          ["input_tokens", "output_tokens", "total_tokens"]),
        "ProcessingSummary": obj({
            "total_lots": COUNT, "processed_lots": COUNT, "failed_lots": COUNT, "total_images_processed": COUNT,
            "total_processing_time": nullable("string", examples=["45 minutes"]),
            "token_usage": ref("TokenUsage"),
            "cost_usd": {"type": "number", "minimum": 0, "description": "What the job cost, in US dollars."},
        }, ["total_lots", "processed_lots", "failed_lots", "total_processing_time"]),
        "BatchResults": obj({
            "job_id": STRING,
            "status": {"type": "string", "enum": list(JOB_FINAL)},
            "completed_at": MAYBE_TIMESTAMP,
            "processing_summary": ref("ProcessingSummary"),
            "results": obj({
                "version": STRING, "total_lots": COUNT, "processed_lots": COUNT, "failed_lots": COUNT,
                "lots": array(ref("LotResult")),
            }, ["version", "lots"]),
        }, ["job_id", "status", "completed_at", "processing_summary", "results"]),
    }


def job_schemas() -> dict[str, Any]:
    job_status = {"type": "string", "enum": list(JOB_STATUSES)}
    languages = array(STRING)
    return {
        "JobStatusName": job_status,
        "JobAccepted": obj({
            "job_id": {"type": "string", "format": "uuid"},
            "status": {"const": "accepted"},
            "created_at": TIMESTAMP,
            "total_lots": COUNT,
            "languages": languages,
            "estimated_completion": MAYBE_TIMESTAMP,
            "processing_mode": {"const": "batch"},
            "webhook_configured": {"type": "boolean"},
        }, ["job_id", "status", "created_at", "total_lots", "languages", "estimated_completion",
            "processing_mode", "webhook_configured"]),
        "Progress": obj({
            "total_lots": COUNT, "processed_lots": COUNT, "failed_lots": COUNT,
            "completion_percentage": {"type": "number", "minimum": 0, "maximum": 100},
            "estimated_completion": MAYBE_TIMESTAMP,
        }, ["total_lots", "processed_lots", "failed_lots", "completion_percentage", "estimated_completion"]),
        "ProcessingDetails": obj({
            "openai_vision_batch_id": nullable("string"),
            "openai_translation_batch_id": nullable("string"),
            "current_stage": {"type": "string", "description": "queued, image_validation, vision_analysis, "
                                                               "translation, finalizing, or the final status."},
            "strategy": {"type": "string", "enum": ["openai_batch", "direct"]},
            "total_images": COUNT,
            "total_images_processed": COUNT,
            "images_checked_lots": {"type": "integer", "minimum": 0,
                                    "description": "Lots whose photos have been checked (the image_validation "
                                                   "stage's progress, out of progress.total_lots)."},
            "token_usage": ref("TokenUsage"),
        }, ["openai_vision_batch_id", "openai_translation_batch_id", "current_stage"]),
        "JobStatus": obj({
            "job_id": STRING,
            "status": ref("JobStatusName"),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "completed_at": MAYBE_TIMESTAMP,
            "cancelled_at": MAYBE_TIMESTAMP,
            "progress": ref("Progress"),
            "languages": languages,
            "processing_details": ref("ProcessingDetails"),
            "error_message": nullable("string"),
            "webhook_configured": {"type": "boolean"},
            "openai_vision_batch_id": {**nullable("string"), "description": "Also here for v1 clients."},
            "openai_translation_batch_id": nullable("string"),
            "token_usage": ref("TokenUsage"),
        }, ["job_id", "status", "created_at", "updated_at", "progress", "languages", "processing_details",
            "error_message", "webhook_configured"]),
        "JobListItem": obj({
            "id": STRING, "job_id": STRING, "status": ref("JobStatusName"),
            "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
            "total_lots": COUNT, "processed_lots": COUNT, "failed_lots": COUNT,
            "languages": languages,
            "progress": obj({"completion_percentage": {"type": "number", "minimum": 0, "maximum": 100},
                             "estimated_completion": MAYBE_TIMESTAMP},
                            ["completion_percentage", "estimated_completion"]),
            "webhook_configured": {"type": "boolean"},
            "current_stage": STRING,
            "token_usage": ref("TokenUsage"),
        }, ["id", "status", "created_at", "updated_at", "total_lots", "processed_lots", "failed_lots", "languages",
            "progress", "webhook_configured"]),
        "JobList": obj({
            "jobs": array(ref("JobListItem")),
            "pagination": obj({"limit": COUNT, "offset": COUNT, "total": COUNT, "has_more": {"type": "boolean"}},
                              ["limit", "offset", "total", "has_more"]),
        }, ["jobs", "pagination"]),
        "CancelResult": obj({
            "job_id": STRING, "status": {"const": "cancelled"}, "cancelled_at": TIMESTAMP, "message": STRING,
        }, ["job_id", "status", "cancelled_at", "message"]),
    }


def error_schemas() -> dict[str, Any]:
    return {
        "Error": obj({
            "error": {"type": "string", "description": "Short title of the failure."},
            "message": {"type": "string", "description": "What went wrong, for people."},
            "code": {"type": "string", "description": "Stable machine code, e.g. INVALID_SIGNATURE.",
                     "examples": ["INVALID_JSON", "MISSING_SIGNATURE", "INVALID_SIGNATURE", "JOB_NOT_FOUND"]},
            "details": {"type": "object", "description": "Structured context; present on some errors."},
        }, ["error", "message", "code"]),
        "JobNotReady": {"allOf": [ref("Error"), obj({
            "status": ref("JobStatusName"),
            "progress": obj({"completion_percentage": {"type": "number", "minimum": 0, "maximum": 100},
                             "estimated_completion": MAYBE_TIMESTAMP,
                             "processed_lots": COUNT, "failed_lots": COUNT, "total_lots": COUNT},
                            ["completion_percentage", "estimated_completion"]),
        }, ["status", "progress"])]},
        "JobEnded": {"allOf": [ref("Error"), obj({
            "status": {"type": "string", "enum": ["failed", "cancelled"]},
            "error_message": nullable("string"),
        }, ["status"])]},
        "JobNotCancellable": {"allOf": [ref("Error"), obj({"status": ref("JobStatusName")}, ["status"])]},
        "DeliveryPending": {"allOf": [ref("Error"), obj({"status": {"const": "pending"}}, ["status"])]},
    }


def operations_schemas() -> dict[str, Any]:
    return {
        "ImageCheck": obj({
            "url": STRING, "ok": {"type": "boolean"}, "reason": nullable("string"),
            "status_code": nullable("integer"), "content_type": nullable("string"), "size": nullable("integer"),
        }, ["url", "ok", "reason", "status_code", "content_type", "size"]),
        "ImageValidationResult": obj({
            "valid_urls": array(STRING), "unreachable_urls": array(STRING),
            "threshold_met": {"type": "boolean"}, "required_valid": COUNT, "checks": array(ref("ImageCheck")),
        }, ["valid_urls", "unreachable_urls", "threshold_met", "required_valid", "checks"]),
        "Health": obj({
            "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
            "service": STRING,
            "timestamp": TIMESTAMP,
            "version": STRING,
            "database": {"type": "string", "enum": ["connected", "disconnected"]},
            "database_engine": STRING,
            "background_worker": {"type": "string", "enum": ["running", "stopped", "disabled"]},
            "worker": obj({"status": STRING, "last_heartbeat": TIMESTAMP, "live_workers": nullable("integer")},
                          ["status"]),
            "openai": obj({"mode": STRING, "base_url": nullable("string")}, ["mode"]),
        }, ["status", "timestamp", "version", "database", "background_worker"]),
        "WebhookPayload": obj({
            "event": {"type": "string", "enum": ["batch_job_completed", "batch_job_failed", "batch_job_cancelled"]},
            "job_id": STRING,
            "status": {"type": "string", "enum": list(JOB_FINAL)},
            "completed_at": MAYBE_TIMESTAMP,
            "processing_summary": ref("ProcessingSummary"),
            "lots": array(ref("LotResult")),
            "error_message": STRING,
            "chunk": obj({"index": COUNT, "count": {"type": "integer", "minimum": 1}}, ["index", "count"]),
        }, ["event", "job_id", "status", "completed_at", "processing_summary", "lots"]),
    }


def delivery_schemas() -> dict[str, Any]:
    attempt = obj({
        "attempt": {"type": "integer", "minimum": 1}, "started_at": TIMESTAMP, "duration_ms": nullable("integer"),
        "status_code": nullable("integer"), "error": nullable("string"), "response_excerpt": nullable("string"),
    }, ["attempt", "started_at", "status_code", "error"])
    return {
        "WebhookAttempt": attempt,
        "WebhookDeliveryList": obj({
            "job_id": STRING,
            "status": ref("JobStatusName"),
            "deliveries": array(ref("WebhookDelivery")),
            "pagination": obj({"limit": COUNT, "offset": COUNT, "total": COUNT, "has_more": {"type": "boolean"}},
                              ["limit", "offset", "total", "has_more"]),
        }, ["job_id", "status", "deliveries", "pagination"]),
        "WebhookDelivery": obj({
            "id": {"type": "integer"},
            "batch_job_id": STRING,
            "webhook_url": STRING,
            "event": STRING,
            "webhook_id": {"type": "string", "description": "The webhook-id header value; kept across retries "
                                                            "and redeliveries."},
            "chunk": obj({"index": COUNT, "count": {"type": "integer", "minimum": 1}}, ["index", "count"]),
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempt_count": COUNT,
            "max_attempts": COUNT,
            "created_at": TIMESTAMP,
            "next_attempt_at": MAYBE_TIMESTAMP,
            "last_attempt_at": MAYBE_TIMESTAMP,
            "delivered_at": MAYBE_TIMESTAMP,
            "last_status_code": nullable("integer"),
            "error_message": nullable("string"),
            "attempts": array(ref("WebhookAttempt")),
        }, ["id", "batch_job_id", "webhook_url", "event", "status", "attempt_count", "max_attempts", "created_at",
            "next_attempt_at", "last_attempt_at", "delivered_at", "last_status_code", "error_message"]),
    }


def all_schemas(s: Settings) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for part in (request_schemas(s), result_schemas(), job_schemas(), error_schemas(), operations_schemas(),
                 delivery_schemas()):
        schemas.update(part)
    return schemas
