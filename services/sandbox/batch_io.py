"""Batch files: validating the input JSONL and writing the output and error JSONL.

The input is streamed line by line and only byte offsets and custom_ids are kept, so a
50,000-line, 150 MB input costs a few megabytes of memory. Lines are executed, and written,
in a shuffled order, because OpenAI does not keep input order either.
"""
from __future__ import annotations

import json
import math
import os
import random
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import orjson

from services.sandbox import ids
from services.sandbox.catalog import Catalog, model_not_found
from services.sandbox.errors import ApiError
from services.sandbox.generate import RESPONSES, respond, usage_totals
from services.sandbox.prompt_cache import PromptCache
from services.sandbox.schema_fill import seed_from

MAX_REQUESTS = 50_000
MAX_REPORTED_ERRORS = 100
EXPIRED_ERROR = {"code": "batch_expired",
                 "message": "This request could not be executed before the completion window expired."}
CANCELLED_ERROR = {"code": "batch_cancelled",
                   "message": "This request was not executed because the batch was cancelled."}
INJECTED_FAILURE = {"message": "The server had an error while processing your request. Sorry about that!",
                    "type": "server_error", "param": None, "code": "server_error"}


@dataclass
class BatchInput:
    offsets: array = field(default_factory=lambda: array("q"))
    custom_ids: list[str] = field(default_factory=list)
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def read_input(path: str, endpoint: str, catalog: Catalog) -> BatchInput:
    """Check every line like OpenAI's validating step; problems land in ``errors`` with their line.

    A line naming a model the catalog does not serve fails the whole batch here, as on OpenAI;
    a line whose body the model would refuse is only found out when it runs (a failed line).
    """
    result = BatchInput()
    seen: set[str] = set()
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            request = _parse_line(raw)
            if request is None:
                result.error("invalid_json_line", "This line is not parseable as valid JSON.", number)
                continue
            if _check_line(request, number, endpoint, seen, result, catalog):
                result.offsets.append(start)
                result.custom_ids.append(request["custom_id"])
    if not result.custom_ids and not result.errors:
        result.error("empty_file", "The batch input file is empty. Please ensure that the batch contains at "
                                   "least one request.")
    if len(result.custom_ids) > MAX_REQUESTS:
        result.error("too_many_tasks", f"The batch input file contains more than the maximum of {MAX_REQUESTS:,} "
                                       f"requests.")
    return result


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_line(request: dict[str, Any], number: int, endpoint: str, seen: set[str], result: BatchInput,
                catalog: Catalog) -> bool:
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.error("missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id")
        return False
    if custom_id in seen:
        result.error("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
                     "The custom_id parameter must be unique for each request in a batch.", number, "custom_id")
        return False
    seen.add(custom_id)
    method = request.get("method")
    if method != "POST":
        code = "missing_required_parameter" if method is None else "invalid_method"
        result.error(code, "The request method must be 'POST'.", number, "method")
        return False
    url = request.get("url")
    if url != endpoint:
        code = "missing_required_parameter" if url is None else "url_mismatch"
        result.error(code, f"The provided URL '{url}' does not match the batch endpoint '{endpoint}'.", number, "url")
        return False
    body = request.get("body")
    if not isinstance(body, dict):
        result.error("missing_required_parameter", "Missing required parameter: 'body'.", number, "body")
        return False
    model = body.get("model")
    if isinstance(model, str):
        if catalog.get(model) is None:
            result.error("model_not_found", model_not_found(model).message, number, "body.model")
            return False
        if result.model is None:
            result.model = model
        elif model != result.model:
            result.error("model_mismatch", f"The provided model '{model}' does not match the model "
                                           f"'{result.model}' of other requests in the batch.", number, "body.model")
            return False
    return True


def shuffled_order(count: int, batch_id: str) -> list[int]:
    order = list(range(count))
    random.Random(seed_from("order", batch_id)).shuffle(order)
    return order


def failing_lines(custom_ids: list[str], batch_id: str, rate: float, explicit: list[str]) -> frozenset[int]:
    """Lines whose execution fails: the named custom_ids plus a seeded share ``rate`` of the rest."""
    named = set(explicit)
    chosen = set()
    for index, custom_id in enumerate(custom_ids):
        if custom_id in named or (rate > 0 and seed_from("fail", batch_id, custom_id) / 2 ** 64 < rate):
            chosen.add(index)
    return frozenset(chosen)


@dataclass
class RunPlan:
    endpoint: str
    order: list[int]
    executed: int
    failing: frozenset[int]
    unexecuted_error: dict[str, str]
    unsafe: bool
    catalog: Catalog
    cache: PromptCache | None = None


@dataclass
class RunResult:
    completed: int = 0
    failed: int = 0
    output_path: str | None = None
    error_path: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    stored: int = 0
    refused: Counter = field(default_factory=Counter)


def run_lines(input_path: str, batch: BatchInput, plan: RunPlan, new_file: Callable[[], IO[bytes]]) -> RunResult:
    """Execute the first ``plan.executed`` lines of ``plan.order``; the rest get ``unexecuted_error``."""
    result = RunResult()
    with open(input_path, "rb") as source, new_file() as out, new_file() as err:
        for position, index in enumerate(plan.order):
            custom_id = batch.custom_ids[index]
            if position >= plan.executed:
                line = _line(custom_id, None, plan.unexecuted_error)
            else:
                source.seek(batch.offsets[index])
                line = _execute(_load(source.readline()), plan, index in plan.failing, result)
            ok = line["response"] is not None and line["response"]["status_code"] == 200
            (out if ok else err).write(orjson.dumps(line) + b"\n")
            if ok:
                result.completed += 1
            elif position < plan.executed:
                result.failed += 1
        result.output_path = out.name if out.tell() else _discard(out.name)
        result.error_path = err.name if err.tell() else _discard(err.name)
    return result


def _load(raw: bytes) -> Any:
    """A line read_input accepted (orjson, several times faster; the standard parser for what it refuses,
    such as NaN or integers beyond 64 bits, which the standard one accepted at validation)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _execute(request: dict[str, Any], plan: RunPlan, fail: bool, result: RunResult) -> dict[str, Any]:
    custom_id = request["custom_id"]
    if fail:
        return _line(custom_id, {"status_code": 500, "request_id": ids.request_id(), "body": {"error": INJECTED_FAILURE}})
    try:
        body = respond(plan.endpoint, request["body"], catalog=plan.catalog, cache=plan.cache, unsafe=plan.unsafe)
    except ApiError as exc:
        result.refused[exc.code or "invalid_request"] += 1
        return _line(custom_id, {"status_code": exc.status, "request_id": ids.request_id(), "body": exc.body()})
    tokens_in, tokens_out, reasoning, cached = usage_totals(body)
    result.input_tokens += tokens_in
    result.output_tokens += tokens_out
    result.reasoning_tokens += reasoning
    result.cached_tokens += cached
    result.stored += plan.endpoint == RESPONSES and body.get("store") is True
    return _line(custom_id, {"status_code": 200, "request_id": ids.request_id(), "body": body})


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": ids.batch_request_id(), "custom_id": custom_id, "response": response, "error": error}


def _discard(path: str) -> None:
    os.unlink(path)


def executed_count(total: int, fraction: float) -> int:
    return min(total, math.floor(total * fraction + 1e-9))
