"""A model's request rules, applied to a parsed prompt the way OpenAI applies them.

Order as OpenAI checks: the model exists, the output limit, the reasoning effort, then the
sampling settings. Every refusal is a 400 (404 for the model) in OpenAI's error shape.
"""
from __future__ import annotations

from services.sandbox.catalog import Catalog, ModelRules
from services.sandbox.errors import ApiError
from services.sandbox.prompt import Prompt

SAMPLING_KEYS = ("temperature", "top_p", "top_logprobs")


def apply_rules(catalog: Catalog, prompt: Prompt, *, chat: bool = False) -> ModelRules:
    """Check ``prompt`` against its model's entry and set ``prompt.effort``; raises ApiError."""
    rules = catalog.lookup(prompt.model)
    _check_output_limit(rules, prompt)
    prompt.effort = _effort(rules, prompt)
    _check_sampling(rules, prompt, chat)
    return rules


def _check_output_limit(rules: ModelRules, prompt: Prompt) -> None:
    limit = rules.max_output_tokens
    if prompt.max_output_tokens is not None and prompt.max_output_tokens > limit:
        raise ApiError(400, f"Invalid '{prompt.max_tokens_param}': integer above maximum value. Expected a value "
                            f"<= {limit}, but got {prompt.max_output_tokens} instead.",
                       param=prompt.max_tokens_param, code="integer_above_max_value")


def _effort(rules: ModelRules, prompt: Prompt) -> str | None:
    if not rules.is_reasoning:
        if prompt.reasoning_sent:
            raise unsupported_parameter(prompt.effort_param)
        return None
    effort = prompt.reasoning_effort or rules.default_effort
    if effort not in rules.efforts:
        raise ApiError(400, f"Unsupported value: '{prompt.effort_param}' does not support {_quote(effort)} with this "
                            f"model. Supported values are: {_listing(rules.efforts)}.",
                       param=prompt.effort_param, code="unsupported_value")
    return effort


def _check_sampling(rules: ModelRules, prompt: Prompt, chat: bool) -> None:
    if rules.sampling == "any" or (rules.sampling == "effort_none" and prompt.effort == "none"):
        return
    for key in SAMPLING_KEYS:
        if key not in prompt.sampling:
            continue
        value = prompt.sampling[key]
        if rules.sampling == "default_only" and key == "temperature":
            if value == 1:
                continue
            if chat:
                raise ApiError(400, f"Unsupported value: 'temperature' does not support {value:g} with this model. "
                                    f"Only the default (1) value is supported.", param="temperature",
                               code="unsupported_value")
        raise unsupported_parameter(key)


def unsupported_parameter(param: str) -> ApiError:
    return ApiError(400, f"Unsupported parameter: '{param}' is not supported with this model.", param=param,
                    code="unsupported_parameter")


def _quote(value: object) -> str:
    return f"'{value}'"


def _listing(values: tuple[str, ...]) -> str:
    quoted = [_quote(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
