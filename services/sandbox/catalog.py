"""The model catalog: which models OpenAI serves, until when, and the request rules of each.

The facts live in ``catalog.json`` beside this module (dated, with the pages they were read
from), loaded once per process. ``Catalog.with_overrides`` lays the sandbox config's
``catalog_overrides`` on top, so a test can deprecate, shut down or add a model at run time.
"""
from __future__ import annotations

import calendar
import datetime
import functools
import json
import os
from dataclasses import dataclass, replace
from typing import Any, Mapping

from services.sandbox.errors import ApiError

CATALOG_PATH = os.path.join(os.path.dirname(__file__), "catalog.json")
SAMPLING_RULES = ("effort_none", "default_only", "any")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
OVERRIDE_FIELDS = ("shutdown_date", "efforts", "default_effort", "sampling", "max_output_tokens", "shut_down")
# a model an override adds without naming a family gets the rules of today's GPT-6 models
NEW_MODEL_FAMILY = "gpt-6"


@dataclass(frozen=True)
class ModelRules:
    id: str
    created: int
    shutdown_date: str | None
    efforts: tuple[str, ...] | None
    default_effort: str | None
    sampling: str
    max_output_tokens: int

    @property
    def is_reasoning(self) -> bool:
        return self.efforts is not None

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "system",
                "shutdown_date": self.shutdown_date}


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found")


class Catalog:
    """Served models by id (snapshots included); anything else is not found."""

    def __init__(self, models: Mapping[str, ModelRules], families: Mapping[str, ModelRules], checked: str,
                 shut_down: Mapping[str, str]):
        self._models = dict(models)
        self._families = families
        self.checked = checked
        self.shut_down = dict(shut_down)

    def get(self, model: str) -> ModelRules | None:
        return self._models.get(model)

    def lookup(self, model: str) -> ModelRules:
        rules = self._models.get(model)
        if rules is None:
            raise model_not_found(model)
        return rules

    def listing(self) -> dict[str, Any]:
        return {"object": "list", "data": [rules.to_api() for rules in self._models.values()]}

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "Catalog":
        if not overrides:
            return self
        models = dict(self._models)
        for model, changes in overrides.items():
            if changes.get("shut_down"):
                models.pop(model, None)
                continue
            base = models.get(model) or replace(self._families[NEW_MODEL_FAMILY], id=model,
                                                created=_day(self.checked))
            fields = {k: (tuple(v) if k == "efforts" and v is not None else v)
                      for k, v in changes.items() if k != "shut_down"}
            models[model] = replace(base, **fields)
        return Catalog(models, self._families, self.checked, self.shut_down)


@functools.cache
def base_catalog() -> Catalog:
    with open(CATALOG_PATH, encoding="utf-8") as fh:
        data = json.load(fh)
    return parse_catalog(data)


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    checked = data["checked"]
    families = {name: ModelRules(id=name, created=0, shutdown_date=None,
                                 efforts=tuple(f["efforts"]) if f["efforts"] is not None else None,
                                 default_effort=f["default_effort"], sampling=f["sampling"],
                                 max_output_tokens=f["max_output_tokens"])
                for name, f in data["families"].items()}
    models: dict[str, ModelRules] = {}
    for model, entry in data["models"].items():
        rules = replace(families[entry["family"]], id=model, created=_day(entry.get("released") or checked),
                        shutdown_date=entry.get("shutdown_date"))
        models[model] = rules
        for snapshot in entry.get("snapshots", []):
            models[f"{model}-{snapshot}"] = replace(rules, id=f"{model}-{snapshot}", created=_day(snapshot))
    shut_down = {model: day for day, names in data.get("shut_down", {}).items() for model in names}
    both = sorted(set(shut_down) & set(models))
    if both:
        raise ValueError(f"catalog lists {', '.join(both)} as both served and shut down")
    return Catalog(models, families, checked, shut_down)


def check_overrides(value: Any) -> dict[str, dict[str, Any]]:
    """Validate a ``catalog_overrides`` config value; raises ValueError with the reason."""
    if not isinstance(value, Mapping):
        raise ValueError("catalog_overrides must be an object of model id -> changes")
    checked: dict[str, dict[str, Any]] = {}
    for model, changes in value.items():
        if not isinstance(model, str) or not model or not isinstance(changes, Mapping):
            raise ValueError("catalog_overrides maps a model id to an object of changes")
        unknown = sorted(set(changes) - set(OVERRIDE_FIELDS))
        if unknown:
            raise ValueError(f"catalog_overrides.{model}: unknown field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(OVERRIDE_FIELDS)}")
        for name, item in changes.items():
            _check_override_field(model, name, item)
        checked[model] = dict(changes)
    return checked


def _check_override_field(model: str, name: str, item: Any) -> None:
    where = f"catalog_overrides.{model}.{name}"
    if name == "shutdown_date" and item is not None:
        try:
            datetime.date.fromisoformat(item)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be YYYY-MM-DD or null") from None
    elif name == "efforts" and item is not None:
        if not isinstance(item, list) or not item or not all(e in EFFORTS for e in item):
            raise ValueError(f"{where} must be null or a non-empty list of {', '.join(EFFORTS)}")
    elif name == "default_effort" and item is not None and item not in EFFORTS:
        raise ValueError(f"{where} must be null or one of {', '.join(EFFORTS)}")
    elif name == "sampling" and item not in SAMPLING_RULES:
        raise ValueError(f"{where} must be one of {', '.join(SAMPLING_RULES)}")
    elif name == "max_output_tokens" and (isinstance(item, bool) or not isinstance(item, int) or item < 1):
        raise ValueError(f"{where} must be a positive integer")
    elif name == "shut_down" and not isinstance(item, bool):
        raise ValueError(f"{where} must be true or false")


def _day(value: str) -> int:
    return calendar.timegm(datetime.date.fromisoformat(value).timetuple())
