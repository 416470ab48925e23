"""``paths``: one function per operation of the generation, job and operations routes."""
from __future__ import annotations

from typing import Any

from app.config import Settings
from app.openapi.examples import (BATCH_REQUEST, BATCH_RESULTS, CANCELLED, HEALTH, IMAGE_VALIDATION, JOB_ACCEPTED,
                                  JOB_LIST, JOB_STATUS, NOT_READY, SUMMARY, SYNC_REQUEST, SYNC_RESULT, error_example)
from app.openapi.responses import (SIGNED, SIGNED_IN_BODY_OR_HEADER, error_response, json_body, polling_errors,
                                   response, shared)
from app.openapi.schemas import ref
from app.openapi.webhooks import delivery_paths
from database.models import JOB_STATUSES
from services.params import MAX_OFFSET

DOCUMENT_PATH = "/api/v1/openapi.json"


def generate_operation(s: Settings) -> dict[str, Any]:
    return {
        "operationId": "generateDescriptions",
        "tags": ["Generation"],
        "summary": "Describe one car now, or accept a batch job",
        "description": (
            "With one lot the photos are checked and described at once and the answer carries the "
            f"descriptions (200). With 2 to {s.max_batch_size:,} lots a batch job is recorded and its id "
            "returned (201); follow it with batch-status, batch-results or a webhook. Sign the canonical JSON "
            "of `lots` (compact, keys sorted at every level, non-ASCII escaped as \\uXXXX) and send the "
            "signature in the body field `signature` or in the X-Signature header. "
            f"Rate limits: {s.rate_limit_sync} for single lots, {s.rate_limit_batch} for batches."),
        "security": SIGNED_IN_BODY_OR_HEADER,
        "requestBody": json_body(ref("GenerateRequest"), {"single_lot": SYNC_REQUEST, "batch": BATCH_REQUEST}),
        "responses": {
            "200": response("One lot, described in every requested language.", ref("SyncResult"),
                            {"described": SYNC_RESULT}),
            "201": response("Several lots: the batch job is accepted and will run in the background.",
                            ref("JobAccepted"), {"accepted": JOB_ACCEPTED}),
            "400": shared("BadRequest"),
            "401": shared("MissingSignature"),
            "403": shared("InvalidSignature"),
            "409": error_response("A lot_id appears more than once in the request.", duplicate=error_example(
                "DUPLICATE_LOT_ID", "Each lot_id may appear only once per request", "Conflict",
                {"duplicate_lot_ids": ["B-2001"]})),
            "413": shared("PayloadTooLarge"),
            "422": error_response(
                "Photo URLs, webhook URLs or language codes that cannot be used, too many photos, or (one lot) "
                "too few usable photos.",
                invalid_image_urls=error_example("INVALID_IMAGE_URLS", "Invalid image URLs detected",
                                                 "Validation failed",
                                                 {"invalid_urls": ["ftp://photos.example.com/a.jpg"],
                                                  "invalid_count": 1}),
                unsupported_language=error_example("UNSUPPORTED_LANGUAGE", "Unsupported language codes (use ISO "
                                                   "639-1, e.g. en, ru, pt-BR)", "Validation failed",
                                                   {"unsupported_languages": ["xx"]}),
                not_enough_images=error_example("NOT_ENOUGH_IMAGES", "Only 0 of 2 images are usable; at least 1 "
                                                "required", "Validation failed",
                                                {"missing_images": ["https://photos.example.com/xc60-left.jpg"],
                                                 "usable_images": 0, "required_images": 1})),
            "429": {**error_response(
                "Too many requests in the current window (RATE_LIMITED), the request's estimated cost would take "
                "today's OpenAI spending past MAX_DAILY_COST_USD or the client's own daily budget (BUDGET_EXCEEDED, "
                "until the next UTC day), or a batch would pass the client's own cap of queued lots "
                "(CLIENT_QUEUE_FULL).",
                limited=error_example("RATE_LIMITED", "Rate limit exceeded (10 per 1 minute); retry after the time "
                                      "in Retry-After", "Too many requests"),
                budget=error_example("BUDGET_EXCEEDED", "This request's estimated cost ($250.0000) would take "
                                     "today's OpenAI spending past the daily budget of $200.00; retry after the "
                                     "next UTC day starts", "Too many requests",
                                     {"estimated_cost_usd": 250.0, "daily_budget_usd": 200.0,
                                      "spent_today_usd": 12.5, "within_budget": False}),
                client_queue=error_example("CLIENT_QUEUE_FULL", "Client auction-a has 9,000 unfinished lots queued; "
                                           "2,000 more would pass its own cap of 10,000: retry once some of its "
                                           "jobs finish", "Too many requests",
                                           {"client_id": "auction-a", "max_queued_lots": 10000, "queued_lots": 9000,
                                            "requested_lots": 2000})),
                "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}},
            "500": shared("InternalError"),
            "502": error_response("OpenAI failed to answer a single-lot request.", upstream=error_example(
                "OPENAI_API_ERROR", "OpenAI API request failed", "External service error",
                {"openai_error": "The server is overloaded", "api": "vision"})),
            "503": {**error_response("Too much work is queued to finish a new batch in time.", queue_full=error_example(
                "QUEUE_FULL", "The service has too much queued work to finish this job in time; retry later",
                "Service unavailable", {"max_queued_lots": s.max_queued_lots})),
                "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}},
            "504": error_response("OpenAI did not answer a single-lot request in time.", timeout=error_example(
                "OPENAI_TIMEOUT", "OpenAI API request timed out", "External service timeout",
                {"openai_error": "OpenAI API request timed out", "api": "vision"})),
        },
    }


def estimate_operation(s: Settings) -> dict[str, Any]:
    budget = f"${s.max_daily_cost_usd:,.2f} a UTC day" if s.max_daily_cost_usd else "off on this instance"
    return {
        "operationId": "estimateCost",
        "tags": ["Generation"],
        "summary": "What a request would cost",
        "description": (
            "Takes the body of generate-descriptions, signed the same way, validates it the same way, and answers "
            "its estimated OpenAI cost: the average cost per lot of the last days' completed work (a configured "
            "default before there is any), batch lots at the Batch API's half price. Nothing is created or paid "
            f"for. The daily budget (MAX_DAILY_COST_USD) is {budget}; generate-descriptions answers 429 "
            "BUDGET_EXCEEDED, with Retry-After until the next UTC day, for a request that would pass it."),
        "security": SIGNED_IN_BODY_OR_HEADER,
        "requestBody": json_body(ref("GenerateRequest"), {"batch": BATCH_REQUEST}),
        "responses": {
            "200": response("The estimate.", ref("Estimate"), {"estimate": {
                "total_lots": 3, "processing_mode": "batch", "estimated_cost_usd": 0.015, "per_lot_usd": 0.005,
                "basis": "configured default (no completed work yet)", "spent_today_usd": 0.0,
                "reserved_usd": 0.0, "daily_budget_usd": None, "within_budget": True, "languages": ["en", "de"],
                "models": {"vision": s.openai_model_vision, "translation": s.openai_model_translation}}}),
            "400": shared("BadRequest"),
            "401": shared("MissingSignature"),
            "403": shared("InvalidSignature"),
            "413": shared("PayloadTooLarge"),
            "422": error_response("Photo URLs, webhook URLs or language codes that cannot be used.",
                                  unsupported_language=error_example("UNSUPPORTED_LANGUAGE", "Unsupported language "
                                                                     "codes", "Validation failed",
                                                                     {"unsupported_languages": ["xx"]})),
            "429": shared("RateLimited"),
            "500": shared("InternalError"),
        },
    }


def image_validation_operation() -> dict[str, Any]:
    return {
        "operationId": "testImageValidation",
        "tags": ["Generation"],
        "summary": "Check photo URLs the way a request would",
        "description": "Fetches each URL through the outbound guard and reports which ones are usable photos. "
                       "X-Signature signs the raw request body. Held to the single-lot rate limit "
                       "(RATE_LIMIT_SYNC), counted apart from generate-descriptions.",
        "security": SIGNED,
        "requestBody": json_body(ref("ImageValidationRequest"), {"two_urls": {"urls": [
            "https://photos.example.com/xc60-left.jpg", "https://photos.example.com/gone.jpg"]}}),
        "responses": {
            "200": response("One check per URL, in request order.", ref("ImageValidationResult"),
                            {"checked": IMAGE_VALIDATION}),
            "400": shared("BadRequest"),
            "401": shared("MissingSignature"),
            "403": shared("InvalidSignature"),
            "413": shared("PayloadTooLarge"),
            "422": error_response("A URL is not an http(s) URL.", invalid=error_example(
                "INVALID_IMAGE_URLS", "Invalid image URLs detected", "Validation failed",
                {"invalid_urls": ["ftp://photos.example.com/a.jpg"]})),
            "429": shared("RateLimited"),
            "500": shared("InternalError"),
        },
    }


def job_operation(operation_id: str, summary: str, description: str, responses: dict[str, Any],
                  method_security: list | None = None) -> dict[str, Any]:
    return {
        "operationId": operation_id, "tags": ["Jobs"], "summary": summary,
        "description": description + " X-Signature signs the job id.",
        "security": method_security or SIGNED,
        "parameters": [{"$ref": "#/components/parameters/JobId"}],
        "responses": {**responses, **polling_errors()},
    }


def not_ready() -> dict[str, Any]:
    return response("The job is still running; progress so far.", ref("JobNotReady"), {"processing": NOT_READY})


def status_operation() -> dict[str, Any]:
    return job_operation("getBatchStatus", "Progress of a batch job", "Counters, stage and OpenAI batch ids.", {
        "200": response("The job as it stands.", ref("JobStatus"), {"processing": JOB_STATUS})})


def results_operation() -> dict[str, Any]:
    return job_operation("getBatchResults", "Results of a completed job",
                         "Every lot in request order with its descriptions; large jobs are streamed.", {
                             "200": response("The job is completed.", ref("BatchResults"), {"completed": BATCH_RESULTS}),
                             "202": not_ready(),
                             "409": response("The job failed or was cancelled; finished lots are in the download.",
                                             ref("JobEnded"), {"cancelled": error_example(
                                                 "JOB_CANCELLED", "Job cancelled: Cancelled by the client. Lots "
                                                 "finished before that can be read from the download endpoint.",
                                                 "Job cancelled", {"processing_summary": SUMMARY},
                                                 status="cancelled", error_message="Cancelled by the client")}),
                         })


def download_operation() -> dict[str, Any]:
    ok = response("The results document as an attachment (also for failed or cancelled jobs).",
                  ref("BatchResults"), {"completed": BATCH_RESULTS},
                  headers={"Content-Disposition": {"$ref": "#/components/headers/Content-Disposition"}})
    return job_operation("downloadBatchResults", "Results as a file",
                         "The same document as batch-results, sent as `batch_results_{job_id}.json`.",
                         {"200": ok, "202": not_ready()})


def cancel_operation() -> dict[str, Any]:
    return job_operation("cancelBatchJob", "Cancel a running job",
                         "Stops a pending, processing or translating job; its webhooks are then sent.", {
                             "200": response("The job is cancelled.", ref("CancelResult"), {"cancelled": CANCELLED}),
                             "400": response("The job has already ended.", ref("JobNotCancellable"), {
                                 "completed": error_example(
                                     "JOB_NOT_CANCELLABLE", "Only pending, processing, or translating jobs can be "
                                     "cancelled. Current status: completed", "Job cannot be cancelled",
                                     status="completed")}),
                         })


def list_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return [
        query("status", {"type": "string", "enum": list(JOB_STATUSES)}, "Only jobs in this status."),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Page size."),
        query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}, "Jobs to skip."),
        query("created_after", {"type": "string", "format": "date-time"}, "Only jobs created at or after this time."),
        query("created_before", {"type": "string", "format": "date-time"},
              "Only jobs created at or before this time."),
    ]


