"""The model registry builds every request and prices every answer (no servers involved)."""
from __future__ import annotations

from datetime import date

import pytest

from services.models import EFFORTS, REASONING_ALLOWANCE, parse_registry, registry
from services.openai_client import ModelSettings, OpenAIGateway, Usage, setting_to_change
from services.prompts import translation_request, vision_request

TODAY = date(2026, 12, 1)


def test_the_registry_is_dated_and_every_entry_is_complete():
    reg = registry()
    assert reg.checked == TODAY and reg.batch_discount == 0.5
    for name, rules in reg.models.items():
        assert rules.known and rules.price.input > 0 and rules.price.output > 0, name
        assert set(rules.efforts) <= set(EFFORTS), name
        assert rules.reasoning == bool(rules.efforts), name
        assert rules.sampling in ("always", "never", "effort_none"), name


def test_the_defaults_are_served_today_with_no_shutdown_announced():
    models = ModelSettings()
    for rules in (models.vision_rules, models.translation_rules):
        assert rules.known and rules.shutdown_date is None and rules.state_on(TODAY) == "active"
    assert models.vision_rules.takes_effort(models.reasoning_effort)
    assert models.translation_rules.takes_effort(models.translation_reasoning_effort)


@pytest.mark.parametrize("model,state", [("o4-mini", "shutdown"), ("gpt-4.1-mini", "deprecated"),
                                         ("gpt-5", "deprecated"), ("gpt-6.1-terra", "active"),
                                         ("some-future-model", "unknown")])
def test_model_states_follow_the_announced_dates(model, state):
    assert registry().rules(model).state_on(TODAY) == state


def test_dated_snapshots_take_their_models_rules():
    rules = registry().rules("gpt-4.1-mini-2025-04-14")
    assert rules.known and rules.name == "gpt-4.1-mini-2025-04-14" and rules.shutdown_date == date(2027, 1, 14)


@pytest.mark.parametrize("model", sorted(registry().models))
def test_no_request_carries_a_parameter_its_model_refuses(model):
    rules = registry().rules(model)
    for effort in EFFORTS:
        for body in (vision_request(rules, ["https://x/a.jpg"], "", max_tokens=4000, reasoning_effort=effort),
                     translation_request(rules, "<p>x</p>", ["de"], max_tokens=4000, reasoning_effort=effort,
                                         temperature=0.1)):
            assert body["store"] is False and body["model"] == model
            sent = body.get("reasoning", {}).get("effort")
            if not rules.reasoning:
                assert "reasoning" not in body
            elif sent is not None:
                assert sent in rules.efforts
            if "temperature" in body:
                assert rules.sampling == "always" or (rules.sampling == "effort_none" and sent == "none")
            assert body["max_output_tokens"] <= rules.max_output_tokens


def test_gpt6_translation_carries_temperature_only_with_effort_none():
    rules = registry().rules("gpt-6-luna")
    none = translation_request(rules, "<p>x</p>", ["de"], max_tokens=100, reasoning_effort="none", temperature=0.1)
    low = translation_request(rules, "<p>x</p>", ["de"], max_tokens=100, reasoning_effort="low", temperature=0.1)
    assert none["reasoning"] == {"effort": "none"} and none["temperature"] == 0.1
    assert low["reasoning"] == {"effort": "low"} and "temperature" not in low
    assert none["max_output_tokens"] == 100 and low["max_output_tokens"] == 100 + REASONING_ALLOWANCE


def test_an_unknown_model_gets_the_conservative_rules():
    rules = registry().rules("gpt-7-nova")
    body = translation_request(rules, "<p>x</p>", ["de"], max_tokens=100, reasoning_effort="medium", temperature=0.1)
    assert not rules.known and "reasoning" not in body and "temperature" not in body
    dearest = max(m.price.output for m in registry().models.values())
    assert rules.price.output == dearest


