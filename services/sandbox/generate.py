"""Deterministic answers: the same request body always yields the same text and token counts.

``respond(endpoint, body)`` is shared by the synchronous endpoints and the batch runner, so
a batch output line's ``response.body`` is exactly what the direct call would have returned
(apart from ids and timestamps).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

from services.sandbox import ids
from services.sandbox.catalog import Catalog
from services.sandbox.damage_report import damage_report, is_damage_report
from services.sandbox.errors import invalid_request
from services.sandbox.html_text import UNSAFE_MARKUP, contains_html, damage_html, extract_html, translate_html
from services.sandbox.prompt import Prompt, parse_chat_body, parse_responses_body
from services.sandbox.prompt_cache import CHARS_PER_TOKEN, PromptCache, prompt_stream
from services.sandbox.rules import apply_rules
from services.sandbox.schema_fill import fill_schema, seed_from

RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
ENDPOINTS = (RESPONSES, CHAT)

_ISO_639_1 = frozenset("""aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv
cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig
ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn
mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk
sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za
zh zu""".split())
_LANGUAGE_CODE = re.compile(r"^([a-z]{2})(?:[-_](?:[A-Za-z]{2}|\d{3}))?$")
_EFFORT_TOKENS = {"none": 16, "minimal": 32, "low": 96, "medium": 256, "high": 768, "xhigh": 1536, "max": 3072}
IMAGE_TOKENS = {"low": 85}
DEFAULT_IMAGE_TOKENS = 765


@dataclass
class Answer:
    text: str
    input_tokens: int
    image_tokens: int
    output_tokens: int
    reasoning_tokens: int
    incomplete: bool
    cached_tokens: int = 0


def respond(endpoint: str, body: Any, *, catalog: Catalog, cache: PromptCache | None = None, unsafe: bool = False,
            now: float | None = None) -> dict[str, Any]:
    """The JSON object the endpoint returns for this body; raises ApiError (400, 404) for what OpenAI refuses."""
    if endpoint == RESPONSES:
        prompt = parse_responses_body(body)
        apply_rules(catalog, prompt)
        return response_object(body, prompt, answer(prompt, unsafe=unsafe, cache=cache), now)
    if endpoint == CHAT:
        prompt = parse_chat_body(body)
        apply_rules(catalog, prompt, chat=True)
        return chat_completion_object(body, prompt, answer(prompt, unsafe=unsafe, cache=cache), now)
    raise invalid_request(f"Unsupported endpoint: {endpoint}", "url")


def answer(prompt: Prompt, *, unsafe: bool = False, cache: PromptCache | None = None) -> Answer:
    text = _answer_text(prompt, unsafe)
    per_image = [IMAGE_TOKENS.get(d, DEFAULT_IMAGE_TOKENS) for d in prompt.image_details]
    image_tokens = sum(per_image)
    stream = prompt_stream(prompt, per_image)
    input_tokens = 7 + len(stream) // CHARS_PER_TOKEN
    cached = cache.cached_tokens(prompt.model, stream) if cache is not None else 0
    reasoning = _reasoning_tokens(prompt)
    visible = max(1, math.ceil(len(text) / 4))
    limit = prompt.max_output_tokens
    incomplete = limit is not None and reasoning + visible > limit
    if incomplete:
        reasoning = min(reasoning, limit)
        visible = limit - reasoning
        text = text[: visible * 4] if visible else ""
    return Answer(text, input_tokens, image_tokens, reasoning + visible, reasoning, incomplete, cached)


def _answer_text(prompt: Prompt, unsafe: bool) -> str:
    kind = prompt.text_format.get("type")
    if kind == "json_schema":
        return json.dumps(_structured(prompt, unsafe), ensure_ascii=False)
    if kind == "json_object":
        return json.dumps({"text": _echo(prompt)}, ensure_ascii=False)
    if prompt.is_vision:
        return damage_html(prompt.image_urls, "\n".join(prompt.texts), unsafe=unsafe)
    return _echo(prompt)


def _echo(prompt: Prompt) -> str:
    said = " ".join(" ".join(prompt.texts).split())
    if not said:
        return "Sandbox answer: there was no text to reply to."
    snippet = said if len(said) <= 240 else said[:237] + "..."
    return f"Sandbox answer to your message ({len(said)} characters): {snippet}"


def _structured(prompt: Prompt, unsafe: bool) -> Any:
    if prompt.is_vision and is_damage_report(prompt.schema):
        return damage_report(prompt.schema, prompt.image_urls, "\n".join(prompt.texts))
    source = _html_source(prompt)
    vision_html = damage_html(prompt.image_urls, "\n".join(prompt.texts), unsafe=unsafe) if prompt.is_vision else None

    def object_for(schema: Mapping[str, Any]) -> dict[str, Any] | None:
        codes = _language_properties(schema) if source is not None else None
        extra = UNSAFE_MARKUP if unsafe else ""
        return {code: translate_html(source, code) + extra for code in codes} if codes else None

    def string_for(name: str, schema: Mapping[str, Any]) -> str | None:
        if vision_html is not None and ("html" in name.lower() or "description" in name.lower()):
            return vision_html
        return None

    seed = seed_from("schema", prompt.texts, prompt.image_urls, prompt.schema)
    return fill_schema(prompt.schema or {}, seed, string_for=string_for, object_for=object_for)


def _html_source(prompt: Prompt) -> str | None:
    """The HTML to translate: the longest user text that carries HTML, without the words around it."""
    html_texts = [t for t in prompt.texts if contains_html(t)]
    return extract_html(max(html_texts, key=len)) if html_texts else None


def _language_properties(schema: Mapping[str, Any]) -> list[str] | None:
    """Property names when they are all language codes with string values (the translation contract)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return None
    for name, sub in properties.items():
        match = _LANGUAGE_CODE.match(name)
        if not match or match.group(1) not in _ISO_639_1 or not _accepts_string(sub):
            return None
    return list(properties)


