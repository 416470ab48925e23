"""SandboxState: the config, files, batches and stats of one sandbox, safe to use from many threads.

Config and the batch table sit behind one lock. Work that can take seconds (reading a
batch input, writing its output) runs outside it, under the batch's own ``run_lock``, so a
50,000-line batch settling never stalls the other endpoints.

A batch that is to complete has its lines run ahead, on one background thread in the order the
batches were created, as OpenAI works on a batch while the client does something else; the
output stays unpublished until the batch's clock says completed. A retrieve that finds the batch
completed before its lines are done waits for them, exactly as when nothing ran ahead; a batch
cancelled first drops what ran ahead and is settled with the lines run up to the cancel.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import random
import shutil
import threading
import time
from typing import Any, Mapping

from services.sandbox import ids
from services.sandbox.batch_io import (CANCELLED_ERROR, EXPIRED_ERROR, BatchInput, RunPlan, RunResult,
                                       failing_lines, read_input, run_lines, shuffled_order)
from services.sandbox.batches import ACTIVE, SETTLED, BatchRecord, Phase, Timing, phase, to_api
from services.sandbox.catalog import Catalog, base_catalog
from services.sandbox.config import SandboxConfig
from services.sandbox.errors import ApiError, invalid_request, missing_parameter, not_found
from services.sandbox.files import BATCH_FILE_LIMIT, UPLOAD_PURPOSES, FileStore
from services.sandbox.generate import ENDPOINTS, RESPONSES, respond
from services.sandbox.listing import cursor_page
from services.sandbox.prompt_cache import PromptCache
from services.sandbox.stats import Stats

log = logging.getLogger(__name__)

TOKEN_LIMIT_ERROR = ("token_limit_exceeded", "Enqueued token limit reached for {model} in organization "
                     "org-sandbox. Limit: 90,000 enqueued tokens. Please try again once some in_progress "
                     "batches have been completed.")


class SandboxState:
    def __init__(self, config: SandboxConfig, root: str):
        self.config = config
        self._initial = config.copy()
        self._lock = threading.RLock()
        self.files = FileStore(os.path.join(root, "files"))
        self._inputs = os.path.join(root, "batch-inputs")
        os.makedirs(self._inputs, exist_ok=True)
        self.stats = Stats()
        self._batches: dict[str, BatchRecord] = {}
        self._seq = itertools.count()
        self._rng = random.Random(config.fault_seed)
        self.catalog = base_catalog().with_overrides(config.catalog_overrides)
        self.prompt_cache = PromptCache(config.prompt_cache_seconds)
        self._ahead: queue.SimpleQueue[BatchRecord] = queue.SimpleQueue()
        self._ahead_thread: threading.Thread | None = None

    # config and control

    def config_dict(self) -> dict[str, Any]:
        with self._lock:
            return self.config.to_dict()

    def update_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.config.update(changes)
            if "fault_seed" in changes:
                self._rng = random.Random(self.config.fault_seed)
            self._apply_catalog_config()
            return self.config.to_dict()

    def _apply_catalog_config(self) -> None:
        """Rebuild the catalog from the overrides and set the cache's lifetime (caller holds the lock)."""
        self.catalog = base_catalog().with_overrides(self.config.catalog_overrides)
        self.prompt_cache.ttl = self.config.prompt_cache_seconds

    def reset(self) -> None:
        """Forget every file, batch and counter and go back to the config the server started with."""
        with self._lock:
            self.config.update(self._initial.to_dict())
            self._rng = random.Random(self.config.fault_seed)
            self._apply_catalog_config()
            batches, self._batches = list(self._batches.values()), {}
            self.stats = Stats()
        self.prompt_cache.clear()
        self.files.clear()
        for record in batches:
            _remove(record.input_path)

    # synchronous model calls

    def count_call(self, endpoint: str, vision: bool) -> None:
        kind = "responses" if endpoint == RESPONSES else "chat"
        self.stats.bump(f"{kind}_calls")
        self.stats.bump(f"{kind}_{'vision' if vision else 'text'}_calls")

    def respond(self, endpoint: str, body: Any) -> dict[str, Any]:
        """A direct model call's answer under the current catalog and prompt cache; refusals are counted."""
        with self._lock:
            catalog, unsafe = self.catalog, self.config.inject_unsafe_markup
        try:
            answer = respond(endpoint, body, catalog=catalog, cache=self.prompt_cache, unsafe=unsafe)
        except ApiError as exc:
            self.stats.refused(exc.code)
            raise
        if endpoint == RESPONSES and answer.get("store") is True:
            self.stats.bump("stored_responses")
        return answer

    def call_fate(self, vision: bool) -> tuple[ApiError | None, float]:
        """An injected error for the next model call, or else how many seconds it should take."""
        with self._lock:
            cfg = self.config
            status = cfg.fail_next.pop(0) if cfg.fail_next else self._random_fault(cfg)
            slow = status is None and cfg.slow_next > 0
            if slow:
                cfg.slow_next -= 1
            delay = cfg.vision_latency if vision else cfg.text_latency
            slow_seconds, retry_after = cfg.slow_seconds, cfg.retry_after_seconds
        if status is not None:
            self.stats.fault(status)
            return injected_error(status, retry_after), 0.0
        if slow:
            self.stats.bump("slow_calls")
            return None, max(delay, slow_seconds)
        return None, delay

    def _random_fault(self, cfg: SandboxConfig) -> int | None:
        if cfg.fail_rate_429 <= 0 and cfg.fail_rate_500 <= 0:
            return None
        draw = self._rng.random()
        if draw < cfg.fail_rate_429:
            return 429
        if draw < cfg.fail_rate_429 + cfg.fail_rate_500:
            return 500
        return None

    # files

    def upload(self, staged_path: str, filename: str, purpose: str) -> dict[str, Any]:
        try:
            _check_upload(staged_path, filename, purpose)
        except ApiError:
            _remove(staged_path)
            raise
        record = self.files.add(staged_path, filename, purpose)
        self.stats.bump("files_uploaded")
        self.stats.bump("bytes_uploaded", record.bytes)
        return record.to_api()

    def delete_file(self, file_id: str) -> dict[str, Any]:
        record = self.files.delete(file_id)
        self.stats.bump("files_deleted")
        return {"id": record.id, "object": "file", "deleted": True}

    # batches

    def create_batch(self, params: Any) -> dict[str, Any]:
        endpoint, input_file_id, window, metadata = _batch_params(params)
        batch_id = ids.batch_id()
        created = time.time()
        batch_input, input_path = self._load_input(batch_id, input_file_id, endpoint)
        with self._lock:
            outcome = self._take_outcome()
            cfg = self.config.copy()
            seq = next(self._seq)
        errors = list(batch_input.errors)
        if errors:
            self.stats.bump("batches_failed_validation")
        if not errors and outcome == "failed":
            code, message = TOKEN_LIMIT_ERROR
            errors = [{"code": code, "message": message.format(model=batch_input.model or "this model"),
                       "param": None, "line": None}]
        if errors:
            _remove(input_path)
            input_path = None
        record = BatchRecord(
            id=batch_id, seq=seq, created=created, endpoint=endpoint, input_file_id=input_file_id,
            completion_window=window, metadata=metadata,
            timing=Timing(cfg.batch_validating_seconds, cfg.batch_in_progress_seconds,
                          cfg.batch_finalizing_seconds, cfg.batch_cancelling_seconds),
            outcome=outcome, expire_fraction=cfg.batch_expire_completed_fraction, unsafe=cfg.inject_unsafe_markup,
            input=batch_input, input_path=input_path, errors=errors)
        if not errors:
            _plan_lines(record, cfg)
        with self._lock:
            self._batches[batch_id] = record
        self.stats.batch_created(metadata)
        if not errors and outcome == "completed":
            self._run_ahead(record)
        return to_api(record, Phase("validating"))

    def _run_ahead(self, record: BatchRecord) -> None:
        with self._lock:
            if self._ahead_thread is None or not self._ahead_thread.is_alive():
                self._ahead_thread = threading.Thread(target=self._ahead_loop, name="sandbox-batches", daemon=True)
                self._ahead_thread.start()
        self._ahead.put(record)

    def _ahead_loop(self) -> None:
        while True:
            record = self._ahead.get()
            try:
                self._prepare(record)
            except Exception:  # a reset under it, say: the batch is settled the ordinary way when asked
                log.debug("sandbox: running batch %s ahead failed", record.id, exc_info=True)

    def _prepare(self, record: BatchRecord) -> None:
        """Run a batch's lines into staged files, unpublished (``record.prepared``)."""
        with record.run_lock:
            if record.result is not None or record.prepared is not None or record.cancel_at is not None \
                    or record.input_path is None:
                return
            with self._lock:
                catalog = self.catalog
                known = self._batches.get(record.id) is record
            if not known:
                return
            plan = RunPlan(record.endpoint, record.order, record.planned_executions, record.failing, EXPIRED_ERROR,
                           record.unsafe, catalog, self.prompt_cache)
            record.prepared = run_lines(record.input_path, record.input, plan, self.files.staging_file)
            record.prepared_with = catalog

    def _take_outcome(self) -> str:
        """The outcome for a new batch; counts ``batch_outcome_count`` down (caller holds the lock)."""
        cfg = self.config
        outcome = cfg.batch_outcome
        if cfg.batch_outcome_count is not None:
            if cfg.batch_outcome_count <= 0:
                outcome = "completed"
            cfg.batch_outcome_count -= 1
            if cfg.batch_outcome_count <= 0:
                cfg.batch_outcome, cfg.batch_outcome_count = "completed", None
        return outcome

    def _load_input(self, batch_id: str, file_id: str, endpoint: str) -> tuple[BatchInput, str | None]:
        """A private link to the input file (so deleting the file later is harmless), validated."""
        problem = BatchInput()
        try:
            source = self.files.get(file_id)
            if source.purpose != "batch":
                problem.error("invalid_file_purpose", f"The input file must have purpose 'batch', not "
                                                      f"'{source.purpose}'.", param="input_file_id")
                return problem, None
            path = os.path.join(self._inputs, f"{batch_id}.jsonl")
            _link_or_copy(source.path, path)
        except (ApiError, FileNotFoundError):
            problem.error("invalid_file", f"The input file '{file_id}' does not exist.", param="input_file_id")
            return problem, None
        with self._lock:
            catalog = self.catalog
        return read_input(path, endpoint, catalog), path

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._render(self._record(batch_id))

    def batches_page(self, *, limit: int, after: str | None) -> dict[str, Any]:
        with self._lock:
            records = sorted(self._batches.values(), key=lambda r: r.seq, reverse=True)
        return cursor_page(records, self._render, limit=limit, after=after, key=lambda r: r.id)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        record = self._record(batch_id)
        with self._lock:
            now = time.time()
            current = phase(record, now)
            if current.status in ACTIVE:
                record.cancel_at = now
                record.cancel_executed = 0 if record.errors else record.executions_at(current.progress)
                self.stats.bump("batches_cancelled")
                current = phase(record, now)
                stamps = {k: v for k, v in current.stamps.items() if k != "cancelled_at"}
                return to_api(record, Phase("cancelling", current.progress, stamps))
            if current.status not in ("cancelling", "cancelled"):
                raise ApiError(409, f"Cannot cancel a batch with status '{current.status}'.",
                               headers={"x-should-retry": "false"})
        return self._render(record)

    def _record(self, batch_id: str) -> BatchRecord:
        with self._lock:
            record = self._batches.get(batch_id)
        if record is None:
            raise not_found("batch", batch_id)
        return record

    def _render(self, record: BatchRecord) -> dict[str, Any]:
        with self._lock:
            current = phase(record, time.time())
        if current.status in SETTLED and record.result is None:
            self._settle(record, current)
        return to_api(record, current)

    def _settle(self, record: BatchRecord, current: Phase) -> None:
        """Write the output and error files of a batch that just reached completed, expired or cancelled."""
        with record.run_lock:
            if record.result is not None:
                return
            cancelled = current.status == "cancelled"
            executed = record.cancel_executed if cancelled else record.planned_executions
            prepared, record.prepared = record.prepared, None
            with self._lock:
                catalog_changed = self.catalog is not record.prepared_with
            # lines run ahead count only for a batch that completed with the models as they were then (a
            # model shut down meanwhile fails the lines that had not run yet, as on OpenAI: run them again)
            if prepared is not None and (cancelled or current.status != "completed" or catalog_changed):
                _drop_files(prepared)
                prepared = None
            if record.errors or record.input_path is None:
                result = RunResult()
            elif prepared is not None:
                result = prepared
            else:
                with self._lock:
                    catalog = self.catalog
                plan = RunPlan(record.endpoint, record.order, executed, record.failing,
                               CANCELLED_ERROR if cancelled else EXPIRED_ERROR, record.unsafe, catalog,
                               self.prompt_cache)
                result = run_lines(record.input_path, record.input, plan, self.files.staging_file)
            for code, count in result.refused.items():
                self.stats.refused(code, count)
            self.stats.bump("stored_responses", result.stored)
            if result.output_path:
                record.output_file_id = self.files.add(result.output_path, f"{record.id}_output.jsonl",
                                                       "batch_output").id
            if result.error_path:
                record.error_file_id = self.files.add(result.error_path, f"{record.id}_error.jsonl",
                                                      "batch_output").id
            _remove(record.input_path)
            self.stats.bump("batch_lines_executed", executed if not record.errors else 0)
            record.result = result


