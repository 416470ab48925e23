"""The model registry: what each OpenAI model accepts and costs, kept as data in model_registry.json.

Every request is built from a model's rules (which reasoning efforts it takes, whether sampling
parameters may go with them, its output limit), and every answer's usage is priced from its
prices. A model the registry does not know gets the conservative rules: neither a reasoning
effort nor a sampling parameter is sent, and it is priced like the dearest known model.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")
# visible tokens come on top of what a reasoning model spends thinking
REASONING_ALLOWANCE = 8000


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; cached input at the input rate when the registry has no cached price."""
    input: float
    cached_input: float | None
    output: float

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int, discount: float = 1.0) -> float:
        cached = min(max(cached_tokens, 0), input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        dollars = (input_tokens - cached) * self.input + cached * cached_rate + output_tokens * self.output
        return dollars * discount / 1_000_000


@dataclass(frozen=True)
class ModelRules:
    name: str
    known: bool
    reasoning: bool
    efforts: tuple[str, ...]
    default_effort: str | None
    sampling: str  # "always", "never", or "effort_none" (only when the effort sent is none)
    max_output_tokens: int
    price: Price
    shutdown_date: date | None

    def takes_effort(self, effort: str) -> bool:
        return self.reasoning and effort in self.efforts

    def effort_to_send(self, wanted: str | None) -> str | None:
        """The reasoning effort this model's requests carry (None: no reasoning parameter at all)."""
        if not self.known or not self.reasoning or not wanted:
            return None
        return wanted if wanted in self.efforts else None

    def sampling_allowed(self, effort_sent: str | None) -> bool:
        if not self.known or self.sampling == "never":
            return False
        if self.sampling == "always":
            return True
        return effort_sent == "none"

    def request_options(self, effort: str | None, temperature: float | None) -> dict[str, Any]:
        """The ``reasoning`` and ``temperature`` parameters this model accepts, for a request body."""
        options: dict[str, Any] = {}
        sent = self.effort_to_send(effort)
        if sent is not None:
            options["reasoning"] = {"effort": sent}
        if temperature is not None and self.sampling_allowed(sent):
            options["temperature"] = temperature
        return options

    def output_limit(self, visible_tokens: int, effort: str | None) -> int:
        """``max_output_tokens`` for an answer of ``visible_tokens``: reasoning models get room to think."""
        thinking = self.reasoning and self.effort_to_send(effort) != "none"
        limit = visible_tokens + (REASONING_ALLOWANCE if thinking or not self.known else 0)
        return min(limit, self.max_output_tokens)

    def state_on(self, today: date) -> str:
        if self.shutdown_date is None:
            return "active" if self.known else "unknown"
        return "shutdown" if today >= self.shutdown_date else "deprecated"


@dataclass(frozen=True)
class Registry:
    checked: date
    batch_discount: float
    models: dict[str, ModelRules]
    fallback_price: Price

    def rules(self, model: str) -> ModelRules:
        found = self.models.get(model) or self.models.get(_SNAPSHOT.sub("", model))
        if found is not None:
            return found if found.name == model else _renamed(found, model)
        return ModelRules(name=model, known=False, reasoning=False, efforts=(), default_effort=None,
                          sampling="never", max_output_tokens=16384, price=self.fallback_price, shutdown_date=None)

    def cost(self, model: str, input_tokens: int, cached_tokens: int, output_tokens: int, *, batch: bool) -> float:
        discount = self.batch_discount if batch else 1.0
        return self.rules(model).price.cost(input_tokens, cached_tokens, output_tokens, discount)


def _renamed(rules: ModelRules, name: str) -> ModelRules:
    from dataclasses import replace

    return replace(rules, name=name)


def _price(data: dict[str, Any]) -> Price:
    cached = data.get("cached_input")
    return Price(float(data["input"]), None if cached is None else float(cached), float(data["output"]))


def parse_registry(data: dict[str, Any]) -> Registry:
    families = data["families"]
    models: dict[str, ModelRules] = {}
    for name, entry in data["models"].items():
        family = families[entry["family"]]
        efforts = tuple(entry.get("efforts", ()))
        unknown = [e for e in efforts if e not in EFFORTS]
        if unknown:
            raise ValueError(f"model registry: {name} lists unknown efforts {unknown}")
        shutdown = entry.get("shutdown_date")
        models[name] = ModelRules(
            name=name, known=True, reasoning=bool(family["reasoning"]), efforts=efforts,
            default_effort=family.get("default_effort"), sampling=family["sampling"],
            max_output_tokens=int(entry.get("max_output_tokens", family["max_output_tokens"])),
            price=_price(entry["price"]), shutdown_date=date.fromisoformat(shutdown) if shutdown else None)
    dearest = Price(max(m.price.input for m in models.values()), None, max(m.price.output for m in models.values()))
    return Registry(checked=date.fromisoformat(data["checked"]), batch_discount=float(data["batch_discount"]),
                    models=models, fallback_price=dearest)


@lru_cache(maxsize=1)
def registry() -> Registry:
    text = resources.files("services").joinpath("model_registry.json").read_text(encoding="utf-8")
    return parse_registry(json.loads(text))
