"""The OpenAI sandbox, checked through the official SDK with strict response validation."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from services.sandbox import SandboxConfig, SandboxServer
from services.sandbox.schema_fill import fill_schema
from tests.support.sandbox_fixtures import clean, client, sandbox  # noqa: F401  (fixtures)

ALLOWED_TAGS = {"p", "ul", "li", "strong", "h3"}
TRANSLATION_SCHEMA = {
    "type": "object",
    "properties": {code: {"type": "string"} for code in ("ru", "de", "pt-BR")},
    "required": ["ru", "de", "pt-BR"],
    "additionalProperties": False,
}
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "summary_html": {"type": "string"},
        "severity": {"type": "string", "enum": ["none", "minor", "moderate", "severe"]},
        "panels_checked": {"type": "integer", "minimum": 1, "maximum": 12},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "drivable": {"type": "boolean"},
        "damages": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"$ref": "#/$defs/damage"}},
        "notes": {"anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]},
    },
    "required": ["summary_html", "severity", "panels_checked", "confidence", "drivable", "damages", "notes"],
    "additionalProperties": False,
    "$defs": {
        "damage": {
            "type": "object",
            "properties": {"part": {"type": "string"}, "kind": {"type": "string", "enum": ["dent", "scratch"]},
                           "size_cm": {"type": ["integer", "null"], "minimum": 1, "maximum": 80}},
            "required": ["part", "kind", "size_cm"],
            "additionalProperties": False,
        },
    },
}


# fixtures and helpers

@pytest.fixture
def http(sandbox):
    with httpx.Client(base_url=sandbox.root_url, headers={"Authorization": "Bearer sk-test", **sandbox.control_headers},
                      timeout=30) as c:
        yield c


def vision_input(urls: list[str], notes: str = "none") -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": f"Seller's notes: {notes}"}]
    content += [{"type": "input_image", "image_url": url, "detail": "auto"} for url in urls]
    return [{"role": "user", "content": content}]


def batch_line(custom_id: str, index: int, url: str = "/v1/responses") -> dict[str, Any]:
    body = {"model": "gpt-6.1-terra", "input": vision_input([f"https://img.example/{index}/front.jpg"])}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload_lines(client: OpenAI, lines: list[Any], name: str = "input.jsonl") -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=(name, io.BytesIO(text.encode()), "application/jsonl"), purpose="batch").id


def submit(client: OpenAI, count: int, metadata: dict[str, str] | None = None) -> Any:
    file_id = upload_lines(client, [batch_line(f"car-{i}", i) for i in range(count)])
    return client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h",
                                 metadata=metadata)


def wait_settled(client: OpenAI, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line.strip()]


def tags_in(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"</?([a-zA-Z0-9]+)", html)}


def check_schema(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> None:
    """A small JSON-schema checker covering what the structured-output schemas here use."""
    if "$ref" in schema:
        node: Any = root
        for token in schema["$ref"].lstrip("#/").split("/"):
            node = node[token]
        return check_schema(value, node, root, path)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                return check_schema(value, option, root, path)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: matches no anyOf branch: {errors}")
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in enum"
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    python = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
              "integer": int, "number": (int, float)}
    if kinds:
        assert any(isinstance(value, python[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                   for k in kinds), f"{path}: {value!r} is not {kinds}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key}"
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{path}: extra keys {set(value) - set(props)}"
        for key, item in value.items():
            if key in props:
                check_schema(item, props[key], root, f"{path}.{key}")
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{path}: too few items"
        assert len(value) <= schema.get("maxItems", len(value)), f"{path}: too many items"
        for i, item in enumerate(value):
            check_schema(item, schema.get("items", {}), root, f"{path}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value >= schema.get("minimum", value) and value <= schema.get("maximum", value), f"{path}: bounds"
    if isinstance(value, str):
        assert len(value) <= schema.get("maxLength", len(value)), f"{path}: too long"


# Responses and Chat Completions

def test_plain_text_response_parses_strictly_and_echoes(client):
    response = client.responses.create(model="gpt-4.1-mini", input="Say hello to the sandbox")
    assert isinstance(response, Response)
    assert response.status == "completed"
    assert "Say hello to the sandbox" in response.output_text
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert [item.type for item in response.output] == ["message"]


def test_vision_answer_is_deterministic_html_with_allowed_tags(client):
    urls = ["https://img.example/car-1/front.jpg", "https://img.example/car-1/rear.jpg"]
    first = client.responses.create(model="gpt-4.1", input=vision_input(urls, "small dent"))
    again = client.responses.create(model="gpt-4.1", input=vision_input(urls, "small dent"))
    assert first.output_text == again.output_text
    assert first.output_text.startswith("<p>")
    assert tags_in(first.output_text) <= ALLOWED_TAGS
    answers = {client.responses.create(model="gpt-4.1", input=vision_input([f"https://img.example/{i}.jpg"])).output_text
               for i in range(12)}
    assert len(answers) > 3


def test_some_photos_show_no_visible_damage(client):
    marked = client.responses.create(model="gpt-4.1", input=vision_input(["https://img.example/no-damage/1.jpg"]))
    assert "no visible damage" in marked.output_text.lower()
    texts = [client.responses.create(model="gpt-4.1", input=vision_input([f"https://img.example/{i}.jpg"])).output_text
             for i in range(40)]
    undamaged = [t for t in texts if "no visible damage" in t.lower()]
    assert 0 < len(undamaged) < len(texts)


def test_unsafe_markup_is_injected_only_when_enabled(client, sandbox):
    request = {"model": "gpt-4.1", "input": vision_input(["https://img.example/1.jpg"])}
    assert "<script" not in client.responses.create(**request).output_text
    sandbox.configure(inject_unsafe_markup=True)
    html = client.responses.create(**request).output_text
    assert "<script>" in html and "onclick=" in html and 'href="javascript:' in html


def test_reasoning_model_reports_reasoning_item_and_tokens(client):
    response = client.responses.create(model="gpt-6.1-terra", input=vision_input(["https://img.example/1.jpg"]),
                                       reasoning={"effort": "medium"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.usage.output_tokens > response.usage.output_tokens_details.reasoning_tokens


def test_reasoning_model_rejects_temperature_like_openai(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-6.1-terra", input="hi", temperature=0.2)
    assert caught.value.body["param"] == "temperature"


def test_usage_grows_with_text_and_images(client):
    short = client.responses.create(model="gpt-4.1", input="short")
    long = client.responses.create(model="gpt-4.1", input="a much longer question " * 40)
    one = client.responses.create(model="gpt-4.1", input=vision_input(["https://img.example/a.jpg"]))
    three = client.responses.create(model="gpt-4.1", input=vision_input([f"https://img.example/{i}.jpg" for i in "abc"]))
    assert long.usage.input_tokens > short.usage.input_tokens
    assert long.usage.output_tokens > short.usage.output_tokens
    assert three.usage.input_tokens > one.usage.input_tokens + 1000


def test_small_max_output_tokens_gives_incomplete_response(client):
    response = client.responses.create(model="gpt-6.1-terra", input=vision_input(["https://img.example/1.jpg"]),
                                       max_output_tokens=20)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens <= 20


def test_json_schema_output_validates_and_is_deterministic(client):
    fmt = {"type": "json_schema", "name": "report", "schema": REPORT_SCHEMA, "strict": True}
    request = {"model": "gpt-4.1", "input": vision_input(["https://img.example/7.jpg"]), "text": {"format": fmt}}
    first = client.responses.create(**request)
    document = json.loads(first.output_text)
    check_schema(document, REPORT_SCHEMA, REPORT_SCHEMA)
    assert tags_in(document["summary_html"]) <= ALLOWED_TAGS and document["summary_html"].startswith("<p>")
    assert client.responses.create(**request).output_text == first.output_text
    assert first.text.format.type == "json_schema"


def test_schema_generator_covers_recursion_refs_and_bounds():
    tree = {
        "$defs": {"node": {"type": "object", "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 10},
            "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
        }, "required": ["name", "weight", "children"], "additionalProperties": False}},
        "$ref": "#/$defs/node",
    }
    for seed in range(20):
        value = fill_schema(tree, seed)
        check_schema(value, tree["$defs"]["node"], tree)
        assert 3 <= len(value["name"]) <= 10 and 0 < value["weight"] <= 2
    assert fill_schema(tree, 1) == fill_schema(tree, 1)
    one_of = {"oneOf": [{"type": "integer", "minimum": 5, "maximum": 5}], "description": "five"}
    assert fill_schema(one_of, 3) == 5


def test_translation_keeps_every_tag_for_each_language(client):
    html = ("<p>The vehicle shows 2 damaged areas.</p><ul><li><strong>Front bumper</strong>: moderate dent."
            "</li><li><strong>Hood</strong>: minor scratch.</li></ul><h3>Photo coverage</h3><p>No rear view.</p>")
    response = client.responses.create(
        model="gpt-4.1-mini", instructions="Translate the HTML.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": html}]}],
        text={"format": {"type": "json_schema", "name": "translations", "strict": True, "schema": TRANSLATION_SCHEMA}})
    translations = json.loads(response.output_text)
    assert set(translations) == {"ru", "de", "pt-BR"}
    for code, translated in translations.items():
        assert re.findall(r"<[^>]+>", translated) == re.findall(r"<[^>]+>", html)
        assert re.sub(r"\[[a-zA-Z-]+\] ", "", translated) == html
        assert translated.startswith(f"<p>[{code}] The vehicle")
        assert f"<strong>[{code}] Front bumper</strong>" in translated


def test_chat_completion_with_image_and_json_schema_parses(client):
    messages = [{"role": "system", "content": "Inspect the car."},
                {"role": "user", "content": [{"type": "text", "text": "Photo:"},
                                             {"type": "image_url", "image_url": {"url": "https://img.example/1.jpg"}}]}]
    plain = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert isinstance(plain, ChatCompletion)
    assert tags_in(plain.choices[0].message.content) <= ALLOWED_TAGS
    structured = client.chat.completions.create(model="gpt-4o", messages=messages, response_format={
        "type": "json_schema", "json_schema": {"name": "report", "schema": REPORT_SCHEMA, "strict": True}})
    check_schema(json.loads(structured.choices[0].message.content), REPORT_SCHEMA, REPORT_SCHEMA)
    assert structured.usage.prompt_tokens > 700


def test_streaming_is_refused_with_400(http):
    reply = http.post("/v1/responses", json={"model": "gpt-4.1", "input": "hi", "stream": True})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "stream"


# errors and faults

def test_missing_or_wrong_key_is_401(sandbox, http):
    reply = httpx.post(f"{sandbox.url}/responses", json={"model": "gpt-4.1", "input": "hi"})
    assert reply.status_code == 401
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    sandbox.configure(required_api_key="sk-right")
    with OpenAI(api_key="sk-wrong", base_url=sandbox.url, max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.responses.create(model="gpt-4.1", input="hi")


def test_unknown_ids_and_urls_are_404(client, http):
    for call in (lambda: client.files.retrieve("file-nope"), lambda: client.files.content("file-nope"),
                 lambda: client.files.delete("file-nope"), lambda: client.batches.retrieve("batch_nope"),
                 lambda: client.batches.cancel("batch_nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    reply = http.get("/v1/nothing-here")
    assert reply.status_code == 404 and "Invalid URL" in reply.json()["error"]["message"]


def test_malformed_bodies_are_400_in_openai_shape(http):
    broken = http.post("/v1/responses", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    no_model = http.post("/v1/responses", json={"input": "hi"})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    bad_batch = http.post("/v1/batches", json={"input_file_id": "file-x", "endpoint": "/v1/embeddings",
                                               "completion_window": "24h"})
    assert bad_batch.status_code == 400 and bad_batch.json()["error"]["param"] == "endpoint"


def test_fail_next_statuses_map_to_sdk_exceptions(client, sandbox):
    sandbox.configure(fail_next=[429, 500])
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="gpt-4.1", input="hi")
    assert limited.value.response.headers["retry-after"] == "0"
    assert limited.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert client.responses.create(model="gpt-4.1", input="hi").status == "completed"
    assert sandbox.stats()["injected_faults"] == {"429": 1, "500": 1}


def test_sdk_retries_through_injected_faults_quickly(sandbox):
    sandbox.configure(fail_next=[429, 429, 500])
    started = time.monotonic()
    with OpenAI(api_key="sk-test", base_url=sandbox.url, max_retries=3) as retrying:
        assert retrying.responses.create(model="gpt-4.1", input="hi").status == "completed"
    assert time.monotonic() - started < 1.0
    assert sandbox.stats()["responses_calls"] == 4
    assert sandbox.config.fail_next == []


def test_random_faults_repeat_for_the_same_seed(client, sandbox):
    def outcomes() -> list[str]:
        sandbox.configure(fail_rate_429=0.3, fail_rate_500=0.2, fault_seed=11)
        seen = []
        for _ in range(20):
            try:
                client.responses.create(model="gpt-4.1", input="hi")
                seen.append("ok")
            except openai.APIStatusError as exc:
                seen.append(str(exc.status_code))
        return seen

    first = outcomes()
    sandbox.reset()
    assert outcomes() == first
    assert {"ok", "429", "500"} <= set(first)


def test_slow_next_makes_the_client_time_out_once(sandbox):
    sandbox.configure(slow_next=1, slow_seconds=1.0)
    with OpenAI(api_key="sk-test", base_url=sandbox.url, max_retries=0, timeout=0.3) as impatient:
        with pytest.raises(openai.APITimeoutError):
            impatient.responses.create(model="gpt-4.1", input="hi")
        assert impatient.responses.create(model="gpt-4.1", input="hi").status == "completed"
    assert sandbox.stats()["slow_calls"] == 1


def test_concurrent_vision_requests_overlap(client, sandbox):
    sandbox.configure(vision_latency=0.5)

    def call(i: int) -> Response:
        return client.responses.create(model="gpt-4.1", input=vision_input([f"https://img.example/{i}.jpg"]))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(call, range(10)))
    elapsed = time.monotonic() - started
    assert len(answers) == 10
    assert 0.5 <= elapsed < 2.0
    stats = sandbox.stats()
    assert stats["responses_vision_calls"] == 10 and stats["responses_text_calls"] == 0


# files

def test_file_create_retrieve_list_content_delete(client):
    ids = [client.files.create(file=(f"f{i}.jsonl", io.BytesIO(b'{"a": 1}\n'), "application/jsonl"),
                               purpose="batch").id for i in range(3)]
    retrieved = client.files.retrieve(ids[0])
    assert retrieved.bytes == 9 and retrieved.purpose == "batch" and retrieved.filename == "f0.jsonl"
    assert client.files.content(ids[1]).content == b'{"a": 1}\n'
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]
    first_page = client.files.list(limit=2)
    assert first_page.has_more is True and len(first_page.data) == 2
    deleted = client.files.delete(ids[0])
    assert deleted.deleted is True and deleted.id == ids[0]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[0])
    assert [f.id for f in client.files.list(purpose="batch")] == ids[:0:-1]


def test_batch_upload_requires_jsonl_name(client):
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("input.txt", io.BytesIO(b"{}\n"), "text/plain"), purpose="batch")


# batches

def test_batch_list_is_newest_first_and_auto_paginates(client):
    created = [submit(client, 1, {"shard": str(i)}).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more is True
    assert [b.id for b in client.batches.list(limit=2)] == created[::-1]


def test_batch_moves_through_every_status_with_timestamps(client, sandbox):
    sandbox.configure(batch_validating_seconds=0.3, batch_in_progress_seconds=0.8, batch_finalizing_seconds=0.3)
    batch = submit(client, 40)
    assert batch.status == "validating" and batch.expires_at == batch.created_at + 24 * 3600
    statuses, progress = [], []
    while batch.status != "completed":
        time.sleep(0.04)
        batch = client.batches.retrieve(batch.id)
        if not statuses or statuses[-1] != batch.status:
            statuses.append(batch.status)
        if batch.status == "in_progress":
            progress.append(batch.request_counts.completed)
    assert statuses == ["validating", "in_progress", "finalizing", "completed"]
    assert any(0 < done < 40 for done in progress) and progress == sorted(progress)
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.request_counts.completed == 40 and batch.usage.input_tokens > 0


def test_batch_output_is_shuffled_and_bodies_are_responses(client):
    batch = wait_settled(client, submit(client, 30).id)
    assert batch.status == "completed" and batch.error_file_id is None
    lines = jsonl(client, batch.output_file_id)
    order = [line["custom_id"] for line in lines]
    assert sorted(order) == sorted(f"car-{i}" for i in range(30))
    assert order != [f"car-{i}" for i in range(30)]
    for line in lines:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        body = Response.model_validate(line["response"]["body"])
        assert body.usage.output_tokens_details.reasoning_tokens > 0
        assert tags_in(body.output_text) <= ALLOWED_TAGS


def test_chat_batch_bodies_are_chat_completions(client):
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {i}"}]}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload_lines(client, lines), endpoint="/v1/chat/completions",
                                  completion_window="24h")
    output = jsonl(client, wait_settled(client, batch.id).output_file_id)
    assert len(output) == 3
    for line in output:
        ChatCompletion.model_validate(line["response"]["body"])


def test_line_failures_go_to_error_file_and_every_line_appears_once(client, sandbox):
    sandbox.configure(batch_fail_custom_ids=["car-3", "car-7"], batch_line_failure_rate=0.2)
    batch = wait_settled(client, submit(client, 50).id)
    output, errors = jsonl(client, batch.output_file_id), jsonl(client, batch.error_file_id)
    assert {"car-3", "car-7"} <= {line["custom_id"] for line in errors}
    assert sorted(line["custom_id"] for line in output + errors) == sorted(f"car-{i}" for i in range(50))
    for line in errors:
        assert line["response"]["status_code"] == 500 and line["response"]["body"]["error"]["type"] == "server_error"
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(output), len(errors))


def test_invalid_line_in_body_is_reported_as_400_line(client):
    lines = [batch_line("ok", 1), {"custom_id": "bad", "method": "POST", "url": "/v1/responses",
                                   "body": {"model": "gpt-6.1-terra"}}]
    batch = wait_settled(client, client.batches.create(input_file_id=upload_lines(client, lines),
                                                       endpoint="/v1/responses", completion_window="24h").id)
    [error] = jsonl(client, batch.error_file_id)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "input"


def test_expired_outcome_applies_to_the_next_batch_only(client, sandbox):
    sandbox.configure(batch_outcome="expired", batch_outcome_count=1)
    first = submit(client, 20)
    assert sandbox.config.batch_outcome == "completed" and sandbox.config.batch_outcome_count is None
    expired = wait_settled(client, first.id)
    assert expired.status == "expired" and expired.expired_at is not None
    done, leftover = jsonl(client, expired.output_file_id), jsonl(client, expired.error_file_id)
    assert len(done) == 10 and len(leftover) == 10
    for line in leftover:
        assert line["response"] is None
        assert line["error"] == {"code": "batch_expired",
                                 "message": "This request could not be executed before the completion window expired."}
    assert sorted(line["custom_id"] for line in done + leftover) == sorted(f"car-{i}" for i in range(20))
    assert wait_settled(client, submit(client, 5).id).status == "completed"


def test_failed_outcome_reports_errors_and_no_files(client, sandbox):
    sandbox.configure(batch_outcome="failed")
    batch = wait_settled(client, submit(client, 3).id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors.data[0].code == "token_limit_exceeded"
    assert batch.output_file_id is None and batch.error_file_id is None


def test_invalid_input_lines_fail_the_batch_with_line_errors(client):
    lines = [batch_line("a", 1), "{not json", {"method": "POST", "url": "/v1/responses", "body": {}},
             batch_line("a", 2), batch_line("b", 3, url="/v1/chat/completions"),
             {**batch_line("c", 4), "method": "GET"}]
    batch = wait_settled(client, client.batches.create(input_file_id=upload_lines(client, lines),
                                                       endpoint="/v1/responses", completion_window="24h").id)
    assert batch.status == "failed"
    assert batch.errors.object == "list"
    found = [(e.code, e.line) for e in batch.errors.data]
    assert found == [("invalid_json_line", 2), ("missing_required_parameter", 3), ("duplicate_custom_id", 4),
                     ("url_mismatch", 5), ("invalid_method", 6)]


def test_missing_or_wrong_purpose_input_file_fails_the_batch(client):
    missing = client.batches.create(input_file_id="file-missing", endpoint="/v1/responses", completion_window="24h")
    assert wait_settled(client, missing.id).errors.data[0].param == "input_file_id"
    user_file = client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n"), "application/jsonl"), purpose="user_data")
    wrong = client.batches.create(input_file_id=user_file.id, endpoint="/v1/responses", completion_window="24h")
    assert wait_settled(client, wrong.id).status == "failed"


def test_deleting_the_input_file_after_create_does_not_break_the_batch(client):
    batch = submit(client, 4)
    client.files.delete(batch.input_file_id)
    assert len(jsonl(client, wait_settled(client, batch.id).output_file_id)) == 4


def test_cancel_keeps_finished_lines_and_marks_the_rest_cancelled(client, sandbox):
    sandbox.configure(batch_in_progress_seconds=1.0, batch_cancelling_seconds=0.2)
    batch = submit(client, 40)
    time.sleep(0.5)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = wait_settled(client, batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    done, rest = jsonl(client, cancelled.output_file_id), jsonl(client, cancelled.error_file_id)
    assert 0 < len(done) < 40 and len(done) == cancelled.request_counts.completed
    assert all(line["error"]["code"] == "batch_cancelled" for line in rest)
    assert sorted(line["custom_id"] for line in done + rest) == sorted(f"car-{i}" for i in range(40))
    assert client.batches.cancel(batch.id).status == "cancelled"


def test_cancelling_a_completed_batch_is_a_conflict(client):
    batch = wait_settled(client, submit(client, 2).id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_batch_of_50000_three_kilobyte_lines_completes(client, tmp_path):
    """Its time is measured by bench/sandbox_batch.py."""
    notes = "Seller says small dent on the rear bumper, otherwise fine. " * 19
    path = tmp_path / "big.jsonl"
    with path.open("w") as fh:
        for i in range(50_000):
            body = {"model": "gpt-6.1-terra", "instructions": notes,
                    "input": vision_input([f"https://img.example/{i}/{k}.jpg" for k in range(6)], notes)}
            fh.write(json.dumps({"custom_id": f"car-{i}", "method": "POST", "url": "/v1/responses", "body": body}) + "\n")
    assert 140_000_000 < path.stat().st_size < 200_000_000
    with path.open("rb") as fh:
        file_id = client.files.create(file=("big.jsonl", fh, "application/jsonl"), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h")
    path.unlink()
    settled = wait_settled(client, batch.id, timeout=300)
    assert settled.status == "completed" and settled.request_counts.completed == 50_000


# control endpoints and stats

def test_config_endpoint_updates_partially_and_reset_restores(sandbox, http):
    updated = http.post("/sandbox/config", json={"vision_latency": 0.25, "fail_next": [503]}).json()
    assert updated["vision_latency"] == 0.25 and updated["fail_next"] == [503] and updated["text_latency"] == 0.0
    assert http.get("/sandbox/config").json() == updated
    assert http.post("/sandbox/config", json={"no_such_knob": 1}).status_code == 400
    assert http.post("/sandbox/config", json={"fail_rate_429": 2}).status_code == 400
    http.post("/sandbox/reset")
    assert http.get("/sandbox/config").json() == SandboxConfig().to_dict()


def test_stats_count_calls_and_batches_by_metadata(client, http):
    client.responses.create(model="gpt-4.1", input="hi")
    client.responses.create(model="gpt-4.1", input=vision_input(["https://img.example/1.jpg"]))
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    submit(client, 1, {"job": "7", "shard": "0"})
    submit(client, 1, {"shard": "1", "job": "7"})
    submit(client, 1, {"job": "7", "shard": "0"})
    stats = http.get("/sandbox/stats").json()
    assert (stats["responses_calls"], stats["responses_vision_calls"], stats["responses_text_calls"]) == (2, 1, 1)
    assert stats["chat_calls"] == 1 and stats["files_uploaded"] == 3 and stats["batches_created"] == 3
    assert stats["batch_creates_by_metadata"] == {"job=7,shard=0": 2, "job=7,shard=1": 1}
    http.post("/sandbox/reset")
    assert http.get("/sandbox/stats").json()["batches_created"] == 0


def test_standalone_module_serves_until_terminated():
    process = subprocess.Popen([sys.executable, "-m", "services.sandbox", "--port", "0", "--text-latency", "0.1"],
                               stdout=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        banner = process.stdout.readline()
        base = re.search(r"(http://\S+)/v1", banner).group(1)
        token = process.stdout.readline().rsplit(" ", 1)[-1].strip()
        assert httpx.get(f"{base}/sandbox/config").status_code == 401
        config = httpx.get(f"{base}/sandbox/config", headers={"Authorization": f"Bearer {token}"})
        assert config.json()["text_latency"] == 0.1
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()


def ran_ahead(sandbox, batch_id: str, timeout: float = 10.0):
    """The sandbox's record of a batch, once its lines have run ahead (or the timeout passed)."""
    record = sandbox.state._batches[batch_id]
    deadline = time.monotonic() + timeout
    while record.prepared is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return record


