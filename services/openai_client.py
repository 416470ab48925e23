"""The one door to OpenAI (or any compatible server): the official SDK, errors mapped to ours."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import openai
from openai import OpenAI

from services.errors import UpstreamError
from services.findings import Repairs, UnusableReport, normalize, render_html
from services.prompts import is_reasoning_model, translation_request, vision_request
from services.sanitize import sanitize_html

log = logging.getLogger(__name__)

REASONING_ALLOWANCE = 8000


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens

    @classmethod
    def of(cls, usage: Any) -> "Usage":
        if usage is None:
            return cls()
        get = usage.get if isinstance(usage, dict) else (lambda k, d=0: getattr(usage, k, d))
        return cls(int(get("input_tokens", 0) or 0), int(get("output_tokens", 0) or 0))


@dataclass
class VisionResult:
    html: str
    report: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    repairs: Repairs = field(default_factory=Repairs)


@dataclass
class TranslationResult:
    texts: dict[str, str]
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ModelSettings:
    vision_model: str = "o4-mini"
    translation_model: str = "gpt-4.1-mini"
    reasoning_effort: str = "medium"
    max_tokens: int = 4000
    temperature: float | None = 0.1

    @property
    def vision_max_output_tokens(self) -> int:
        extra = REASONING_ALLOWANCE if is_reasoning_model(self.vision_model) else 0
        return self.max_tokens + extra


def make_client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> OpenAI:
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)


def upstream_error(exc: Exception, api: str) -> UpstreamError:
    """Translate an SDK exception into the service's 502/504 error."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamError("OpenAI API request timed out", timeout=True, api=api)
    if isinstance(exc, openai.APIStatusError):
        retry_after = None
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        if header and header.isdigit():
            retry_after = int(header)
        return UpstreamError("OpenAI API request failed", upstream_message=_status_message(exc),
                             retry_after=retry_after, api=api, upstream_status=exc.status_code)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError("OpenAI API is unreachable", upstream_message="connection error", api=api)
    return UpstreamError("OpenAI API answer could not be used", upstream_message=str(exc)[:300], api=api)


def _status_message(exc: "openai.APIStatusError") -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") if "message" in body else (body.get("error") or {}).get("message")
    return f"HTTP {exc.status_code}: {message or exc.message}"[:300]


def response_text(response: Any) -> str:
    """The output text of a Responses API object or of its JSON form (a batch output line)."""
    if isinstance(response, dict):
        status = response.get("status")
        if status not in (None, "completed"):
            reason = (response.get("incomplete_details") or {}).get("reason") or status
            raise ValueError(f"response {status}: {reason}")
        parts = []
        for item in response.get("output") or []:
            if item.get("type") == "message":
                parts += [c.get("text", "") for c in item.get("content") or [] if c.get("type") == "output_text"]
        return "".join(parts)
    if getattr(response, "status", "completed") not in (None, "completed"):
        details = getattr(response, "incomplete_details", None)
        raise ValueError(f"response {response.status}: {getattr(details, 'reason', None) or response.status}")
    return response.output_text


def parse_translations(text: str, languages: list[str]) -> dict[str, str]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("translation answer is not a JSON object")
    missing = [code for code in languages if not isinstance(data.get(code), str) or not data[code].strip()]
    if missing:
        raise ValueError(f"translation answer lacks {', '.join(missing)}")
    return {code: sanitize_html(data[code]) for code in languages}