def test_the_unchanging_part_of_the_prompt_is_identical_across_calls():
    rules = registry().rules("gpt-6-luna")
    one = translation_request(rules, "<p>a</p>", ["de"], max_tokens=100, reasoning_effort="none", temperature=0.1)
    two = translation_request(rules, "<p>b</p>", ["fr", "it"], max_tokens=100, reasoning_effort="none",
                              temperature=0.1)
    assert one["instructions"] == two["instructions"]
    vision = registry().rules("gpt-6.1-terra")
    a = vision_request(vision, ["https://x/1.jpg"], "note", max_tokens=100)
    b = vision_request(vision, ["https://x/2.jpg", "https://x/3.jpg"], "", max_tokens=100)
    assert (a["instructions"], a["text"]) == (b["instructions"], b["text"])


def test_usage_is_priced_with_cached_input_and_the_batch_discount():
    reg = registry()
    # gpt-6.1-terra: $1 input, $0.05 cached input, $5 output per million tokens
    assert reg.cost("gpt-6.1-terra", 1_000_000, 0, 0, batch=False) == pytest.approx(1.0)
    assert reg.cost("gpt-6.1-terra", 1_000_000, 1_000_000, 0, batch=False) == pytest.approx(0.05)
    assert reg.cost("gpt-6.1-terra", 2000, 1000, 1000, batch=False) == pytest.approx((1000 * 1 + 1000 * 0.05 + 1000 * 5) / 1e6)
    assert reg.cost("gpt-6.1-terra", 2000, 1000, 1000, batch=True) == pytest.approx((1000 + 50 + 5000) / 2e6)
    # a model without a published cached price is charged the input rate for cached tokens
    assert reg.cost("gpt-6-astra", 1000, 1000, 0, batch=False) == pytest.approx(10 * 1000 / 1e6)


def test_the_gateway_prices_a_batch_line_from_its_model_and_usage():
    seen = []
    gateway = OpenAIGateway(client=None, models=ModelSettings(), on_cost=lambda *args: seen.append(args))
    line = {"model": "gpt-6-luna", "usage": {"input_tokens": 10_000, "input_tokens_details": {"cached_tokens": 4000},
                                             "output_tokens": 2000, "output_tokens_details": {"reasoning_tokens": 0}}}
    usage = gateway.priced(line, "translation", batch=True)
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (10_000, 4000, 2000)
    assert usage.cost_usd == pytest.approx((6000 * 0.10 + 4000 * 0.01 + 2000 * 0.50) / 2e6)
    assert seen == [("gpt-6-luna", "batch", usage.cost_usd)]


def test_usage_adds_up():
    total = Usage()
    total.add(Usage(10, 5, 2, 1, 0.5))
    total.add(Usage(1, 1, 0, 0, 0.25))
    assert (total.input_tokens, total.output_tokens, total.cached_input_tokens, total.reasoning_tokens) == (11, 6, 2, 1)
    assert total.cost_usd == pytest.approx(0.75)


@pytest.mark.parametrize("api,code,param,setting", [
    ("vision", "model_not_found", None, "OPENAI_MODEL_VISION"),
    ("translation", "model_not_found", "model", "OPENAI_MODEL_TRANSLATION"),
    ("vision", "unsupported_value", "reasoning.effort", "OPENAI_REASONING_EFFORT"),
    ("translation", "unsupported_value", "reasoning.effort", "OPENAI_TRANSLATION_REASONING_EFFORT"),
    ("translation", "unsupported_parameter", "temperature", "OPENAI_TEMPERATURE or OPENAI_MODEL_TRANSLATION"),
])
def test_a_refusal_names_the_setting_to_change(api, code, param, setting):
    assert setting_to_change(api, code, param) == setting


def test_a_registry_with_an_unknown_effort_is_refused():
    data = {"checked": "2026-12-01", "batch_discount": 0.5,
            "families": {"f": {"reasoning": True, "sampling": "never", "max_output_tokens": 10}},
            "models": {"m": {"family": "f", "efforts": ["turbo"], "price": {"input": 1, "output": 1}}}}
    with pytest.raises(ValueError, match="turbo"):
        parse_registry(data)
