"""The sandbox as strict as OpenAI on the catalog's date: models, per-model request rules, batch validation,
prompt caching, ``store`` and the token on its control endpoints. Everything goes through the official SDK
(or plain HTTP where the SDK has no call) against a sandbox on 127.0.0.1."""
from __future__ import annotations

import io
import json
import socket
import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from services.sandbox import SandboxServer
from services.sandbox.__main__ import parse_args
from services.sandbox.catalog import CATALOG_PATH, base_catalog
from services.sandbox.prompt_cache import PromptCache
from tests.support.sandbox_fixtures import clean, client, sandbox  # noqa: F401  (fixtures)

GPT6_ALL = ["none", "low", "medium", "high", "xhigh", "max"]
GPT6_NO_NONE = ["low", "medium", "high", "xhigh", "max"]
ACTIVE = {"gpt-6.2-astra": GPT6_NO_NONE, "gpt-6.2-sol": GPT6_NO_NONE, "gpt-6.1-terra": GPT6_ALL,
          "gpt-6-luna": GPT6_ALL, "gpt-6-astra": GPT6_NO_NONE, "gpt-6.1-sol": GPT6_NO_NONE, "gpt-6-sol": GPT6_NO_NONE}
DEPRECATED = {"gpt-5": "2026-12-11", "gpt-5-mini": "2026-12-11", "gpt-5-nano": "2026-12-11", "o3": "2026-12-11",
              "gpt-5.1": "2027-04-01", "gpt-4.1": "2027-01-14", "gpt-4.1-mini": "2027-01-14", "gpt-4o": "2027-01-14",
              "gpt-4o-mini": "2027-01-14"}
SHUT_DOWN = ["o4-mini", "o3-mini", "o1", "o1-pro", "gpt-4.1-nano", "gpt-4", "gpt-4-turbo", "gpt-3.5-turbo",
             "o4-mini-2025-04-16", "gpt-3.5-turbo-0125"]
SAMPLING = {"temperature": 0.2, "top_p": 0.9, "top_logprobs": 2}
PHOTO = "https://img.example/lot-1/front.jpg"
SCHEMA = {"type": "object", "properties": {"summary_html": {"type": "string"}}, "required": ["summary_html"],
          "additionalProperties": False}


@pytest.fixture
def control(sandbox):
    with httpx.Client(base_url=sandbox.root_url, headers=sandbox.control_headers, timeout=30) as c:
        yield c


def not_found_body(model: str) -> dict[str, Any]:
    return {"message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"}


def unsupported_parameter_body(param: str) -> dict[str, Any]:
    return {"message": f"Unsupported parameter: '{param}' is not supported with this model.",
            "type": "invalid_request_error", "param": param, "code": "unsupported_parameter"}


def refused(call, error=openai.BadRequestError) -> Any:
    with pytest.raises(error) as caught:
        call()
    return caught.value


def upload_lines(client: OpenAI, lines: list[dict[str, Any]]) -> str:
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=("input.jsonl", io.BytesIO(text.encode()), "application/jsonl"),
                               purpose="batch").id


def run_batch(client: OpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/responses") -> Any:
    batch = client.batches.create(input_file_id=upload_lines(client, lines), endpoint=endpoint,
                                  completion_window="24h")
    deadline = time.monotonic() + 20
    while batch.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    return batch


def line(custom_id: str, body: dict[str, Any], url: str = "/v1/responses") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()] if file_id else []


# the catalog and /v1/models