def list_operation() -> dict[str, Any]:
    return {
        "operationId": "listBatchJobs", "tags": ["Jobs"], "summary": "List batch jobs, newest first",
        "description": "X-Signature signs the raw query string exactly as sent, without the `?` "
                       "(the empty string when there is none).",
        "security": SIGNED,
        "parameters": list_parameters(),
        "responses": {
            "200": response("One page of jobs.", ref("JobList"), {"page": JOB_LIST}),
            "400": shared("BadRequest"),
            **polling_errors(not_found=False),
        },
    }


def operations_paths() -> dict[str, Any]:
    return {
        "/health": {"get": {
            "operationId": "getHealth", "tags": ["Operations"], "summary": "Liveness and readiness",
            "description": "Database connection, this process's background worker and the OpenAI mode.",
            "responses": {
                "200": response("Healthy.", ref("Health"), {"healthy": HEALTH}),
                "503": response("The database is unreachable or the worker has stopped.", ref("Health"), {
                    "worker_stopped": {**HEALTH, "status": "unhealthy", "background_worker": "stopped",
                                       "worker": {"status": "stopped", "live_workers": 3}}}),
            },
        }},
        "/metrics": {"get": {
            "operationId": "getMetrics", "tags": ["Operations"], "summary": "Prometheus metrics",
            "description": "Request, job, webhook, OpenAI and database counters in the Prometheus text format.",
            "responses": {"200": {"description": "Prometheus exposition text.", "content": {
                "text/plain": {"schema": {"type": "string"},
                               "example": "# TYPE batch_jobs_total counter\nbatch_jobs_total{status=\"pending\"} 3.0\n"}}}},
        }},
        DOCUMENT_PATH: {"get": {
            "operationId": "getOpenApiDocument", "tags": ["Operations"], "summary": "This document",
            "description": "The OpenAPI 3.1 description of this instance, with its configured limits.",
            "responses": {"200": {"description": "OpenAPI 3.1 document.", "content": {
                "application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}}}},
        }},
    }


def all_paths(s: Settings) -> dict[str, Any]:
    return {
        "/api/v1/generate-descriptions": {"post": generate_operation(s)},
        "/api/v1/test-image-validation": {"post": image_validation_operation()},
        "/api/v1/estimate": {"post": estimate_operation(s)},
        "/api/v1/batch-status/{job_id}": {"get": status_operation()},
        "/api/v1/batch-results/{job_id}": {"get": results_operation()},
        "/api/v1/batch-results/{job_id}/download": {"get": download_operation()},
        "/api/v1/batch-jobs": {"get": list_operation()},
        "/api/v1/batch-jobs/{job_id}/cancel": {"post": cancel_operation()},
        **delivery_paths(),
        **operations_paths(),
    }