def test_a_batch_runs_its_lines_ahead_and_shows_them_only_once_completed(client, sandbox):
    """As OpenAI works on a batch whether or not anyone asks, the sandbox runs a batch's lines on its own
    thread soon after it is created; its output is published only when the batch's clock says completed."""
    sandbox.configure(batch_in_progress_seconds=3)
    batch = submit(client, 200)
    record = ran_ahead(sandbox, batch.id)
    running = client.batches.retrieve(batch.id)
    assert record.prepared is not None and running.status == "in_progress", running.status
    assert running.output_file_id is None and sandbox.stats()["batch_lines_executed"] == 0
    done = wait_settled(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 200
    assert sorted(line["custom_id"] for line in jsonl(client, done.output_file_id)) == sorted(
        f"car-{i}" for i in range(200))
    assert sandbox.stats()["batch_lines_executed"] == 200


def test_a_batch_cancelled_after_its_lines_ran_ahead_keeps_only_what_ran_before_the_cancel(client, sandbox):
    sandbox.configure(batch_in_progress_seconds=60)
    batch = submit(client, 50)
    assert ran_ahead(sandbox, batch.id).prepared is not None
    client.batches.cancel(batch.id)
    done = wait_settled(client, batch.id)
    assert done.status == "cancelled"
    errors = jsonl(client, done.error_file_id)
    executed = len(jsonl(client, done.output_file_id))
    assert executed + len(errors) == 50 and executed < 5  # a second or two of a 60-second batch
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors if line["response"] is None)
