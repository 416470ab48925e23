"""A typed Python client for the Generation Service API.

Every request is signed the way the API reference prescribes: a generate request carries the
HMAC of its compact, key-sorted ``lots`` in the body; job endpoints sign the job id; the job list
signs its raw query string, taken from the prepared request so it is exactly the one sent. Any
answer outside the expected status codes raises :class:`ApiError`; network failures surface as
``requests`` exceptions.

This module depends on ``requests`` only: neither Flask nor the server's packages (app, services,
database, workers) are imported, so it works, and can be copied, wherever ``requests`` is installed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
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
           "GenerationClient"]

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


def make_lot(lot_id: str, image_urls: Iterable[str], additional_info: str = "", webhook: str | None = None) -> Lot:
    lot: Lot = {"lot_id": lot_id, "additional_info": additional_info, "images": [{"url": u} for u in image_urls]}
    if webhook:
        lot["webhook"] = webhook
    return lot


# ---- the client ---------------------------------------------------------------------------------

class GenerationClient:
    """Signed calls to one Generation Service.

    ``timeout`` applies to every call but the synchronous generate, which may take up to
    ``sync_timeout`` seconds (the service answers within 300 s).
    """

    def __init__(self, shared_key: str, base_url: str = DEFAULT_URL, *, timeout: float = 60.0,
                 sync_timeout: float = 310.0, session: requests.Session | None = None,
                 user_agent: str = USER_AGENT):
        if not shared_key:
            raise ValueError("shared_key is required")
        self.key = shared_key
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
    def generate_sync(self, lot: Lot, languages: Sequence[str] = ("en",), version: str = "1.0.0") -> SyncAnswer:
        """Describe one lot now (200)."""
        return self._generate([lot], languages, version, expect=200, timeout=self.sync_timeout)

    def create_batch(self, lots: Sequence[Lot], languages: Sequence[str] = ("en",),
                     version: str = "1.0.0") -> JobAccepted:
        """Queue 2 or more lots as a batch job (201)."""
        if len(lots) < 2:
            raise ValueError("a batch job needs at least 2 lots; use generate_sync for one")
        return self._generate(list(lots), languages, version, expect=201, timeout=self.timeout)

    def estimate(self, lots: Sequence[Lot], languages: Sequence[str] = ("en",),
                 version: str = "1.0.0") -> dict[str, Any]:
        """What sending these lots would cost, and whether today's budget allows it; nothing is created."""
        return self._generate(list(lots), languages, version, expect=200, timeout=self.timeout, route="estimate")

    def _generate(self, lots: list, languages: Sequence[str], version: str, expect: int, timeout: float,
                  route: str = "generate-descriptions"):
        body = {"signature": sign_lots(self.key, lots), "version": version, "languages": list(languages),
                "lots": lots}
        response = self._send("POST", f"{API}/{route}", json_body=body, timeout=timeout)
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
        return self._json(self._send("GET", path, sign_query=True), 200)

    def cancel(self, job_id: str) -> CancelAnswer:
        return self._json(self._job_call("POST", "batch-jobs", job_id, suffix="/cancel"), 200)

    def webhook_deliveries(self, job_id: str, limit: int | None = None, offset: int | None = None) -> DeliveryList:
        """The webhook deliveries recorded for a job, oldest first, with their attempts."""
        query = urlencode([(k, v) for k, v in (("limit", limit), ("offset", offset)) if v is not None])
        suffix = "/webhook-deliveries" + (f"?{query}" if query else "")
        return self._json(self._job_call("GET", "batch-jobs", job_id, suffix=suffix), 200)

    def redeliver(self, delivery_id: int | str) -> Delivery:
        """Queue a delivered or failed webhook once more (signed with the delivery id); 409 while it is pending."""
        message = str(delivery_id)
        response = self._send("POST", f"{API}/webhook-deliveries/{quote(message, safe='')}/redeliver",
                              signature=sign(self.key, message))
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
    def _job_call(self, method: str, resource: str, job_id: str, suffix: str = "", stream: bool = False):
        path = f"{API}/{resource}/{quote(job_id, safe='')}{suffix}"
        return self._send(method, path, signature=sign(self.key, job_id), stream=stream)

    def _send(self, method: str, path: str, *, json_body: Any = None, signature: str | None = None,
              sign_query: bool = False, stream: bool = False, timeout: float | None = None) -> requests.Response:
        headers = {"Accept": "application/json"}
        if signature is not None:
            headers["X-Signature"] = signature
        request = requests.Request(method, self.base_url + path, headers=headers, json=json_body)
        prepared = self.session.prepare_request(request)
        if sign_query:
            prepared.headers["X-Signature"] = sign(self.key, urlsplit(prepared.url).query)
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
