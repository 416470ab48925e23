"""A typed Python client for the Generation Service API.

Every request is signed with GS2 (``Authorization: GS2-HMAC-SHA256 ...``): the method, the path and
query string exactly as sent, a timestamp, a fresh nonce and the SHA-256 of the body bytes, which are
serialized once, signed and sent as they are. A bare shared key signs GS2 as the implicit client
``default``. ``scheme="reference"`` signs the way the API reference prescribes instead: a generate
request carries the HMAC of its compact, key-sorted ``lots`` in the body; job endpoints sign the job
id; the job list signs its raw query string, taken from the prepared request so it is exactly the one
sent. Any answer outside the expected status codes raises :class:`ApiError`; network failures
surface as ``requests`` exceptions.

This module depends on ``requests`` only: neither Flask nor the server's packages (app, services,
database, workers) are imported, so it works, and can be copied, wherever ``requests`` is installed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypedDict
from urllib.parse import quote, urlencode, urlsplit

import requests

__all__ = ["DEFAULT_URL", "USER_AGENT", "API", "FINAL_STATUSES", "Image", "Lot", "Description", "LotResult",
           "SyncAnswer", "JobAccepted", "Progress", "ProcessingDetails", "JobStatus", "ProcessingSummary",
           "ResultsBody", "JobResults", "JobListItem", "Pagination", "JobList", "CancelAnswer", "DeliveryAttempt",
           "Delivery", "DeliveryList", "ApiError", "WaitTimeout", "canonical_lots", "sign", "sign_lots", "make_lot",
           "GS2", "REFERENCE", "IMPLICIT_CLIENT", "implicit_key_id", "gs2_authorization", "GenerationClient"]

DEFAULT_URL = "http://127.0.0.1:5000"
USER_AGENT = "genservice-client/2.0"
API = "/api/v1"
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


# ---- answers ------------------------------------------------------------------------------------
# TypedDicts rather than dataclasses: the answers stay plain JSON (a newer server may add fields
# without breaking anything), while editors and type checkers still know their shape.

class Image(TypedDict):
    url: str


class _LotRequired(TypedDict):
    lot_id: str
    images: list[Image]


class Lot(_LotRequired, total=False):
    additional_info: str
    webhook: str


class Description(TypedDict):
    language: str
    damages: str


class LotResult(TypedDict, total=False):
    lot_id: str
    status: str
    processed_at: str | None
    processed_images: int
    descriptions: list[Description]
    missing_images: list[str]
    error: str


class SyncAnswer(TypedDict):
    version: str
    processing_mode: str
    total_lots: int
    processed_at: str
    lots: list[LotResult]


class JobAccepted(TypedDict):
    job_id: str
    status: str
    created_at: str
    total_lots: int
    languages: list[str]
    estimated_completion: str | None
    processing_mode: str
    webhook_configured: bool


class Progress(TypedDict, total=False):
    total_lots: int
    processed_lots: int
    failed_lots: int
    completion_percentage: float
    estimated_completion: str | None


class ProcessingDetails(TypedDict, total=False):
    openai_vision_batch_id: str | None
    openai_translation_batch_id: str | None
    current_stage: str


class JobStatus(TypedDict, total=False):
    job_id: str
    status: str
    created_at: str
    updated_at: str
    completed_at: str | None
    progress: Progress
    languages: list[str]
    processing_details: ProcessingDetails
    error_message: str | None
    webhook_configured: bool


class ProcessingSummary(TypedDict, total=False):
    total_lots: int
    processed_lots: int
    failed_lots: int
    total_images_processed: int
    total_processing_time: str | None


class ResultsBody(TypedDict, total=False):
    version: str
    lots: list[LotResult]


class JobResults(TypedDict, total=False):
    job_id: str
    status: str
    completed_at: str | None
    processing_summary: ProcessingSummary
    results: ResultsBody


class JobListItem(TypedDict, total=False):
    id: str
    status: str
    created_at: str
    updated_at: str
    total_lots: int
    processed_lots: int
    failed_lots: int
    languages: list[str]
    progress: Progress
    webhook_configured: bool


class Pagination(TypedDict):
    limit: int
    offset: int
    total: int
    has_more: bool


class JobList(TypedDict):
    jobs: list[JobListItem]
    pagination: Pagination


class CancelAnswer(TypedDict):
    job_id: str
    status: str
    cancelled_at: str
    message: str


class DeliveryAttempt(TypedDict, total=False):
    attempt: int
    started_at: str
    duration_ms: int | None
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class Delivery(TypedDict, total=False):
    id: int
    batch_job_id: str
    webhook_url: str
    event: str
    webhook_id: str
    status: str
    attempt_count: int
    max_attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_status_code: int | None
    error_message: str | None
    attempts: list[DeliveryAttempt]


class DeliveryList(TypedDict, total=False):
    job_id: str
    status: str
    deliveries: list[Delivery]
    pagination: Pagination


# ---- errors -------------------------------------------------------------------------------------

class ApiError(Exception):
    """The service answered with an error (or an unexpected status); fields mirror its JSON body."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 body: Mapping[str, Any] | None = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.body = dict(body) if body is not None else {"code": code, "message": message}
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: requests.Response) -> "ApiError":
        try:
            body = response.json()
        except ValueError:
            body = None
        retry_after = _seconds(response.headers.get("Retry-After"))
        if not isinstance(body, dict):
            text = response.text.strip()[:500] or response.reason or "no body"
            return cls(response.status_code, f"HTTP_{response.status_code}", text, retry_after=retry_after)
        return cls(response.status_code, str(body.get("code") or f"HTTP_{response.status_code}"),
                   str(body.get("message") or body.get("error") or response.reason),
                   body.get("details") if isinstance(body.get("details"), dict) else None, body, retry_after)

    def to_dict(self) -> dict[str, Any]:
        """The service's own error body, with the HTTP status added."""
        return {"status": self.status, **self.body}


