"""Prompt: what a /v1/responses or /v1/chat/completions body asks for, validated like OpenAI does."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from services.sandbox.errors import invalid_request, invalid_type, missing_parameter

_RESPONSE_FORMATS = ("text", "json_schema", "json_object")


@dataclass
class Prompt:
    model: str
    instructions: str = ""
    texts: list[str] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    image_details: list[str] = field(default_factory=list)
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    max_output_tokens: int | None = None
    max_tokens_param: str = "max_output_tokens"
    reasoning_effort: str | None = None
    reasoning_sent: bool = False
    effort_param: str = "reasoning.effort"
    sampling: dict[str, float] = field(default_factory=dict)
    store: bool = True
    # what the prompt cache sees, in order: the instructions field, then every input part as it came
    lead: str = ""
    segments: list[tuple[str, str]] = field(default_factory=list)
    # set from the model's catalog entry: the effort it runs at (None for a model that does not reason)
    effort: str | None = None

    @property
    def is_vision(self) -> bool:
        return bool(self.image_urls)

    @property
    def schema(self) -> dict[str, Any] | None:
        return self.text_format.get("schema") if self.text_format.get("type") == "json_schema" else None

    @property
    def is_reasoning(self) -> bool:
        """A reasoning model at an effort other than none."""
        return self.effort not in (None, "none")


def has_image(endpoint: str, body: Any) -> bool:
    """Whether a body carries an image part, tolerating malformed bodies (used before validation)."""
    if not isinstance(body, Mapping):
        return False
    items = body.get("input") if endpoint == "/v1/responses" else body.get("messages")
    if not isinstance(items, list):
        return False
    for item in items:
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, list) and any(
                isinstance(p, Mapping) and p.get("type") in ("input_image", "image_url") for p in content):
            return True
    return False


def parse_responses_body(body: Any) -> Prompt:
    body = _object_body(body)
    if body.get("stream"):
        raise invalid_request("Streaming is not supported by the sandbox; send stream=false.", "stream",
                              "unsupported_value")
    prompt = Prompt(model=_model(body))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid_type("instructions", "a string")
    prompt.instructions = prompt.lead = instructions or ""
    if "input" not in body:
        raise missing_parameter("input")
    _read_responses_input(body["input"], prompt)
    prompt.text_format = _responses_format(body.get("text"))
    prompt.max_output_tokens = _positive_int(body, "max_output_tokens")
    prompt.reasoning_sent = body.get("reasoning") is not None
    prompt.reasoning_effort = _reasoning_effort(body.get("reasoning"))
    prompt.store = _store(body)
    _read_sampling(body, prompt)
    return prompt


def parse_chat_body(body: Any) -> Prompt:
    body = _object_body(body)
    if body.get("stream"):
        raise invalid_request("Streaming is not supported by the sandbox; send stream=false.", "stream",
                              "unsupported_value")
    prompt = Prompt(model=_model(body))
    messages = body.get("messages")
    if messages is None:
        raise missing_parameter("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_type("messages", "a non-empty array")
    for i, message in enumerate(messages):
        _read_chat_message(message, f"messages[{i}]", prompt)
    prompt.text_format = _chat_format(body.get("response_format"))
    for key in ("max_completion_tokens", "max_tokens"):
        prompt.max_output_tokens = _positive_int(body, key)
        if prompt.max_output_tokens is not None:
            prompt.max_tokens_param = key
            break
    effort = body.get("reasoning_effort")
    if effort is not None and not isinstance(effort, str):
        raise invalid_type("reasoning_effort", "a string")
    prompt.reasoning_sent = effort is not None
    prompt.reasoning_effort = effort
    prompt.effort_param = "reasoning_effort"
    prompt.store = _store(body)
    _read_sampling(body, prompt)
    return prompt


def _object_body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise invalid_request("Invalid body: the request body must be a JSON object.")
    return body


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise missing_parameter("model")
    if not isinstance(model, str) or not model:
        raise invalid_type("model", "a non-empty string")
    return model


def _read_responses_input(value: Any, prompt: Prompt) -> None:
    if isinstance(value, str):
        _add_text(prompt, "user", value)
        return
    if not isinstance(value, list):
        raise invalid_type("input", "a string or an array of input items")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise invalid_type(f"input[{i}]", "an object")
        role = item.get("role")
        content = item.get("content")
        if isinstance(content, str):
            _add_text(prompt, role, content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                _read_responses_part(part, f"input[{i}].content[{j}]", role, prompt)
        elif item.get("type") in (None, "message"):
            raise missing_parameter(f"input[{i}].content")
        elif isinstance(item.get("output"), str):
            _add_text(prompt, "tool", item["output"])


def _read_responses_part(part: Any, where: str, role: Any, prompt: Prompt) -> None:
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise invalid_type(where, "an object with a 'type'")
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise missing_parameter(f"{where}.text")
        _add_text(prompt, role, part["text"])
    elif kind == "input_image":
        url = part.get("image_url") or (f"file:{part['file_id']}" if part.get("file_id") else None)
        if not isinstance(url, str):
            raise missing_parameter(f"{where}.image_url")
        _add_image(prompt, url, str(part.get("detail") or "auto"))
    elif kind not in ("input_file", "input_audio", "refusal"):
        raise invalid_request(f"Invalid value: '{kind}'. Supported values are: 'input_text', 'input_image', "
                              f"'input_file'.", f"{where}.type", "invalid_value")


def _add_text(prompt: Prompt, role: Any, text: str) -> None:
    """System and developer text joins the instructions; everything else is the user's text."""
    prompt.segments.append(("text", text))
    if role in ("system", "developer"):
        prompt.instructions = f"{prompt.instructions}\n{text}".strip()
    else:
        prompt.texts.append(text)


