"""The one door to OpenAI (or any compatible server): the official SDK, errors mapped to ours."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import openai
import orjson
from openai import OpenAI

from services.errors import UpstreamError
from services.findings import Repairs, UnusableReport, normalize, render_html
from services.models import ModelRules, registry
from services.prompts import translation_request, vision_request
from services.sanitize import sanitize_html

log = logging.getLogger(__name__)


@dataclass
class Usage:
    """Tokens of one or more answers (cached input is part of input, reasoning part of output) and their price."""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: "Usage") -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd

    @property
    def empty(self) -> bool:
        return not (self.input_tokens or self.output_tokens or self.cost_usd)

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "cached_input_tokens": self.cached_input_tokens,
                "output_tokens": self.output_tokens, "reasoning_tokens": self.reasoning_tokens,
                "cost_usd": round(self.cost_usd, 6)}

    @classmethod
    def of(cls, usage: Any) -> "Usage":
        """The token counts of a Responses ``usage`` (an SDK object or its JSON form), not yet priced."""
        if usage is None:
            return cls()
        return cls(_field(usage, "input_tokens"), _field(usage, "output_tokens"),
                   _field(_field(usage, "input_tokens_details", None), "cached_tokens"),
                   _field(_field(usage, "output_tokens_details", None), "reasoning_tokens"))


def _field(obj: Any, name: str, default: Any = 0) -> Any:
    if obj is None:
        return default
    value = obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)
    if default == 0:
        return int(value or 0)
    return value


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


class UnusableAnswer(UpstreamError):
    """An answer that arrived (and was billed) but cannot be used; it carries the usage it cost."""

    def __init__(self, message: str, reason: str, api: str, usage: "Usage"):
        super().__init__(message, upstream_message=reason[:300], api=api)
        self.usage = usage


# the setting a person changes when OpenAI refuses what a call asked for, per call kind
MODEL_SETTING = {"vision": "OPENAI_MODEL_VISION", "translation": "OPENAI_MODEL_TRANSLATION"}
EFFORT_SETTING = {"vision": "OPENAI_REASONING_EFFORT", "translation": "OPENAI_TRANSLATION_REASONING_EFFORT"}
# OpenAI's codes for a request that can never succeed as configured: retrying it only pays again
REFUSED_CODES = frozenset({"model_not_found", "unsupported_parameter", "unsupported_value"})


@dataclass(frozen=True)
class ModelSettings:
    vision_model: str = "gpt-6.1-terra"
    translation_model: str = "gpt-6-luna"
    reasoning_effort: str = "medium"
    translation_reasoning_effort: str = "none"
    max_tokens: int = 4000
    temperature: float | None = 0.1

    @property
    def vision_rules(self) -> ModelRules:
        return registry().rules(self.vision_model)

    @property
    def translation_rules(self) -> ModelRules:
        return registry().rules(self.translation_model)

    def model_for(self, api: str) -> str:
        return self.vision_model if api == "vision" else self.translation_model


def make_client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> OpenAI:
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)


def setting_to_change(api: str, code: str | None, param: str | None) -> str:
    """Which setting makes a refused request acceptable: the effort, the temperature or the model."""
    if code != "model_not_found" and param:
        if param.startswith("reasoning"):
            return EFFORT_SETTING.get(api, "OPENAI_REASONING_EFFORT")
        if param in ("temperature", "top_p"):
            return f"OPENAI_TEMPERATURE or {MODEL_SETTING.get(api, 'the model setting')}"
    return MODEL_SETTING.get(api, "OPENAI_MODEL_VISION / OPENAI_MODEL_TRANSLATION")


def refusal_reason(api: str, model: str, code: str | None, param: str | None, message: str) -> str:
    return (f"OpenAI refused the {api} request for model {model} ({code}): {message} "
            f"Change {setting_to_change(api, code, param)}.")[:1000]


def upstream_error(exc: Exception, api: str, model: str | None = None) -> UpstreamError:
    """Translate an SDK exception into the service's 502/504 error."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamError("OpenAI API request timed out", timeout=True, api=api)
    if isinstance(exc, openai.APIStatusError):
        code, param = getattr(exc, "code", None), getattr(exc, "param", None)
        if code in REFUSED_CODES:
            reason = refusal_reason(api, model or "?", code, param, _plain_message(exc))
            error = UpstreamError("OpenAI refused the request as configured", upstream_message=reason, api=api,
                                  upstream_status=exc.status_code, refused=True)
            error.details["setting"] = setting_to_change(api, code, param)
            return error
        retry_after = None
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        if header and header.isdigit():
            retry_after = int(header)
        return UpstreamError("OpenAI API request failed", upstream_message=_status_message(exc),
                             retry_after=retry_after, api=api, upstream_status=exc.status_code)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError("OpenAI API is unreachable", upstream_message="connection error", api=api)
    return UpstreamError("OpenAI API answer could not be used", upstream_message=str(exc)[:300], api=api)


def _plain_message(exc: "openai.APIStatusError") -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") if "message" in body else (body.get("error") or {}).get("message")
    return str(message or exc.message)[:500]