class WaitTimeout(TimeoutError):
    """``wait`` gave up before the job ended; ``last`` is the last status seen."""

    def __init__(self, job_id: str, timeout: float, last: JobStatus | None):
        super().__init__(f"job {job_id} did not finish within {timeout:g} s")
        self.job_id = job_id
        self.last = last


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ---- signing ------------------------------------------------------------------------------------

def canonical_lots(lots: Any) -> str:
    """The exact text signed for a generate request: the lots, compact and key-sorted."""
    return json.dumps(lots, separators=(",", ":"), sort_keys=True)


def sign(key: str, message: str | bytes) -> str:
    """``sha256=<hex HMAC-SHA256(key, message)>``."""
    data = message.encode() if isinstance(message, str) else message
    return "sha256=" + hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def sign_lots(key: str, lots: Any) -> str:
    return sign(key, canonical_lots(lots))


#: the signature schemes a client can use
GS2 = "GS2-HMAC-SHA256"
REFERENCE = "reference"
#: the client a bare SHARED_KEY belongs to
IMPLICIT_CLIENT = "default"


def implicit_key_id(shared_key: str) -> str:
    """The key id of a shared key in GS2 credentials: a fingerprint that reveals nothing of the key."""
    return "sk_" + hashlib.sha256(b"genservice key id\n" + shared_key.encode()).hexdigest()[:16]