def test_catalog_file_is_dated_and_names_its_sources():
    with open(CATALOG_PATH, encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["checked"] == "2026-12-01"
    assert any("developers.openai.com/api/docs/deprecations" in url for url in data["sources"])
    assert base_catalog().checked == "2026-12-01"


def test_models_list_has_every_served_model_with_its_shutdown_date_and_no_retired_one(client):
    models = {m.id: m for m in client.models.list()}
    for model in ACTIVE:
        assert models[model].shutdown_date is None
    for model, day in DEPRECATED.items():
        assert models[model].shutdown_date == day
    assert models["gpt-4.1-mini-2025-04-14"].shutdown_date == "2027-01-14"
    assert not set(SHUT_DOWN) & set(models)
    assert all(m.object == "model" and m.owned_by == "system" and m.created > 0 for m in models.values())


def test_models_list_answers_openai_object_shapes(sandbox):
    answer = httpx.get(f"{sandbox.url}/models", headers={"Authorization": "Bearer sk-test"}).json()
    assert answer["object"] == "list"
    assert all(set(m) == {"id", "object", "created", "owned_by", "shutdown_date"} for m in answer["data"])


def test_retrieve_shows_a_deprecated_models_date(client):
    model = client.models.retrieve("gpt-4.1-mini")
    assert (model.id, model.object, model.shutdown_date) == ("gpt-4.1-mini", "model", "2027-01-14")
    assert client.models.retrieve("gpt-6.1-terra").shutdown_date is None


@pytest.mark.parametrize("model", SHUT_DOWN + ["gpt-7-imaginary", "gpt-6.1-terra-2020-01-01"])
def test_retrieving_a_shut_down_or_unknown_model_is_model_not_found(client, model):
    error = refused(lambda: client.models.retrieve(model), openai.NotFoundError)
    assert error.status_code == 404 and error.code == "model_not_found" and error.param is None
    assert error.body == not_found_body(model)


# direct calls: model_not_found

@pytest.mark.parametrize("model", ["o4-mini", "gpt-3.5-turbo", "no-such-model"])
def test_a_call_to_a_shut_down_or_unknown_model_is_404_model_not_found(client, model):
    error = refused(lambda: client.responses.create(model=model, input="hi"), openai.NotFoundError)
    assert error.body == not_found_body(model)
    chat = refused(lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]),
                   openai.NotFoundError)
    assert chat.code == "model_not_found"


# the GPT-6 rule: sampling parameters only at effort none

@pytest.mark.parametrize("model", sorted(ACTIVE))
@pytest.mark.parametrize("param", sorted(SAMPLING))
def test_gpt6_refuses_sampling_parameters_at_the_default_effort(client, model, param):
    error = refused(lambda: client.responses.create(model=model, input="hi", **{param: SAMPLING[param]}))
    assert error.status_code == 400 and error.code == "unsupported_parameter" and error.param == param
    assert error.body == unsupported_parameter_body(param)


@pytest.mark.parametrize("effort", ["low", "high", "max"])
def test_gpt6_refuses_temperature_at_any_effort_but_none(client, effort):
    error = refused(lambda: client.responses.create(model="gpt-6-luna", input="hi", temperature=0.3,
                                                    reasoning={"effort": effort}))
    assert error.body == unsupported_parameter_body("temperature")


@pytest.mark.parametrize("model", ["gpt-6.1-terra", "gpt-6-luna"])
def test_gpt6_takes_sampling_parameters_at_effort_none(client, model):
    response = client.responses.create(model=model, input="hi", reasoning={"effort": "none"}, temperature=0.2,
                                       top_p=0.9)
    assert response.status == "completed" and response.reasoning.effort == "none"
    assert response.temperature == 0.2 and response.usage.output_tokens_details.reasoning_tokens == 0
    assert [item.type for item in response.output] == ["message"]


@pytest.mark.parametrize("model", sorted(m for m, efforts in ACTIVE.items() if "none" not in efforts))
def test_astra_and_sol_refuse_effort_none_with_unsupported_value(client, model):
    error = refused(lambda: client.responses.create(model=model, input="hi", reasoning={"effort": "none"}))
    assert error.body == {
        "message": "Unsupported value: 'reasoning.effort' does not support 'none' with this model. Supported values "
                   "are: 'low', 'medium', 'high', 'xhigh' and 'max'.",
        "type": "invalid_request_error", "param": "reasoning.effort", "code": "unsupported_value"}


@pytest.mark.parametrize("model", sorted(ACTIVE))
def test_every_effort_a_gpt6_model_takes_is_accepted_and_echoed(client, model):
    for effort in ACTIVE[model]:
        response = client.responses.create(model=model, input="hi", reasoning={"effort": effort})
        assert response.reasoning.effort == effort
    assert client.responses.create(model=model, input="hi").reasoning.effort == "medium"
    assert refused(lambda: client.responses.create(model=model, input="hi", reasoning={"effort": "minimal"})
                   ).code == "unsupported_value"