def _accepts_string(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    declared = schema.get("type")
    if declared == "string" or (isinstance(declared, list) and "string" in declared):
        return "enum" not in schema
    options = schema.get("anyOf") or schema.get("oneOf")
    return isinstance(options, list) and any(_accepts_string(o) for o in options)


def _reasoning_tokens(prompt: Prompt) -> int:
    if not prompt.is_reasoning:
        return 0
    base = _EFFORT_TOKENS[prompt.effort]
    return base + seed_from("reasoning", prompt.texts, prompt.image_urls) % base


def response_object(body: Mapping[str, Any], prompt: Prompt, ans: Answer, now: float | None) -> dict[str, Any]:
    created = int(now or time.time())
    output: list[dict[str, Any]] = []
    if prompt.is_reasoning:
        output.append({"id": ids.reasoning_id(), "type": "reasoning", "summary": []})
    if ans.text or not ans.incomplete:
        output.append({
            "id": ids.message_id(), "type": "message", "role": "assistant",
            "status": "incomplete" if ans.incomplete else "completed",
            "content": [{"type": "output_text", "text": ans.text, "annotations": [], "logprobs": []}],
        })
    fmt = dict(prompt.text_format)
    return {
        "id": ids.response_id(),
        "object": "response",
        "created_at": created,
        "status": "incomplete" if ans.incomplete else "completed",
        "background": False,
        "completed_at": None if ans.incomplete else created,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if ans.incomplete else None,
        "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
        "max_output_tokens": prompt.max_output_tokens,
        "max_tool_calls": None,
        "model": prompt.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": prompt.effort, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": prompt.store,
        "temperature": _number(body, "temperature"),
        "text": {"format": fmt, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": _number(body, "top_p"),
        "truncation": "disabled",
        "usage": {
            "input_tokens": ans.input_tokens,
            "input_tokens_details": {"cached_tokens": ans.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": ans.output_tokens,
            "output_tokens_details": {"reasoning_tokens": ans.reasoning_tokens},
            "total_tokens": ans.input_tokens + ans.output_tokens,
        },
        "user": None,
        "metadata": _metadata(body),
    }


def chat_completion_object(body: Mapping[str, Any], prompt: Prompt, ans: Answer,
                           now: float | None) -> dict[str, Any]:
    return {
        "id": ids.chat_completion_id(),
        "object": "chat.completion",
        "created": int(now or time.time()),
        "model": prompt.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ans.text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "length" if ans.incomplete else "stop",
        }],
        "usage": {
            "prompt_tokens": ans.input_tokens,
            "completion_tokens": ans.output_tokens,
            "total_tokens": ans.input_tokens + ans.output_tokens,
            "prompt_tokens_details": {"cached_tokens": ans.cached_tokens, "audio_tokens": 0,
                                      "image_tokens": ans.image_tokens},
            "completion_tokens_details": {"reasoning_tokens": ans.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_sandbox",
    }


def _number(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key)
    return 1.0 if value is None else float(value)


def _metadata(body: Mapping[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        return {str(k): str(v) for k, v in metadata.items()}
    return {}


def usage_totals(obj: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, reasoning, cached input) tokens of a Response or ChatCompletion object."""
    usage = obj.get("usage") or {}
    if "prompt_tokens" in usage:
        details = usage.get("completion_tokens_details") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return usage["prompt_tokens"], usage["completion_tokens"], details.get("reasoning_tokens") or 0, cached
    details = usage.get("output_tokens_details") or {}
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    return usage.get("input_tokens", 0), usage.get("output_tokens", 0), details.get("reasoning_tokens", 0), cached