def _plan_lines(record: BatchRecord, cfg: SandboxConfig) -> None:
    record.order = shuffled_order(len(record.input.custom_ids), record.id)
    record.failing = failing_lines(record.input.custom_ids, record.id, cfg.batch_line_failure_rate,
                                   cfg.batch_fail_custom_ids)
    record.fail_positions = [pos for pos, index in enumerate(record.order) if index in record.failing]


def _batch_params(params: Any) -> tuple[str, str, str, dict[str, str] | None]:
    if not isinstance(params, Mapping):
        raise invalid_request("Invalid body: the request body must be a JSON object.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if params.get(name) is None:
            raise missing_parameter(name)
    if not isinstance(params["input_file_id"], str):
        raise invalid_request("Invalid type for 'input_file_id': expected a string.", "input_file_id", "invalid_type")
    if params["endpoint"] not in ENDPOINTS:
        raise invalid_request(f"Invalid value for 'endpoint': '{params['endpoint']}'. The sandbox supports "
                              f"{' and '.join(repr(e) for e in ENDPOINTS)}.", "endpoint", "invalid_value")
    if params["completion_window"] != "24h":
        raise invalid_request(f"Invalid value for 'completion_window': '{params['completion_window']}'. Supported "
                              f"values are: '24h'.", "completion_window", "invalid_value")
    return params["endpoint"], params["input_file_id"], "24h", _metadata(params.get("metadata"))


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > 16:
        raise invalid_request("Invalid 'metadata': expected an object with at most 16 keys.", "metadata",
                              "invalid_value")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise invalid_request(f"Invalid 'metadata.{key}': keys are strings of at most 64 characters, values "
                                  f"strings of at most 512.", f"metadata.{key}", "invalid_value")
    return dict(value)


def _check_upload(path: str, filename: str, purpose: str) -> None:
    if not purpose:
        raise missing_parameter("purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise invalid_request(f"Invalid value for 'purpose': '{purpose}'. Supported values are: "
                              f"{', '.join(repr(p) for p in UPLOAD_PURPOSES)}.", "purpose", "invalid_value")
    if purpose != "batch":
        return
    if not filename.endswith(".jsonl"):
        raise invalid_request("Invalid file format for Batch API. Must be .jsonl", "file")
    if os.path.getsize(path) > BATCH_FILE_LIMIT:
        raise invalid_request(f"File is too large for Batch API: the limit is {BATCH_FILE_LIMIT // 2 ** 20} MB.",
                              "file")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        if not os.path.exists(source):
            raise FileNotFoundError(source) from None
        shutil.copyfile(source, target)


def _remove(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _drop_files(result: RunResult) -> None:
    """The staged output of lines run ahead for a batch that did not complete."""
    _remove(result.output_path)
    _remove(result.error_path)


def injected_error(status: int, retry_after: float) -> ApiError:
    """An injected fault; retry headers keep SDK retries quick (a zero retry-after alone means 'back off')."""
    headers = {"retry-after": str(math.ceil(retry_after)), "retry-after-ms": str(max(1, round(retry_after * 1000)))}
    return ApiError(status, headers=headers)