def test_chat_completions_apply_the_same_rules_with_reasoning_effort(client):
    messages = [{"role": "user", "content": "hi"}]
    error = refused(lambda: client.chat.completions.create(model="gpt-6.2-sol", messages=messages,
                                                           reasoning_effort="none"))
    assert (error.code, error.param) == ("unsupported_value", "reasoning_effort")
    assert "'reasoning_effort' does not support 'none'" in error.body["message"]
    error = refused(lambda: client.chat.completions.create(model="gpt-6-luna", messages=messages, temperature=0.5))
    assert error.body == unsupported_parameter_body("temperature")
    ok = client.chat.completions.create(model="gpt-6-luna", messages=messages, temperature=0.5,
                                        reasoning_effort="none")
    assert ok.choices[0].finish_reason == "stop"


# deprecated models: their own rules until their date

@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5-nano"])
def test_gpt5_takes_minimal_to_high_and_only_the_default_temperature(client, model):
    assert client.responses.create(model=model, input="hi", reasoning={"effort": "minimal"}).status == "completed"
    assert client.responses.create(model=model, input="hi", temperature=1).status == "completed"
    error = refused(lambda: client.responses.create(model=model, input="hi", reasoning={"effort": "none"}))
    assert error.body["message"] == ("Unsupported value: 'reasoning.effort' does not support 'none' with this model. "
                                     "Supported values are: 'minimal', 'low', 'medium' and 'high'.")
    assert refused(lambda: client.responses.create(model=model, input="hi", temperature=0.2)
                   ).body == unsupported_parameter_body("temperature")
    assert refused(lambda: client.responses.create(model=model, input="hi", top_p=1)
                   ).body == unsupported_parameter_body("top_p")
    assert refused(lambda: client.responses.create(model=model, input="hi", reasoning={"effort": "xhigh"})
                   ).code == "unsupported_value"


def test_o3_refuses_minimal_and_chat_names_the_default_temperature(client):
    error = refused(lambda: client.responses.create(model="o3", input="hi", reasoning={"effort": "minimal"}))
    assert error.body["message"].endswith("Supported values are: 'low', 'medium' and 'high'.")
    error = refused(lambda: client.chat.completions.create(model="o3", messages=[{"role": "user", "content": "hi"}],
                                                           temperature=0.2))
    assert error.body == {"message": "Unsupported value: 'temperature' does not support 0.2 with this model. Only "
                                     "the default (1) value is supported.", "type": "invalid_request_error",
                          "param": "temperature", "code": "unsupported_value"}


def test_gpt51_defaults_to_none_and_takes_temperature_only_there(client):
    plain = client.responses.create(model="gpt-5.1", input="hi", temperature=0.4)
    assert plain.reasoning.effort == "none"
    error = refused(lambda: client.responses.create(model="gpt-5.1", input="hi", temperature=0.4,
                                                    reasoning={"effort": "low"}))
    assert error.body == unsupported_parameter_body("temperature")
    assert refused(lambda: client.responses.create(model="gpt-5.1", input="hi", reasoning={"effort": "xhigh"})
                   ).code == "unsupported_value"


@pytest.mark.parametrize("model", ["gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini"])
def test_models_that_do_not_reason_refuse_a_reasoning_parameter(client, model):
    error = refused(lambda: client.responses.create(model=model, input="hi", reasoning={"effort": "low"}))
    assert error.body == unsupported_parameter_body("reasoning.effort")
    chat = refused(lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                          reasoning_effort="low"))
    assert chat.body == unsupported_parameter_body("reasoning_effort")
    fine = client.responses.create(model=model, input="hi", temperature=0.2, top_p=0.5)
    assert fine.reasoning.effort is None and fine.temperature == 0.2


def test_max_output_tokens_above_the_models_limit_is_refused(client):
    error = refused(lambda: client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16_385))
    assert (error.code, error.param) == ("integer_above_max_value", "max_output_tokens")
    assert "<= 16384" in error.body["message"]
    assert client.responses.create(model="gpt-6.1-terra", input="hi", max_output_tokens=128_000).status == "completed"
    assert refused(lambda: client.responses.create(model="gpt-6.1-terra", input="hi", max_output_tokens=128_001)
                   ).code == "integer_above_max_value"
    chat = refused(lambda: client.chat.completions.create(model="gpt-4.1-mini", max_completion_tokens=40_000,
                                                          messages=[{"role": "user", "content": "hi"}]))
    assert chat.param == "max_completion_tokens"


