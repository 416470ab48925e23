"""All models, importable from one place."""
from database.models.base import Base, utcnow
from database.models.clients import Client, ClientKey, IdempotencyRecord, RequestNonce
from database.models.costs import CostLedger
from database.models.jobs import (JOB_ACTIVE, JOB_FINAL, JOB_STATUSES, SNAPSHOT_COLUMNS, AnyJob, BatchJob, BatchLot,
                                  BatchLotPage, JobSnapshot)
from database.models.openai_batches import OpenAIBatch
from database.models.results import BatchResult
from database.models.webhooks import WebhookAttempt, WebhookDelivery
from database.models.worker import WorkerHeartbeat

__all__ = [
    "Base", "utcnow", "Client", "ClientKey", "IdempotencyRecord", "RequestNonce", "CostLedger", "BatchJob", "BatchLot",
    "BatchLotPage", "BatchResult", "OpenAIBatch", "WebhookDelivery",
    "WebhookAttempt", "WorkerHeartbeat", "JOB_ACTIVE", "JOB_FINAL", "JOB_STATUSES",
    "JobSnapshot", "SNAPSHOT_COLUMNS", "AnyJob",
]
