"""Example bodies shown in the document and on the docs page (values invented for illustration)."""
from __future__ import annotations

from typing import Any

from app.config import VERSION
from app.openapi.schemas import EXAMPLE_SIGNATURE

EXAMPLE_JOB = "550e8400-e29b-41d4-a716-446655440000"
EXAMPLE_TIME = "2025-08-05T07:30:00Z"


def _lot_example(lot_id: str, info: str, photos: list[str], webhook: str | None = None) -> dict[str, Any]:
    lot: dict[str, Any] = {"lot_id": lot_id, "additional_info": info,
                           "images": [{"url": f"https://photos.example.com/{name}.jpg"} for name in photos]}
    if webhook:
        lot["webhook"] = webhook
    return lot


SYNC_REQUEST = {
    "signature": EXAMPLE_SIGNATURE, "version": "1.0.0", "languages": ["en", "de"],
    "lots": [_lot_example("A-1001", "2018 Volvo XC60, left side scraped in a car park", ["xc60-left", "xc60-rear"])],
}
BATCH_REQUEST = {
    "signature": "3f" * 32, "version": "1.0.0", "languages": ["en", "es"],
    "lots": [
        _lot_example("B-2001", "2020 Kia Ceed, hail", ["ceed-roof", "ceed-hood"], "https://hooks.example.com/genservice"),
        _lot_example("B-2002", "2016 Ford Focus, rear impact", ["focus-rear"], "https://hooks.example.com/genservice"),
    ],
}
DESCRIPTIONS = [
    {"language": "en", "damages": "<p>Scrapes along the left doors and a cracked rear bumper corner.</p>"},
    {"language": "de", "damages": "<p>Kratzer an den linken Türen und eine gerissene Ecke der hinteren Stoßstange.</p>"},
]
SYNC_RESULT = {
    "version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1, "processed_at": "2025-08-05T07:30:12Z",
    "lots": [{"lot_id": "A-1001", "status": "completed", "processed_images": 2, "descriptions": DESCRIPTIONS,
              "missing_images": []}],
}
TOKENS = {"input_tokens": 18250, "output_tokens": 4120, "total_tokens": 22370}
JOB_ACCEPTED = {
    "job_id": EXAMPLE_JOB, "status": "accepted", "created_at": EXAMPLE_TIME, "total_lots": 2,
    "languages": ["en", "es"], "estimated_completion": "2025-08-05T08:30:00Z", "processing_mode": "batch",
    "webhook_configured": True,
}
PROGRESS = {"total_lots": 2, "processed_lots": 1, "failed_lots": 0, "completion_percentage": 25.0,
            "estimated_completion": "2025-08-05T08:10:00Z"}
JOB_STATUS = {
    "job_id": EXAMPLE_JOB, "status": "processing", "created_at": EXAMPLE_TIME, "updated_at": "2025-08-05T07:41:00Z",
    "completed_at": None, "cancelled_at": None, "progress": PROGRESS, "languages": ["en", "es"],
    "processing_details": {"openai_vision_batch_id": "batch_6a1f0c", "openai_translation_batch_id": None,
                           "current_stage": "vision_analysis", "strategy": "openai_batch", "total_images": 3,
                           "total_images_processed": 2, "token_usage": TOKENS},
    "error_message": None, "webhook_configured": True, "openai_vision_batch_id": "batch_6a1f0c",
    "openai_translation_batch_id": None, "token_usage": TOKENS,
}
SUMMARY = {"total_lots": 2, "processed_lots": 1, "failed_lots": 1, "total_images_processed": 2,
           "total_processing_time": "38 minutes", "token_usage": TOKENS}