@pytest.mark.parametrize("model", sorted(set(ACTIVE) | set(DEPRECATED)))
def test_every_served_model_answers_a_vision_request_with_structured_output(client, model):
    response = client.responses.create(
        model=model, instructions="Describe the damage.", store=False,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Seller's notes: dent"},
                                            {"type": "input_image", "image_url": PHOTO, "detail": "auto"}]}],
        text={"format": {"type": "json_schema", "name": "report", "schema": SCHEMA, "strict": True}})
    assert response.status == "completed" and "summary_html" in json.loads(response.output_text)


# run-time catalog changes for tests

def test_overrides_shut_down_deprecate_and_add_models_until_reset(client, sandbox):
    sandbox.configure(catalog_overrides={"gpt-6-luna": {"shut_down": True},
                                         "gpt-6.1-terra": {"shutdown_date": "2026-12-10"},
                                         "gpt-6.3-nova": {"efforts": ["low", "high"], "default_effort": "low"}})
    assert refused(lambda: client.responses.create(model="gpt-6-luna", input="hi"), openai.NotFoundError
                   ).body == not_found_body("gpt-6-luna")
    listed = {m.id: m.shutdown_date for m in client.models.list()}
    assert "gpt-6-luna" not in listed and listed["gpt-6.1-terra"] == "2026-12-10"
    assert client.models.retrieve("gpt-6.1-terra").shutdown_date == "2026-12-10"
    assert client.responses.create(model="gpt-6.3-nova", input="hi").reasoning.effort == "low"
    assert refused(lambda: client.responses.create(model="gpt-6.3-nova", input="hi", reasoning={"effort": "none"})
                   ).code == "unsupported_value"
    sandbox.reset()
    assert client.models.retrieve("gpt-6-luna").shutdown_date is None
    assert refused(lambda: client.models.retrieve("gpt-6.3-nova"), openai.NotFoundError).code == "model_not_found"


@pytest.mark.parametrize("overrides", [
    {"gpt-6-luna": {"shutdown_date": "next week"}}, {"gpt-6-luna": {"efforts": ["turbo"]}},
    {"gpt-6-luna": {"colour": "blue"}}, {"gpt-6-luna": {"sampling": "sometimes"}}, ["gpt-6-luna"]])
def test_invalid_catalog_overrides_are_refused_and_change_nothing(control, overrides):
    answer = control.post("/sandbox/config", json={"catalog_overrides": overrides})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert control.get("/sandbox/config").json()["catalog_overrides"] == {}


# batches: the model checked at validation, the rules per line

def test_a_batch_naming_a_shut_down_model_fails_at_validation_with_line_errors(client, sandbox):
    lines = [line("ok-1", {"model": "o4-mini", "input": "a"}), line("ok-2", {"model": "o4-mini", "input": "b"})]
    batch = run_batch(client, lines)
    assert batch.status == "failed" and batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors.object == "list"
    assert [(e.code, e.param, e.line, e.message) for e in batch.errors.data] == [
        ("model_not_found", "body.model", n, "The model `o4-mini` does not exist or you do not have access to it.")
        for n in (1, 2)]
    assert sandbox.stats()["batches_failed_validation"] == 1 and sandbox.stats()["batch_lines_executed"] == 0


def test_one_line_with_an_unknown_model_fails_the_whole_batch(client):
    lines = [line(f"car-{i}", {"model": "gpt-6-luna", "input": f"q{i}"}) for i in range(3)]
    lines.insert(2, line("odd", {"model": "gpt-4-turbo", "input": "x"}))
    batch = run_batch(client, lines)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("model_not_found", 3)]


def test_a_model_shut_down_after_the_batch_was_validated_fails_its_lines_with_404(client, sandbox):
    sandbox.configure(batch_in_progress_seconds=0.5)
    batch = client.batches.create(input_file_id=upload_lines(client, [line("a", {"model": "gpt-6-luna",
                                                                                 "input": "hi"})]),
                                  endpoint="/v1/responses", completion_window="24h")
    sandbox.configure(catalog_overrides={"gpt-6-luna": {"shut_down": True}})
    deadline = time.monotonic() + 20
    while batch.status != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    [failed] = jsonl(client, batch.error_file_id)
    assert failed["response"]["status_code"] == 404
    assert failed["response"]["body"]["error"] == not_found_body("gpt-6-luna")


