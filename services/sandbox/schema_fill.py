"""A deterministic JSON-schema instance generator for structured-output answers.

It covers the subset Structured Outputs accepts (objects, arrays, strings with enum/format,
numbers with bounds, booleans, null, anyOf/oneOf/allOf, ``$defs``/``$ref``, recursion) and
fills values from a seeded RNG, so the same request always yields the same document.
``pattern`` is not honoured. Two hooks let callers supply domain values: ``object_for``
may return a whole object for a sub-schema, ``string_for`` a string for a named property.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from typing import Any, Callable, Mapping

StringHook = Callable[[str, Mapping[str, Any]], "str | None"]
ObjectHook = Callable[[Mapping[str, Any]], "dict[str, Any] | None"]

SOFT_DEPTH = 6
HARD_DEPTH = 40
_WORDS = ("front", "panel", "bumper", "paint", "minor", "scratch", "door", "visible", "surface", "left",
          "right", "rear", "edge", "clear", "light", "area", "condition", "report", "vehicle", "check")


def fill_schema(schema: Mapping[str, Any], seed: int, *, string_for: StringHook | None = None,
                object_for: ObjectHook | None = None) -> Any:
    return _Filler(schema, seed, string_for, object_for).value(schema, "", 0)


def seed_from(*parts: Any) -> int:
    """A stable integer seed from JSON-serialisable parts (``hash()`` is salted per process)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


class _Filler:
    def __init__(self, root: Mapping[str, Any], seed: int, string_for: StringHook | None,
                 object_for: ObjectHook | None):
        self.root = root
        self.rng = random.Random(seed)
        self.string_for = string_for
        self.object_for = object_for

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if depth > HARD_DEPTH:
            return None
        schema = self.resolve(schema)
        if not isinstance(schema, Mapping) or not schema:
            return self.string({}, name, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(self.branch(schema[key], depth), name, depth + 1)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            return self.value(self.merge(schema), name, depth + 1)
        kind = self.kind(schema, depth)
        return getattr(self, kind)(schema, name, depth)

    def resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 32:
            target = self.pointer(schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if siblings and isinstance(target, Mapping) else target
            seen += 1
        return schema

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for token in [t for t in ref[1:].split("/") if t]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return {}
        return node

    def branch(self, options: list[Any], depth: int) -> Any:
        """First non-null branch, but the null one once nesting gets deep (ends recursion)."""
        resolved = [self.resolve(o) for o in options]
        nulls = [o for o in resolved if isinstance(o, Mapping) and o.get("type") == "null"]
        others = [o for o in resolved if o not in nulls]
        if depth >= SOFT_DEPTH and nulls:
            return nulls[0]
        return (others or resolved)[0]

    def merge(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self.resolve(part)
            if not isinstance(part, Mapping):
                continue
            for key, val in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *val]))
                else:
                    merged.setdefault(key, val)
        return merged

    def kind(self, schema: Mapping[str, Any], depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            non_null = [t for t in declared if t != "null"]
            if "null" in declared and (depth >= SOFT_DEPTH or not non_null):
                return "null"
            declared = non_null[0] if non_null else None
        if declared in ("object", "array", "string", "integer", "number", "boolean", "null"):
            return declared
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def object(self, schema: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        if self.object_for is not None:
            special = self.object_for(schema)
            if special is not None:
                return special
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or properties)
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            if depth >= SOFT_DEPTH and key not in required:
                continue
            out[key] = self.value(sub, key, depth + 1)
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, Mapping):
            for i in range(max(1, int(schema.get("minProperties", 1)))):
                out[f"key_{i + 1}"] = self.value(extra, f"key_{i + 1}", depth + 1)
        return out

    def array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        prefix = schema.get("prefixItems") or []
        wanted = low if depth >= SOFT_DEPTH else max(low, self.rng.randint(1, 3), len(prefix))
        count = min(wanted, int(high)) if high is not None else wanted
        items = schema.get("items", {})
        out: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < count and attempts < count * 8 + 8:
            index = len(out)
            sub = prefix[index] if index < len(prefix) else items
            if sub is False:
                break
            item = self.value(sub, name, depth + 1)
            attempts += 1
            key = json.dumps(item, sort_keys=True, default=str)
            if schema.get("uniqueItems") and key in seen:
                continue
            seen.add(key)
            out.append(item)
        return out

    def string(self, schema: Mapping[str, Any], name: str, depth: int) -> str:
        text = self.formatted(schema.get("format"))
        if text is None and self.string_for is not None:
            text = self.string_for(name, schema)
        if text is None:
            text = " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(2, 5))).capitalize()
        low = int(schema.get("minLength", 0))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        high = schema.get("maxLength")
        return text[: int(high)] if high is not None else text

    def formatted(self, fmt: Any) -> str | None:
        day = self.rng.randint(1, 28)
        month = self.rng.randint(1, 12)
        if fmt == "date-time":
            return f"2025-{month:02d}-{day:02d}T{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:00Z"
        if fmt == "date":
            return f"2025-{month:02d}-{day:02d}"
        if fmt == "time":
            return f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:00"
        if fmt == "email":
            return f"user{self.rng.randint(1, 999)}@example.com"
        if fmt in ("uri", "url"):
            return f"https://example.com/item/{self.rng.randint(1, 9999)}"
        if fmt == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if fmt == "ipv4":
            return f"192.0.2.{self.rng.randint(1, 254)}"
        return None

    def integer(self, schema: Mapping[str, Any], name: str, depth: int) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, (int, float)) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            return int(self.rng.randint(first, max(first, last)) * step)
        return self.rng.randint(low, max(low, high))

    def number(self, schema: Mapping[str, Any], name: str, depth: int) -> float:
        low, high = _bounds(schema, integer=False)
        value = round(low + (high - low) * self.rng.random(), 2)
        if not _within(value, schema):
            value = (low + high) / 2
        return value

    def boolean(self, schema: Mapping[str, Any], name: str, depth: int) -> bool:
        return self.rng.random() < 0.5

    def null(self, schema: Mapping[str, Any], name: str, depth: int) -> None:
        return None


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[Any, Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    nudge = 1 if integer else 0.01
    if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
        low = ex_low + nudge if low is None else max(low, ex_low + nudge)
    if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
        high = ex_high - nudge if high is None else min(high, ex_high - nudge)
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        low = high - 100
    elif high is None:
        high = low + 100
    if integer:
        return math.ceil(low), math.floor(high)
    return float(low), float(high)


def _within(value: float, schema: Mapping[str, Any]) -> bool:
    checks = [("minimum", lambda b: value >= b), ("maximum", lambda b: value <= b),
              ("exclusiveMinimum", lambda b: value > b), ("exclusiveMaximum", lambda b: value < b)]
    return all(check(schema[key]) for key, check in checks
               if isinstance(schema.get(key), (int, float)) and not isinstance(schema.get(key), bool))