def _read_chat_message(message: Any, where: str, prompt: Prompt) -> None:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise invalid_type(where, "an object with a 'role'")
    content = message.get("content")
    if isinstance(content, str):
        _add_text(prompt, message["role"], content)
        return
    if content is None:
        return
    if not isinstance(content, list):
        raise invalid_type(f"{where}.content", "a string or an array of content parts")
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise invalid_type(f"{where}.content[{j}]", "an object")
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            _add_text(prompt, message["role"], part["text"])
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                raise missing_parameter(f"{where}.content[{j}].image_url.url")
            _add_image(prompt, url, str((image.get("detail") if isinstance(image, Mapping) else None) or "auto"))


def _add_image(prompt: Prompt, url: str, detail: str) -> None:
    prompt.segments.append(("image", f"{detail} {url}"))
    prompt.image_urls.append(url)
    prompt.image_details.append(detail)


def _responses_format(text: Any) -> dict[str, Any]:
    if text is None:
        return {"type": "text"}
    if not isinstance(text, Mapping):
        raise invalid_type("text", "an object")
    fmt = text.get("format")
    if fmt is None:
        return {"type": "text"}
    return _format(fmt, "text.format", fmt)


def _chat_format(response_format: Any) -> dict[str, Any]:
    if response_format is None:
        return {"type": "text"}
    if not isinstance(response_format, Mapping):
        raise invalid_type("response_format", "an object")
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema")
        if not isinstance(inner, Mapping):
            raise missing_parameter("response_format.json_schema")
        return _format({**inner, "type": "json_schema"}, "response_format.json_schema", inner)
    return _format(response_format, "response_format", response_format)


def _format(fmt: Any, where: str, source: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fmt, Mapping):
        raise invalid_type(where, "an object")
    kind = fmt.get("type")
    if kind not in _RESPONSE_FORMATS:
        raise invalid_request(f"Invalid value: '{kind}'. Supported values are: 'text', 'json_schema', and "
                              f"'json_object'.", f"{where}.type", "invalid_value")
    if kind != "json_schema":
        return {"type": kind}
    name = source.get("name")
    if not isinstance(name, str) or not name:
        raise missing_parameter(f"{where}.name")
    schema = source.get("schema")
    if not isinstance(schema, Mapping):
        raise missing_parameter(f"{where}.schema")
    return {"type": "json_schema", "name": name, "schema": dict(schema),
            "strict": bool(source.get("strict", False)), "description": source.get("description")}


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_request(f"Invalid '{key}': expected a positive integer.", key, "invalid_value")
    return value


def _reasoning_effort(reasoning: Any) -> str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, Mapping):
        raise invalid_type("reasoning", "an object")
    effort = reasoning.get("effort")
    return effort if isinstance(effort, str) else None


def _store(body: Mapping[str, Any]) -> bool:
    store = body.get("store")
    if store is None:
        return True
    if not isinstance(store, bool):
        raise invalid_type("store", "a boolean")
    return store


def _read_sampling(body: Mapping[str, Any], prompt: Prompt) -> None:
    """Range checks of the sampling settings; whether the model takes them is the catalog's rule."""
    for key, high in (("temperature", 2.0), ("top_p", 1.0), ("top_logprobs", 20)):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise invalid_request(f"Invalid '{key}': expected a number between 0 and {high:g}.", key, "invalid_value")
        prompt.sampling[key] = value