def test_a_line_with_a_refused_parameter_is_a_failed_line_with_the_direct_calls_body(client, sandbox):
    refused_body = {"model": "gpt-6.1-terra", "input": "hi", "temperature": 0.2}
    direct = refused(lambda: client.responses.create(**refused_body))
    lines = [line("fine", {"model": "gpt-6.1-terra", "input": "hello"}), line("hot", refused_body),
             line("cool", {**refused_body, "reasoning": {"effort": "none"}}),
             line("nucleus", {"model": "gpt-6.1-terra", "input": "x", "top_p": 0.5})]
    batch = run_batch(client, lines)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    errors = {e["custom_id"]: e for e in jsonl(client, batch.error_file_id)}
    assert set(errors) == {"hot", "nucleus"}
    assert errors["hot"]["response"]["status_code"] == 400
    assert errors["hot"]["response"]["body"] == {"error": direct.body}
    assert errors["nucleus"]["response"]["body"]["error"]["code"] == "unsupported_parameter"
    assert sandbox.stats()["refused"] == {"unsupported_parameter": 3}


def test_a_chat_batch_line_with_an_effort_the_model_lacks_is_unsupported_value(client):
    body = {"model": "gpt-6-sol", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "none"}
    batch = run_batch(client, [line("c", body, "/v1/chat/completions")], "/v1/chat/completions")
    [error] = jsonl(client, batch.error_file_id)
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "unsupported_value"
    assert error["response"]["body"]["error"]["param"] == "reasoning_effort"


# prompt caching

LONG_INSTRUCTIONS = "Describe every visible damage of the car in the photos, panel by panel. " * 80  # ~1,440 tokens


def test_a_repeated_long_prefix_reports_cached_tokens_in_steps_of_128(client):
    first = client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="lot 1")
    second = client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="lot 2, other text")
    assert first.usage.input_tokens_details.cached_tokens == 0
    cached = second.usage.input_tokens_details.cached_tokens
    shared = len(LONG_INSTRUCTIONS) // 4
    assert cached == shared // 128 * 128 and cached >= 1024
    assert cached < second.usage.input_tokens


def test_the_cache_is_per_model_and_per_prefix(client):
    client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="a")
    other_model = client.responses.create(model="gpt-6.1-terra", instructions=LONG_INSTRUCTIONS, input="a")
    assert other_model.usage.input_tokens_details.cached_tokens == 0
    changed_start = client.responses.create(model="gpt-6-luna", instructions="Note. " + LONG_INSTRUCTIONS, input="a")
    assert changed_start.usage.input_tokens_details.cached_tokens == 0


def test_a_prompt_shorter_than_1024_tokens_is_never_cached(client):
    short = "Describe the damage. " * 100  # ~525 tokens
    for _ in range(2):
        response = client.responses.create(model="gpt-6-luna", instructions=short, input="a")
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_images_count_in_the_prefix(client):
    content = [{"type": "input_image", "image_url": f"https://img.example/{i}.jpg", "detail": "auto"} for i in range(2)]
    first = client.responses.create(model="gpt-6.1-terra", input=[{"role": "user", "content": content}])
    again = client.responses.create(model="gpt-6.1-terra", input=[{"role": "user", "content": content}])
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert again.usage.input_tokens_details.cached_tokens == 1408  # 2 x 765 image tokens, rounded down to 128


def test_chat_completions_report_cached_prompt_tokens(client):
    messages = [{"role": "system", "content": LONG_INSTRUCTIONS}, {"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-6-luna", messages=messages)
    again = client.chat.completions.create(model="gpt-6-luna", messages=messages)
    assert again.usage.prompt_tokens_details.cached_tokens >= 1024


def test_a_cache_lifetime_of_zero_caches_nothing_and_reset_forgets(client, sandbox):
    client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="a")
    sandbox.reset()
    assert client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="a"
                                   ).usage.input_tokens_details.cached_tokens == 0
    sandbox.configure(prompt_cache_seconds=0)
    client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="b")
    assert client.responses.create(model="gpt-6-luna", instructions=LONG_INSTRUCTIONS, input="b"
                                   ).usage.input_tokens_details.cached_tokens == 0


