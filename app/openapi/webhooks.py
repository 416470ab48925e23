"""Webhooks: the notification a job sends when it ends, and the routes over its delivery records."""
from __future__ import annotations

from typing import Any

from app.config import Settings
from app.openapi.examples import DELIVERY_LIST, REDELIVERY, WEBHOOK_PAYLOAD, error_example
from app.openapi.responses import SIGNED, json_body, polling_errors, response, shared
from app.openapi.schemas import ref
from services.params import MAX_OFFSET
from services.webhooks import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX


def deliveries_operation() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return {
        "operationId": "listWebhookDeliveries", "tags": ["Webhooks"],
        "summary": "A job's webhook deliveries and every attempt",
        "description": "One record per webhook URL and chunk, oldest first, each with its attempts (status code, "
                       "error, start of the receiver's answer). X-Signature signs the job id.",
        "security": SIGNED,
        "parameters": [
            {"$ref": "#/components/parameters/JobId"},
            query("limit", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX,
                            "default": LIST_LIMIT_DEFAULT}, "Page size."),
            query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                  "Deliveries to skip."),
        ],
        "responses": {
            "200": response("One page of the job's deliveries.", ref("WebhookDeliveryList"), {"page": DELIVERY_LIST}),
            "400": shared("BadRequest"),
            **polling_errors(),
        },
    }


def redeliver_operation() -> dict[str, Any]:
    return {
        "operationId": "redeliverWebhook", "tags": ["Webhooks"],
        "summary": "Send a delivered or failed webhook again",
        "description": "Queues the delivery again with a fresh retry budget and the same webhook-id, so a "
                       "receiver that deduplicates sees the same message. X-Signature signs the delivery id.",
        "security": SIGNED,
        "parameters": [{"name": "delivery_id", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        "description": "The `id` of a delivery from the listing; also the message to sign."}],
        "responses": {
            "202": response("Queued; the delivery as it now stands.", ref("WebhookDelivery"), {"queued": REDELIVERY}),
            "401": shared("MissingSignature"),
            "403": shared("InvalidSignature"),
            "404": response("No delivery of the caller's jobs has this id (another client's delivery is not found "
                            "either).", ref("Error"), {"not_found": error_example(
                "DELIVERY_NOT_FOUND", "Webhook delivery 41 not found", "Not found", {"delivery_id": "41"})}),
            "409": response("The delivery is still queued and will be retried without being asked.",
                            ref("DeliveryPending"), {"pending": error_example(
                                "DELIVERY_PENDING", "This delivery is still queued: it will be sent again without "
                                "being asked", "Delivery is pending",
                                {"delivery_id": 41, "next_attempt_at": "2025-08-05T08:09:01Z"}, status="pending")}),
            "429": shared("RateLimited"),
            "500": shared("InternalError"),
        },
    }


def delivery_paths() -> dict[str, Any]:
    return {
        "/api/v1/batch-jobs/{job_id}/webhook-deliveries": {"get": deliveries_operation()},
        "/api/v1/webhook-deliveries/{delivery_id}/redeliver": {"post": redeliver_operation()},
    }


def webhooks(s: Settings) -> dict[str, Any]:
    return {"batchJobFinished": {"post": {
        "operationId": "batchJobFinished", "tags": ["Webhooks"],
        "summary": "Sent to each lot's webhook URL when its job ends",
        "description": (
            "One POST per distinct URL (split into chunks of at most "
            f"{s.webhook_max_lots_per_delivery:,} lots), signed for the client that created the job with its "
            "webhook secret (`whsec_` + base64; for the implicit client WEBHOOK_SECRET, or the secret derived "
            "from SHARED_KEY), never with an API key. The Standard Webhooks headers (`webhook-id`, "
            "`webhook-timestamp`, `webhook-signature`) sign `{id}.{timestamp}.{body}` with the bytes the "
            "secret encodes, so any Standard Webhooks library verifies them with the secret as given; while a "
            "rotated secret is kept, `webhook-signature` holds one `v1` entry per secret. X-Signature is "
            "`sha256=` + hex HMAC-SHA256 of the raw body, keyed with SHARED_KEY for the implicit client (the "
            "reference's recipe) and with the whole webhook secret string for every other client. Answer 200, "
            f"201 or 202; anything else is retried up to {s.webhook_max_retries} attempts with exponential "
            "backoff."),
        "parameters": [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
            for name, text in (
                ("X-Signature", "sha256=<hex HMAC-SHA256 of the raw body>, under SHARED_KEY (implicit client) or "
                                "the client's webhook secret string"),
                ("X-Job-ID", "The job the notification is about."),
                ("X-Delivery-Attempt", "1 for the first attempt, then 2, 3, ..."),
                ("X-Delivery-ID", "The delivery record's id, as in the delivery listing and for a redelivery."),
                ("User-Agent", "Generation-Service/2.0"),
                ("webhook-id", "Stable id of this delivery across retries."),
                ("webhook-timestamp", "Unix time of this attempt."),
                ("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>, under the client's whsec_ "
                                      "secret; space-separated, one per secret while a rotated one is kept"),
            )],
        "requestBody": json_body(ref("WebhookPayload"), {"completed": WEBHOOK_PAYLOAD}),
        "responses": {"200": {"description": "Received; 201 and 202 count as delivered too."}},
    }}}