FINISHED_LOTS = [
    {"lot_id": "B-2001", "status": "completed", "processed_at": "2025-08-05T08:05:00Z", "processed_images": 2,
     "descriptions": [{"language": "en", "damages": "<p>Dozens of small hail dents across the roof and hood.</p>"},
                      {"language": "es", "damages": "<p>Decenas de pequeñas abolladuras de granizo en el techo y "
                                                    "el capó.</p>"}],
     "missing_images": []},
    {"lot_id": "B-2002", "status": "failed", "processed_at": "2025-08-05T07:31:00Z", "processed_images": 0,
     "descriptions": [], "missing_images": ["https://photos.example.com/focus-rear.jpg"],
     "error": "Only 0 of 1 images are usable; at least 1 required"},
]
BATCH_RESULTS = {
    "job_id": EXAMPLE_JOB, "status": "completed", "completed_at": "2025-08-05T08:08:00Z",
    "processing_summary": SUMMARY,
    "results": {"version": "1.0.0", "total_lots": 2, "processed_lots": 1, "failed_lots": 1, "lots": FINISHED_LOTS},
}
NOT_READY = {
    "error": "Job not completed", "status": "processing",
    "progress": {"completion_percentage": 25.0, "estimated_completion": "2025-08-05T08:10:00Z",
                 "processed_lots": 1, "failed_lots": 0, "total_lots": 2},
    "message": "Job is currently processing. Results will be available when status is 'completed'.",
    "code": "JOB_NOT_COMPLETED",
}
JOB_LIST = {
    "jobs": [{"id": EXAMPLE_JOB, "job_id": EXAMPLE_JOB, "status": "processing", "created_at": EXAMPLE_TIME,
              "updated_at": "2025-08-05T07:41:00Z", "total_lots": 2, "processed_lots": 1, "failed_lots": 0,
              "languages": ["en", "es"], "progress": PROGRESS, "webhook_configured": True,
              "current_stage": "vision_analysis", "token_usage": TOKENS}],
    "pagination": {"limit": 10, "offset": 0, "total": 1, "has_more": False},
}
CANCELLED = {"job_id": EXAMPLE_JOB, "status": "cancelled", "cancelled_at": "2025-08-05T07:50:00Z",
             "message": "Job successfully cancelled"}
DELIVERY = {
    "id": 41, "batch_job_id": EXAMPLE_JOB, "webhook_url": "https://hooks.example.com/genservice",
    "event": "batch_job_completed", "webhook_id": "msg_5f3c9a0e2b7d4c1e8a6f0b2d4e6a8c0e",
    "chunk": {"index": 0, "count": 1}, "status": "failed", "attempt_count": 2, "max_attempts": 2,
    "created_at": "2025-08-05T08:08:00Z", "next_attempt_at": None, "last_attempt_at": "2025-08-05T08:08:31Z",
    "delivered_at": None, "last_status_code": 503, "error_message": "HTTP 503 (gave up after 2 attempts)",
    "attempts": [
        {"attempt": 1, "started_at": "2025-08-05T08:08:01Z", "duration_ms": 84, "status_code": 503,
         "error": "HTTP 503", "response_excerpt": "upstream unavailable"},
        {"attempt": 2, "started_at": "2025-08-05T08:08:31Z", "duration_ms": 77, "status_code": 503,
         "error": "HTTP 503", "response_excerpt": "upstream unavailable"},
    ],
}
REDELIVERY = {**DELIVERY, "status": "pending", "max_attempts": 7, "next_attempt_at": "2025-08-05T09:00:00Z",
              "error_message": None}
DELIVERY_LIST = {"job_id": EXAMPLE_JOB, "status": "completed", "deliveries": [DELIVERY],
                 "pagination": {"limit": 100, "offset": 0, "total": 1, "has_more": False}}
IMAGE_VALIDATION = {
    "valid_urls": ["https://photos.example.com/xc60-left.jpg"],
    "unreachable_urls": ["https://photos.example.com/gone.jpg"],
    "threshold_met": True, "required_valid": 1,
    "checks": [{"url": "https://photos.example.com/xc60-left.jpg", "ok": True, "reason": None, "status_code": 200,
                "content_type": "image/jpeg", "size": 183204},
               {"url": "https://photos.example.com/gone.jpg", "ok": False, "reason": "HTTP 404", "status_code": 404,
                "content_type": "text/html", "size": None}],
}
HEALTH = {
    "status": "healthy", "service": "generation-service", "timestamp": EXAMPLE_TIME, "version": VERSION,
    "database": "connected", "database_engine": "postgresql", "background_worker": "running",
    "worker": {"status": "running", "last_heartbeat": EXAMPLE_TIME, "live_workers": 4},
    "openai": {"mode": "openai", "base_url": None},
}
WEBHOOK_PAYLOAD = {
    "event": "batch_job_completed", "job_id": EXAMPLE_JOB, "status": "completed",
    "completed_at": "2025-08-05T08:08:00Z", "processing_summary": SUMMARY, "lots": FINISHED_LOTS,
}


def error_example(code: str, message: str, error: str, details: dict[str, Any] | None = None,
                  **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, **extra, "message": message, "code": code}
    if details is not None:
        body["details"] = details
    return body