def test_the_cache_forgets_its_least_recently_used_prefixes_when_full():
    cache = PromptCache(max_prefixes=4)
    prompts = [letter * 4096 for letter in "abcde"]  # 1,024 tokens each: one remembered prefix apiece
    assert [cache.cached_tokens("m", p) for p in prompts] == [0] * 5
    assert cache.cached_tokens("m", prompts[4]) == 1024
    assert cache.cached_tokens("m", prompts[0]) == 0
    assert cache.cached_tokens("other", prompts[4]) == 0


def test_batch_lines_sharing_a_prefix_report_cached_tokens(client):
    lines = [line(f"lot-{i}", {"model": "gpt-6-luna", "instructions": LONG_INSTRUCTIONS, "input": f"lot {i}",
                               "store": False}) for i in range(5)]
    batch = run_batch(client, lines)
    cached = [x["response"]["body"]["usage"]["input_tokens_details"]["cached_tokens"]
              for x in jsonl(client, batch.output_file_id)]
    assert sorted(cached) == [0] + [len(LONG_INSTRUCTIONS) // 4 // 128 * 128] * 4
    assert batch.usage.input_tokens_details.cached_tokens == sum(cached)


# store

def test_store_is_echoed_and_stored_responses_are_counted(client, sandbox, control):
    assert client.responses.create(model="gpt-6-luna", input="hi", store=False).store is False
    assert client.responses.create(model="gpt-6-luna", input="hi").store is True
    run_batch(client, [line("s", {"model": "gpt-6-luna", "input": "x", "store": False}),
                       line("t", {"model": "gpt-6-luna", "input": "y"})])
    assert control.get("/sandbox/stats").json()["stored_responses"] == 2
    error = refused(lambda: client.responses.create(model="gpt-6-luna", input="hi", store="no"))
    assert (error.code, error.param) == ("invalid_type", "store")


# control endpoints need the token; the sandbox stays on loopback

@pytest.mark.parametrize("method,path", [("GET", "/sandbox/config"), ("POST", "/sandbox/config"),
                                         ("POST", "/sandbox/reset"), ("GET", "/sandbox/stats")])
@pytest.mark.parametrize("headers", [{}, {"X-Sandbox-Token": "wrong"}, {"Authorization": "Bearer sk-test"},
                                     {"X-Sandbox-Token": "\u00e9\u00e9".encode()}])
def test_control_endpoints_refuse_requests_without_the_token(sandbox, method, path, headers):
    answer = httpx.request(method, f"{sandbox.root_url}{path}", headers=headers, json={"fail_next": [500]})
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_control_token", None)
    assert sandbox.config.fail_next == []


def test_control_endpoints_take_the_token_as_bearer_or_header(sandbox):
    by_bearer = httpx.post(f"{sandbox.root_url}/sandbox/config", json={"text_latency": 0.01},
                           headers={"Authorization": f"Bearer {sandbox.control_token}"})
    assert by_bearer.status_code == 200 and by_bearer.json()["text_latency"] == 0.01
    by_header = httpx.get(f"{sandbox.root_url}/sandbox/stats", headers={"X-Sandbox-Token": sandbox.control_token})
    assert by_header.status_code == 200 and "refused" in by_header.json()


def test_a_given_control_token_is_used_and_each_server_makes_its_own_otherwise():
    with SandboxServer(control_token="given-token-123") as given, SandboxServer() as made:
        assert given.control_token == "given-token-123"
        assert httpx.get(f"{given.root_url}/sandbox/stats", headers={"X-Sandbox-Token": "given-token-123"}
                         ).status_code == 200
        assert len(made.control_token) >= 32 and made.control_token != SandboxServer().control_token
    with pytest.raises(ValueError):
        SandboxServer(control_token=" ")


def test_the_sandbox_listens_on_loopback_unless_told_otherwise(sandbox):
    assert sandbox.host == "127.0.0.1" and parse_args([]).host == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as conn:
        assert conn.getpeername()[0] == "127.0.0.1"
    assert sandbox._server.socket.getsockname()[0] == "127.0.0.1"