class OpenAIGateway:
    """Vision and translation calls plus the Batch API primitives, through one SDK client."""

    def __init__(self, client: OpenAI, models: ModelSettings, on_error: Callable[[str], None] | None = None,
                 on_repairs: Callable[[Repairs], None] | None = None):
        self.client = client
        self.models = models
        self._on_error = on_error or (lambda api: None)
        self._on_repairs = on_repairs or (lambda repairs: None)

    def _call(self, api: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except openai.OpenAIError as exc:
            self._on_error(api)
            log.warning("openai %s call failed: %s", api, type(exc).__name__)
            raise upstream_error(exc, api) from exc

    # requests, shared with the batch JSONL builder
    def vision_body(self, image_urls: list[str], additional_info: str) -> dict[str, Any]:
        m = self.models
        return vision_request(m.vision_model, image_urls, additional_info,
                              max_output_tokens=m.vision_max_output_tokens, reasoning_effort=m.reasoning_effort)

    def translation_body(self, html: str, languages: list[str]) -> dict[str, Any]:
        m = self.models
        return translation_request(m.translation_model, html, languages, max_output_tokens=m.max_tokens,
                                   temperature=m.temperature)

    # direct calls
    def describe(self, image_urls: list[str], additional_info: str, photo_indexes: list[int]) -> VisionResult:
        response = self._call("vision", lambda: self.client.responses.create(**self.vision_body(image_urls, additional_info)))
        return self.read_vision(response, photo_indexes)

    def read_vision(self, response: Any, photo_indexes: list[int]) -> VisionResult:
        """Findings repaired and counted, and the English HTML rendered from them (never model markup)."""
        try:
            report, repairs = normalize(response_text(response), photo_indexes)
        except (ValueError, UnusableReport) as exc:
            self._on_error("vision")
            raise UpstreamError("OpenAI vision answer could not be used", upstream_message=str(exc)[:300],
                                api="vision") from exc
        if repairs.dropped or repairs.fixed:
            self._on_repairs(repairs)
            log.info("vision answer repaired: %d findings dropped, %d fields fixed (%s)", repairs.dropped,
                     repairs.fixed, "; ".join(repairs.reasons[:5]))
        usage = response.get("usage") if isinstance(response, dict) else response.usage
        return VisionResult(html=sanitize_html(render_html(report)), report=report, usage=Usage.of(usage),
                            repairs=repairs)

    def translate(self, html: str, languages: list[str]) -> TranslationResult:
        response = self._call("translation", lambda: self.client.responses.create(**self.translation_body(html, languages)))
        return self.read_translation(response, languages)

    def read_translation(self, response: Any, languages: list[str]) -> TranslationResult:
        try:
            texts = parse_translations(response_text(response), languages)
        except ValueError as exc:
            self._on_error("translation")
            raise UpstreamError("OpenAI translation answer could not be used", upstream_message=str(exc)[:300],
                                api="translation") from exc
        usage = response.get("usage") if isinstance(response, dict) else response.usage
        return TranslationResult(texts=texts, usage=Usage.of(usage))

    def call(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        """One Responses call with a prepared body; the answer as the JSON a batch output line carries."""
        return self._call(api, lambda: self.client.responses.create(**body)).model_dump(mode="json")

    # Batch API primitives
    def upload_batch_file(self, path: str, filename: str) -> str:
        with open(path, "rb") as fh:
            file = self._call("batch", lambda: self.client.files.create(file=(filename, fh, "application/jsonl"),
                                                                        purpose="batch"))
        return file.id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> Any:
        return self._call("batch", lambda: self.client.batches.create(
            input_file_id=input_file_id, endpoint="/v1/responses", completion_window="24h", metadata=metadata))

    def find_batch(self, metadata: dict[str, str], created_after: int = 0) -> Any | None:
        """The batch created earlier with exactly this metadata, if any (recovery after a crash).

        Whatever its status: a batch that failed is still this shard's batch, and collecting it
        as failed is what sends its lines to a new shard; creating another would run the shard twice.
        """
        def search():
            for batch in self.client.batches.list(limit=100):
                if batch.created_at < created_after:
                    return None
                if (batch.metadata or {}) == metadata:
                    return batch
            return None
        return self._call("batch", search)

    def retrieve_batch(self, batch_id: str) -> Any:
        return self._call("batch", lambda: self.client.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> Any:
        return self._call("batch", lambda: self.client.batches.cancel(batch_id))

    def iter_file_lines(self, file_id: str) -> Iterator[dict[str, Any]]:
        """Stream a batch output or error file line by line, never holding it whole."""
        try:
            with self.client.files.with_streaming_response.content(file_id) as response:
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except openai.OpenAIError as exc:
            self._on_error("batch")
            raise upstream_error(exc, "batch") from exc

    def delete_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.OpenAIError:
            log.info("could not delete OpenAI file %s", file_id)