def _status_message(exc: "openai.APIStatusError") -> str:
    return f"HTTP {exc.status_code}: {_plain_message(exc)}"[:300]


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
    """Vision and translation calls plus the Batch API primitives, through one SDK client.

    ``on_cost(model, api, dollars)`` hears every priced answer (``api`` is ``responses`` for a
    direct call, ``batch`` for a Batch API line).
    """

    def __init__(self, client: OpenAI, models: ModelSettings, on_error: Callable[[str], None] | None = None,
                 on_repairs: Callable[[Repairs], None] | None = None,
                 on_cost: Callable[[str, str, float], None] | None = None):
        self.client = client
        self.models = models
        self._on_error = on_error or (lambda api: None)
        self._on_repairs = on_repairs or (lambda repairs: None)
        self._on_cost = on_cost or (lambda model, api, dollars: None)

    def _call(self, api: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except openai.OpenAIError as exc:
            self._on_error(api)
            log.warning("openai %s call failed: %s", api, type(exc).__name__)
            raise upstream_error(exc, api, self.models.model_for(api)) from exc

    def priced(self, response: Any, api: str, batch: bool) -> Usage:
        """The usage of an answer, priced from the registry (Batch API lines at the Batch price)."""
        usage = Usage.of(response.get("usage") if isinstance(response, dict) else getattr(response, "usage", None))
        model = (response.get("model") if isinstance(response, dict) else getattr(response, "model", None)) \
            or self.models.model_for(api)
        usage.cost_usd = registry().cost(model, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens,
                                         batch=batch)
        if usage.cost_usd:
            self._on_cost(model, "batch" if batch else "responses", usage.cost_usd)
        return usage

    # requests, shared with the batch JSONL builder
    def vision_body(self, image_urls: list[str], additional_info: str) -> dict[str, Any]:
        m = self.models
        return vision_request(m.vision_rules, image_urls, additional_info, max_tokens=m.max_tokens,
                              reasoning_effort=m.reasoning_effort)

    def translation_body(self, html: str, languages: list[str]) -> dict[str, Any]:
        m = self.models
        return translation_request(m.translation_rules, html, languages, max_tokens=m.max_tokens,
                                   reasoning_effort=m.translation_reasoning_effort, temperature=m.temperature)

    # direct calls
    def describe(self, image_urls: list[str], additional_info: str, photo_indexes: list[int]) -> VisionResult:
        response = self._call("vision", lambda: self.client.responses.create(**self.vision_body(image_urls, additional_info)))
        return self.read_vision(response, photo_indexes)

    def read_vision(self, response: Any, photo_indexes: list[int], batch: bool = False) -> VisionResult:
        """Findings repaired and counted, and the English HTML rendered from them (never model markup)."""
        usage = self.priced(response, "vision", batch)
        try:
            report, repairs = normalize(response_text(response), photo_indexes)
        except (ValueError, UnusableReport) as exc:
            self._on_error("vision")
            raise UnusableAnswer("OpenAI vision answer could not be used", str(exc), "vision", usage) from exc
        if repairs.dropped or repairs.fixed:
            self._on_repairs(repairs)
            log.info("vision answer repaired: %d findings dropped, %d fields fixed (%s)", repairs.dropped,
                     repairs.fixed, "; ".join(repairs.reasons[:5]))
        return VisionResult(html=sanitize_html(render_html(report)), report=report, usage=usage, repairs=repairs)

    def translate(self, html: str, languages: list[str]) -> TranslationResult:
        response = self._call("translation", lambda: self.client.responses.create(**self.translation_body(html, languages)))
        return self.read_translation(response, languages)

    def read_translation(self, response: Any, languages: list[str], batch: bool = False) -> TranslationResult:
        usage = self.priced(response, "translation", batch)
        try:
            texts = parse_translations(response_text(response), languages)
        except ValueError as exc:
            self._on_error("translation")
            raise UnusableAnswer("OpenAI translation answer could not be used", str(exc), "translation",
                                 usage) from exc
        return TranslationResult(texts=texts, usage=usage)

    def call(self, api: str, body: dict[str, Any]) -> dict[str, Any]:
        """One Responses call with a prepared body; the answer as the JSON a batch output line carries."""
        return self._call(api, lambda: self.client.responses.create(**body)).model_dump(mode="json")

    # the catalog
    def retrieve_model(self, model: str, timeout: float = 10.0) -> Any:
        """GET /v1/models/{model}, once, with a short timeout (raises the SDK's errors as they are)."""
        return self.client.with_options(timeout=timeout, max_retries=0).models.retrieve(model)

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
                        yield _load_line(line)
        except openai.OpenAIError as exc:
            self._on_error("batch")
            raise upstream_error(exc, "batch") from exc

    def delete_file(self, file_id: str) -> None:
        try:
            self.client.files.delete(file_id)
        except openai.OpenAIError:
            log.info("could not delete OpenAI file %s", file_id)


def _load_line(line: str) -> Any:
    """One line of a batch output file (orjson, cheaper per line; the standard parser for what it refuses)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
