"""Request bodies read with bounded work, before anyone knows whether the request is signed.

``json.loads`` builds every object of a body before the caller can look at any of it: 24 MB of
``{"lots":[{},{},...]}`` become 8 million dicts (+620 MB) although the answer can only be a refusal.
Here the body is taken apart in steps, each proportional to its size and cheap where it fails:

1. Containers are counted on the raw bytes (``bytes.count``, at memory speed). A real request spends
   at least a dozen bytes on every object or array (``{"url":"http://…"}``); a body with more than one
   per ``BYTES_PER_CONTAINER`` bytes is refused before anything is built. Brackets inside strings are
   only discounted when the quick count is over, so ordinary bodies pay one pass.
2. The body must be UTF-8 (RFC 8259); anything else is refused as it is decoded.
3. A body with few containers for its array limits (at most ``FAST_CONTAINERS_PER_ITEM`` per allowed
   element: what a 50,000-lot request with up to six photos per lot has) cannot hold much even if
   every container were a lot, so it is parsed in one ``json.loads`` call, the fastest there is, and
   its top-level arrays are counted afterwards.
4. Any other body has its top-level object walked by hand, each member value parsed by the C scanner
   of the ``json`` module; top-level arrays are parsed one element at a time and counted, so a
   ``lots`` array stops at its limit + 1 elements instead of being built in full.

Nesting is bounded by the interpreter's recursion limit inside the scanner; past it is a 400, not a
crash. The result is the same dict ``json.loads`` gives for every body it accepts (duplicate keys: the
last wins), as a ``JsonObject`` that also says whether the body held any number that is not an integer
(a fraction, an exponent, NaN or Infinity): a body without one can be written out again by a faster
encoder byte for byte (services/signing.canonical_lots).
"""
from __future__ import annotations

import json
import re
from json.decoder import scanstring
from json.scanner import make_scanner
from typing import Any, Callable

from services.errors import ServiceError

BYTES_PER_CONTAINER = 12
CONTAINER_ALLOWANCE = 1024
FAST_CONTAINERS_PER_ITEM = 8
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# what may follow an array element: a comma (and the white space before the next one) or the end
_AFTER_ITEM = re.compile(r"[ \t\n\r]*(?:(,)[ \t\n\r]*|(\]))")
# a JSON string, possessive so it cannot backtrack; only used when the quick count is over the budget
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.S)

