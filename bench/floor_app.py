"""The floor for a status poll: bench-only code, never deployed.

What GET /api/v1/batch-status/{job_id} cannot do without: Flask routing, the HMAC check of the
job id (every current key compared in constant time), one SELECT of the job row, its columns
returned as JSON. Nothing else: no request id, no access log, no metrics, no rate limit, no
ProxyFix, no error pages. bench/polling_floor.py serves it with the service's own
gunicorn.conf.py, on the same database, so the difference between the two is what the service
adds per request.

    DATABASE_URL=postgresql://... SHARED_KEY=... gunicorn -c gunicorn.conf.py --pythonpath bench floor_app:app
"""
from __future__ import annotations

import hashlib
import hmac
import os
import threading
from datetime import datetime

import psycopg
from flask import Flask, jsonify, request

# the columns the service's status view is built from (database/models/jobs.py JobSnapshot)
COLUMNS = ("id", "status", "stage", "strategy", "version", "languages", "total_lots", "processed_lots", "failed_lots",
           "translated_lots", "total_images", "total_images_processed", "webhook_configured", "input_tokens",
           "output_tokens", "openai_vision_batch_id", "openai_translation_batch_id", "error_message", "created_at",
           "updated_at", "completed_at", "cancelled_at", "estimated_completion")
QUERY = f"SELECT {', '.join(COLUMNS)} FROM batch_jobs WHERE id = %s"

app = Flask(__name__)
_keys = tuple(k.strip().encode() for k in (os.environ.get("SHARED_KEYS") or os.environ["SHARED_KEY"]).split(",")
              if k.strip())
_database_url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
_local = threading.local()


def _connection() -> psycopg.Connection:
    """One autocommit connection per gunicorn thread: the cheapest way to run one SELECT."""
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(_database_url, autocommit=True)
    return conn


def _signature_ok(message: str, signature: str) -> bool:
    given = signature.strip().lower().removeprefix("sha256=")
    matched = False
    for key in _keys:
        matched |= hmac.compare_digest(hmac.new(key, message.encode(), hashlib.sha256).hexdigest(), given)
    return matched


@app.get("/api/v1/batch-status/<job_id>")
def batch_status(job_id: str):
    signature = request.headers.get("X-Signature", "")
    if not signature:
        return jsonify(error="Unauthorized", message="signature required", code="MISSING_SIGNATURE"), 401
    if not _signature_ok(job_id, signature):
        return jsonify(error="Forbidden", message="invalid signature", code="INVALID_SIGNATURE"), 403
    row = _connection().execute(QUERY, (job_id,)).fetchone()
    if row is None:
        return jsonify(error="Not Found", message="no such job", code="JOB_NOT_FOUND"), 404
    return jsonify({name: value.isoformat() if isinstance(value, datetime) else value
                    for name, value in zip(COLUMNS, row)})


@app.get("/health")
def health():
    _connection().execute("SELECT 1")
    return jsonify(status="healthy")
