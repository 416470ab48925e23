"""The floor of the accept path: a Flask app that only reads a generate request's body, parses it
with json.loads and verifies its signature with the published recipe (HMAC-SHA256 of the compact,
key-sorted JSON of ``lots``), then answers 201 or 403. No validation, no database.

Started by bench/hostile_body.py and bench/batch_accept.py under gunicorn (gthread, like the
service), so the service's accept time can be printed beside it from the same run.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
KEY = os.environ["SHARED_KEY"].encode()


@app.get("/ready")
def ready():
    return jsonify({"ready": True})


@app.post("/api/v1/generate-descriptions")
def accept():
    body = json.loads(request.get_data())
    message = json.dumps(body["lots"], separators=(",", ":"), sort_keys=True).encode()
    expected = hmac.new(KEY, message, hashlib.sha256).hexdigest()
    given = str(body.get("signature", "")).removeprefix("sha256=")
    if not hmac.compare_digest(expected, given):
        return jsonify({"code": "INVALID_SIGNATURE"}), 403
    return jsonify({"total_lots": len(body["lots"])}), 201