def gs2_authorization(secret: str, client_id: str, key_id: str, method: str, path: str, query: str = "",
                      body: bytes = b"", *, timestamp: int | None = None, nonce: str | None = None) -> str:
    """The ``Authorization`` header of one request: HMAC-SHA256, under a key derived from ``secret``, of the
    scheme's name, the credential, timestamp, nonce, method, path and raw query as sent and the body's
    SHA-256, one per line. Each request needs its own (a new nonce); the service refuses a signature seen
    before or more than 5 minutes from its clock."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    signing_key = hmac.new(secret.encode(), b"GS2-HMAC-SHA256 signing key", hashlib.sha256).digest()
    lines = [GS2, f"{client_id}/{key_id}", str(timestamp), nonce, method.upper(), path, query,
             hashlib.sha256(body).hexdigest()]
    signature = hmac.new(signing_key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
    return f"{GS2} Credential={client_id}/{key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"


def make_lot(lot_id: str, image_urls: Iterable[str], additional_info: str = "", webhook: str | None = None) -> Lot:
    lot: Lot = {"lot_id": lot_id, "additional_info": additional_info, "images": [{"url": u} for u in image_urls]}
    if webhook:
        lot["webhook"] = webhook
    return lot


# ---- the client ---------------------------------------------------------------------------------

class GenerationClient:
    """Signed calls to one Generation Service.

    Who signs:

    * ``GenerationClient(shared_key, url)``: the deployment's ``SHARED_KEY``, i.e. the implicit client
      ``default`` (its key id is derived from the key);
    * ``GenerationClient(base_url=url, client_id="auction-a", key_id="key_...", secret="gsk_...")``: a
      client added with ``genservice clients add`` and the key that printed.

    Every request is signed with GS2; ``scheme="reference"`` signs the reference's way instead
    (``X-Signature`` and the body's ``signature``), which the implicit client and clients added with
    ``--reference-scheme`` accept. ``timeout`` applies to every call but the synchronous generate, which may
    take up to ``sync_timeout`` seconds (the service answers within 300 s).
    """

    def __init__(self, shared_key: str | None = None, base_url: str = DEFAULT_URL, *, client_id: str | None = None,
                 key_id: str | None = None, secret: str | None = None, scheme: str = GS2, timeout: float = 60.0,
                 sync_timeout: float = 310.0, session: requests.Session | None = None,
                 user_agent: str = USER_AGENT):
        if shared_key and secret:
            raise ValueError("give either shared_key or secret, not both")
        if not (shared_key or secret):
            raise ValueError("a key is required: shared_key, or client_id, key_id and secret")
        if scheme not in (GS2, REFERENCE):
            raise ValueError(f"scheme must be {GS2!r} or {REFERENCE!r}")
        self.client_id = client_id or IMPLICIT_CLIENT
        if shared_key and self.client_id != IMPLICIT_CLIENT:
            raise ValueError("a shared key belongs to the implicit client 'default'; pass a client's key as secret")
        self.key = shared_key or secret
        if key_id is None and self.client_id != IMPLICIT_CLIENT:
            raise ValueError(f"key_id is required for client {self.client_id!r}")
        self.key_id = key_id or implicit_key_id(self.key)
        self.scheme = scheme
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.sync_timeout = sync_timeout
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", user_agent)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "GenerationClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- generation --------------------------------------------------------------------------------
    def generate_sync(self, lot: Lot, languages: Sequence[str] = ("en",), version: str = "1.0.0", *,
                      idempotency_key: str | None = None) -> SyncAnswer:
        """Describe one lot now (200)."""
        return self._generate([lot], languages, version, expect=200, timeout=self.sync_timeout,
                              headers=_idempotency(idempotency_key))

    def create_batch(self, lots: Sequence[Lot], languages: Sequence[str] = ("en",), version: str = "1.0.0", *,
                     idempotency_key: str | None = None) -> JobAccepted:
        """Queue 2 or more lots as a batch job (201). Send the same ``idempotency_key`` when retrying after a
        network failure, so the retry answers with the first job instead of creating a second one."""
        if len(lots) < 2:
            raise ValueError("a batch job needs at least 2 lots; use generate_sync for one")
        return self._generate(list(lots), languages, version, expect=201, timeout=self.timeout,
                              headers=_idempotency(idempotency_key))

    def estimate(self, lots: Sequence[Lot], languages: Sequence[str] = ("en",),
                 version: str = "1.0.0") -> dict[str, Any]:
        """What sending these lots would cost, and whether today's budget allows it; nothing is created."""
        return self._generate(list(lots), languages, version, expect=200, timeout=self.timeout, route="estimate")

    def _generate(self, lots: list, languages: Sequence[str], version: str, expect: int, timeout: float,
                  route: str = "generate-descriptions", headers: Mapping[str, str] | None = None):
        body = {"version": version, "languages": list(languages), "lots": lots}
        if self.scheme == REFERENCE:
            body = {"signature": sign_lots(self.key, lots), **body}
        response = self._send("POST", f"{API}/{route}", json_body=body, timeout=timeout, headers=headers)
        return self._json(response, expect)

    # -- polling -----------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobStatus:
        return self._json(self._job_call("GET", "batch-status", job_id), 200)

    def results(self, job_id: str) -> JobResults | None:
        """The results of a completed job, or None while it is still running (202)."""
        response = self._job_call("GET", "batch-results", job_id)
        if response.status_code == 202:
            return None
        return self._json(response, 200)

    def download(self, job_id: str, path: str | os.PathLike | None = None, chunk_size: int = 1 << 16) -> Path:
        """Stream the results file to ``path`` (a file, a directory, or the server's file name in the
        current directory). The file appears only once complete."""
        response = self._job_call("GET", "batch-results", job_id, suffix="/download", stream=True)
        with response:
            if response.status_code != 200:
                raise ApiError.from_response(response)
            target = _download_target(path, response.headers.get("Content-Disposition"), job_id)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as fh:
                for chunk in response.iter_content(chunk_size):
                    fh.write(chunk)
            os.replace(partial, target)
        return target

    def list_jobs(self, status: str | None = None, limit: int | None = None, offset: int | None = None,
                  created_after: str | datetime | None = None,
                  created_before: str | datetime | None = None) -> JobList:
        params = {"status": status, "limit": limit, "offset": offset,
                  "created_after": _iso(created_after), "created_before": _iso(created_before)}
        query = urlencode([(k, v) for k, v in params.items() if v is not None])
        path = f"{API}/batch-jobs" + (f"?{query}" if query else "")
        return self._json(self._send("GET", path, reference_message=_QUERY), 200)

    def cancel(self, job_id: str, *, idempotency_key: str | None = None) -> CancelAnswer:
        return self._json(self._job_call("POST", "batch-jobs", job_id, suffix="/cancel",
                                         headers=_idempotency(idempotency_key)), 200)

    def webhook_deliveries(self, job_id: str, limit: int | None = None, offset: int | None = None) -> DeliveryList:
        """The webhook deliveries recorded for a job, oldest first, with their attempts."""
        query = urlencode([(k, v) for k, v in (("limit", limit), ("offset", offset)) if v is not None])
        suffix = "/webhook-deliveries" + (f"?{query}" if query else "")
        return self._json(self._job_call("GET", "batch-jobs", job_id, suffix=suffix), 200)

    def redeliver(self, delivery_id: int | str, *, idempotency_key: str | None = None) -> Delivery:
        """Queue a delivered or failed webhook once more (signed with the delivery id); 409 while it is pending."""
        message = str(delivery_id)
        response = self._send("POST", f"{API}/webhook-deliveries/{quote(message, safe='')}/redeliver",
                              reference_message=message, headers=_idempotency(idempotency_key))
        return self._json(response, 200, 201, 202)

    def wait(self, job_id: str, poll_interval: float = 2.0, timeout: float | None = None,
             on_progress: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Poll until the job is completed, failed or cancelled; return its last status.

        A 429 is waited out (Retry-After) instead of raised, so a long wait survives rate limits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: JobStatus | None = None
        while True:
            try:
                last = self.status(job_id)
            except ApiError as exc:
                if exc.status != 429:
                    raise
                pause = exc.retry_after or poll_interval
            else:
                if on_progress is not None:
                    on_progress(last)
                if last.get("status") in FINAL_STATUSES:
                    return last
                pause = poll_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(job_id, timeout, last)
                pause = min(pause, remaining)
            time.sleep(pause)

    # -- transport ---------------------------------------------------------------------------------
    def _job_call(self, method: str, resource: str, job_id: str, suffix: str = "", stream: bool = False,
                  headers: Mapping[str, str] | None = None):
        path = f"{API}/{resource}/{quote(job_id, safe='')}{suffix}"
        return self._send(method, path, reference_message=job_id, stream=stream, headers=headers)

    def _send(self, method: str, path: str, *, json_body: Any = None, reference_message: str | None = None,
              stream: bool = False, timeout: float | None = None,
              headers: Mapping[str, str] | None = None) -> requests.Response:
        """Send one request, signed as the client's scheme says. ``reference_message`` is what the reference's
        scheme signs in X-Signature (``_QUERY``: the query string as sent); GS2 signs the request itself."""
        all_headers = {"Accept": "application/json", **(headers or {})}
        body = None
        if json_body is not None:
            # serialized once: these bytes are hashed into the signature and sent as they are
            body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        prepared = self.session.prepare_request(requests.Request(method, self.base_url + path, headers=all_headers,
                                                                 data=body))
        sent = urlsplit(prepared.url)
        if self.scheme == GS2:
            prepared.headers["Authorization"] = gs2_authorization(self.key, self.client_id, self.key_id, method,
                                                                  sent.path, sent.query, body or b"")
        elif reference_message is not None:
            message = sent.query if reference_message is _QUERY else reference_message
            prepared.headers["X-Signature"] = sign(self.key, message)
        settings = self.session.merge_environment_settings(prepared.url, {}, stream, None, None)
        return self.session.send(prepared, timeout=timeout or self.timeout, **settings)

    @staticmethod
    def _json(response: requests.Response, *expected: int) -> Any:
        if response.status_code not in expected:
            raise ApiError.from_response(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "INVALID_RESPONSE",
                           f"expected JSON, got {response.headers.get('Content-Type')!r}") from None


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


#: stands for "the query string as sent" where the reference's scheme signs it
_QUERY = object()


def _iso(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def _download_target(path: str | os.PathLike | None, disposition: str | None, job_id: str) -> Path:
    match = _FILENAME.search(disposition or "")
    name = Path(match.group(1)).name if match else f"batch_results_{job_id}.json"
    if path is None:
        return Path(name)
    target = Path(path)
    return target / name if target.is_dir() else target
