"""Signing helpers written from the spec's recipes, independent of the service's own code."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

TEST_KEY = "test-shared-key-0123456789-abcdefghijklmnop"


def body_signature(lots, key: str = TEST_KEY, prefix: bool = True) -> str:
    normalized = json.dumps(lots, separators=(",", ":"), sort_keys=True)
    digest = hmac.new(key.encode(), normalized.encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}" if prefix else digest


def header_signature(message: str | bytes, key: str = TEST_KEY) -> str:
    if isinstance(message, str):
        message = message.encode()
    return "sha256=" + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


CAMRY = "2019 Toyota Camry, front collision"


def lot(lot_id: str, urls: list[str], info: str = CAMRY, webhook: str | None = None):
    data = {"lot_id": lot_id, "additional_info": info, "images": [{"url": u} for u in urls]}
    if webhook:
        data["webhook"] = webhook
    return data


DISTINCT_INFO = "lot {prefix}-{i}: seller reports a scrape on panel {i}"


def photo_lots(image_server, count: int, prefix: str, *, photos=range(2), info: str = DISTINCT_INFO,
               webhook: str | None = None) -> list[dict]:
    """``count`` lots ``<prefix>-<i>``, each with a photo ``/img/<prefix><i>-<n>.jpg`` of ``image_server`` per
    ``n`` in ``photos``; ``info`` is formatted with ``prefix`` and ``i`` (the default differs per lot, so
    the sandbox describes each one differently)."""
    return [lot(f"{prefix}-{i}", [image_server.url(f"/img/{prefix}{i}-{n}.jpg") for n in photos],
                info=info.format(prefix=prefix, i=i), webhook=webhook) for i in range(count)]


class Api:
    """A thin signed client over a live server."""

    def __init__(self, base_url: str, key: str = TEST_KEY):
        self.base = base_url.rstrip("/")
        self.key = key
        self.http = requests.Session()

    def generate(self, lots, languages=("en",), key: str | None = None, **extra):
        payload = {"signature": body_signature(lots, key or self.key), "version": "1.0.0",
                   "languages": list(languages), "lots": lots, **extra}
        return self.http.post(f"{self.base}/api/v1/generate-descriptions", json=payload, timeout=120)

    def get(self, path: str, sign: str | None = None, **kw):
        headers = {"X-Signature": header_signature(sign, self.key)} if sign is not None else {}
        return self.http.get(f"{self.base}{path}", headers=headers, timeout=60, **kw)

    def status(self, job_id: str):
        return self.get(f"/api/v1/batch-status/{job_id}", sign=job_id)

    def results(self, job_id: str):
        return self.get(f"/api/v1/batch-results/{job_id}", sign=job_id)

    def cancel(self, job_id: str):
        return self.http.post(f"{self.base}/api/v1/batch-jobs/{job_id}/cancel",
                              headers={"X-Signature": header_signature(job_id, self.key)}, timeout=60)

    def wait_status(self, job_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.status(job_id)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            if body["status"] in statuses:
                return body
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach {statuses}: {body}")


# ---- GS2, written from the README's description of the scheme ------------------------------------

def gs2_authorization(secret: str, client_id: str, key_id: str, method: str, path: str, query: str = "",
                      body: bytes = b"", timestamp: int | None = None, nonce: str | None = None) -> str:
    import secrets as _secrets

    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or _secrets.token_hex(16)
    signing_key = hmac.new(secret.encode(), b"GS2-HMAC-SHA256 signing key", hashlib.sha256).digest()
    text = "\n".join(["GS2-HMAC-SHA256", f"{client_id}/{key_id}", str(timestamp), nonce, method.upper(), path,
                      query, hashlib.sha256(body).hexdigest()])
    signature = hmac.new(signing_key, text.encode(), hashlib.sha256).hexdigest()
    return (f"GS2-HMAC-SHA256 Credential={client_id}/{key_id}, Timestamp={timestamp}, Nonce={nonce}, "
            f"Signature={signature}")


class Gs2Api:
    """A client that signs every request with GS2 (method, path, query, timestamp, nonce, body hash)."""

    def __init__(self, base_url: str, client_id: str, key_id: str, secret: str):
        self.base = base_url.rstrip("/")
        self.client_id, self.key_id, self.secret = client_id, key_id, secret
        self.http = requests.Session()

    def request(self, method: str, path: str, query: str = "", body: bytes = b"", headers: dict | None = None,
                **sign):
        auth = gs2_authorization(self.secret, self.client_id, self.key_id, method, path, query, body, **sign)
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        all_headers = {"Authorization": auth, **({"Content-Type": "application/json"} if body else {}),
                       **(headers or {})}
        return self.http.request(method, url, data=body or None, headers=all_headers, timeout=120)

    def generate(self, lots, languages=("en",), headers: dict | None = None, **extra):
        body = json.dumps({"version": "1.0.0", "languages": list(languages), "lots": lots, **extra}).encode()
        return self.request("POST", "/api/v1/generate-descriptions", body=body, headers=headers)

    def status(self, job_id: str):
        return self.request("GET", f"/api/v1/batch-status/{job_id}")