TooMany = Callable[[str, int, int], ServiceError]
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class JsonObject(dict):
    """A parsed body; ``has_floats`` is True when any number in it was not an integer."""

    __slots__ = ("has_floats",)

    def __init__(self, *args, has_floats: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_floats = has_floats


class _Numbers:
    """The parser's hooks for non-integer numbers: called only for those, so an all-integer body pays nothing."""

    def __init__(self):
        self.floats = False

    def float(self, text: str) -> float:
        self.floats = True
        return float(text)

    def constant(self, name: str) -> float:
        self.floats = True
        return _CONSTANTS[name]


def invalid_json(message: str = "Request body must be valid JSON") -> ServiceError:
    return ServiceError(400, "INVALID_JSON", message, error="Invalid request format")


def _too_many_items(key: str, limit: int, _counted: int) -> ServiceError:
    return ServiceError(400, "VALIDATION_ERROR", f"Field '{key}' has more than {limit:,} items", {"field": key})


def container_budget(size: int) -> int:
    return size // BYTES_PER_CONTAINER + CONTAINER_ALLOWANCE


def count_containers(raw: bytes, budget: int) -> int:
    """Objects and arrays in ``raw``: brackets counted, those inside strings discounted only if needed."""
    quick = raw.count(b"{") + raw.count(b"[")
    if quick <= budget:
        return quick
    skeleton = _STRING.sub(b"", raw)
    return skeleton.count(b"{") + skeleton.count(b"[")


def load_object(raw: bytes, *, array_limits: dict[str, int], default_array_limit: int,
                too_many: dict[str, TooMany] | None = None) -> JsonObject:
    """The body as a JSON object, with every top-level array held to its limit (4xx past it).

    ``too_many[key](key, limit, counted)`` makes the error for an array over its limit; ``counted`` is
    its length, or limit + 1 when counting stopped there.
    """
    too_many = too_many or {}
    budget = container_budget(len(raw))
    containers = count_containers(raw, budget)
    if containers > budget:
        raise invalid_json("Request body holds more JSON objects and arrays than a request of its size can use")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_json(f"Request body must be UTF-8 encoded JSON (invalid byte at {exc.start})") from None
    largest = max([default_array_limit, *array_limits.values()])
    numbers = _Numbers()
    try:
        if containers <= FAST_CONTAINERS_PER_ITEM * (largest + 1):
            body = _whole(text, numbers, array_limits, default_array_limit, too_many)
        else:
            # a scanner per call: its key memo is not meant to be shared between threads
            scan = make_scanner(json.JSONDecoder(parse_float=numbers.float, parse_constant=numbers.constant))
            body = _object(text, scan, array_limits, default_array_limit, too_many)
    except RecursionError:
        raise invalid_json("Request body is nested too deeply") from None
    except StopIteration as stop:
        raise invalid_json(f"Request body must be valid JSON (error at character {stop.value})") from None
    except json.JSONDecodeError as exc:
        raise invalid_json(f"Request body must be valid JSON ({exc.msg} at character {exc.pos})") from None
    return JsonObject(body, has_floats=numbers.floats)


def _whole(text: str, numbers: _Numbers, array_limits: dict[str, int], default_limit: int,
           too_many: dict[str, TooMany]) -> dict:
    start = _skip(text, 0)
    if text[start:start + 1] != "{":
        raise invalid_json("Request body must be a JSON object")
    body = json.loads(text, parse_float=numbers.float, parse_constant=numbers.constant)
    for key, value in body.items():
        if type(value) is list:
            limit = array_limits.get(key, default_limit)
            if len(value) > limit:
                raise too_many.get(key, _too_many_items)(key, limit, len(value))
    return body


def _skip(text: str, index: int) -> int:
    return _WHITESPACE.match(text, index).end()


def _object(text: str, scan, array_limits: dict[str, int], default_limit: int,
            too_many: dict[str, TooMany]) -> dict[str, Any]:
    index = _skip(text, 0)
    if text[index:index + 1] != "{":
        # not built at all: an array or a scalar is refused whatever it holds
        raise invalid_json("Request body must be a JSON object")
    result: dict[str, Any] = {}
    index = _skip(text, index + 1)
    if text[index:index + 1] == "}":
        return _end(text, index + 1, result)
    while True:
        if text[index:index + 1] != '"':
            raise StopIteration(index)
        key, index = scanstring(text, index + 1)
        index = _skip(text, index)
        if text[index:index + 1] != ":":
            raise StopIteration(index)
        index = _skip(text, index + 1)
        if text[index:index + 1] == "[":
            limit = array_limits.get(key, default_limit)
            value, index = _array(text, index + 1, scan, key, limit, too_many.get(key, _too_many_items))
        else:
            value, index = scan(text, index)
        result[key] = value
        index = _skip(text, index)
        separator = text[index:index + 1]
        if separator == ",":
            index = _skip(text, index + 1)
        elif separator == "}":
            return _end(text, index + 1, result)
        else:
            raise StopIteration(index)


def _array(text: str, index: int, scan, key: str, limit: int, too_many: TooMany) -> tuple[list, int]:
    items: list = []
    append = items.append
    after_item = _AFTER_ITEM.match
    index = _skip(text, index)
    if text[index:index + 1] == "]":
        return items, index + 1
    remaining = limit
    while True:
        value, index = scan(text, index)
        append(value)
        remaining -= 1
        if remaining < 0:
            raise too_many(key, limit, limit + 1)
        separator = after_item(text, index)
        if separator is None:
            raise StopIteration(index)
        index = separator.end()
        if separator.lastindex == 2:
            return items, index


def _end(text: str, index: int, result: dict[str, Any]) -> dict[str, Any]:
    if _skip(text, index) != len(text):
        raise StopIteration(index)
    return result
