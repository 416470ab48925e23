"""The two paid stages of a job, described once so that the Batch API path and the direct path share them.

A stage says which lots it takes, what request each lot becomes, and what a good answer
writes back. Writing back is conditional on the lot still waiting for this stage, so a
repeated collection after a crash changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from database.models import BatchJob, BatchLot, BatchResult
from database.upsert import insert_ignore
from services.clock import utcnow
from services.errors import ServiceError
from services.findings import photo_indexes
from services.generation import is_english
from services.openai_client import OpenAIGateway, UnusableAnswer, Usage


@dataclass
class Outcome:
    """What happened to one lot in one stage: a success (values) or a failure (error)."""
    seq: int
    body: dict[str, Any] | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    # OpenAI refused the request as configured (model_not_found, unsupported_parameter/value)
    refused: bool = False


def lot_usage_values(lot: BatchLot, usage: Usage) -> dict[str, Any]:
    """The lot's usage columns after this stage's answer (the write is conditional, so it is added once)."""
    return {"input_tokens": (lot.input_tokens or 0) + usage.input_tokens,
            "cached_input_tokens": (lot.cached_input_tokens or 0) + usage.cached_input_tokens,
            "output_tokens": (lot.output_tokens or 0) + usage.output_tokens,
            "reasoning_tokens": (lot.reasoning_tokens or 0) + usage.reasoning_tokens,
            "cost_usd": (lot.cost_usd or 0.0) + usage.cost_usd}


class Stage:
    kind: str
    waiting_status: str
    done_status: str

    def __init__(self, ai: OpenAIGateway, job: BatchJob, max_attempts: int):
        self.ai = ai
        self.job = job
        self.max_attempts = max_attempts
        # answers of Batch API lines are priced at the Batch price (set by the shard manager)
        self.batch_api = False
        # the reason OpenAI refused this stage's requests as configured; the job ends with it
        self.refused: str | None = None

    @property
    def shard_column(self):
        return getattr(BatchLot, f"{self.kind}_shard")

    @property
    def attempts_column(self):
        return getattr(BatchLot, f"{self.kind}_attempts")

    needs_api = True
    # the lot columns a stage reads: its lots are read as plain rows of these (attribute access like a
    # BatchLot), not as ORM objects, whose hydration of every column was most of the cost of reading them
    reads = ("id", "seq", "additional_info", "image_urls", "usable_images", "description_en", "vision_attempts",
             "translation_attempts", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
             "cost_usd")

    def lots_query(self):
        """Rows of the columns in ``reads`` for this job's lots waiting for this stage."""
        table = BatchLot.__table__
        return select(*(table.c[name] for name in self.reads)).where(self.waiting())

    def waiting(self):
        return (BatchLot.job_id == self.job.id) & (BatchLot.status == self.waiting_status)

    def request_body(self, lot: BatchLot) -> dict[str, Any]:
        raise NotImplementedError

    def success_values(self, lot: BatchLot, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict], Usage]:
        """Lot column values, result rows and usage for a good answer; raises ServiceError for a bad one."""
        raise NotImplementedError

    def apply(self, session: Session, outcomes: list[Outcome], shard: int | None) -> Usage:
        """Write a page of outcomes for lots that still wait for this stage (in ``shard`` when given)."""
        by_seq = {o.seq: o for o in outcomes}
        query = self.lots_query().where(BatchLot.seq.in_(list(by_seq)))
        if shard is not None:
            query = query.where(self.shard_column == shard)
        usage = Usage()
        rows: list[dict] = []
        done: list[tuple[int, dict[str, Any]]] = []
        for lot in session.execute(query).all():
            outcome = by_seq[lot.seq]
            if outcome.body is not None:
                try:
                    values, results, line_usage = self.success_values(lot, outcome.body)
                except UnusableAnswer as exc:
                    # an answer we cannot use was still billed: its tokens count
                    outcome = Outcome(lot.seq, error=(exc.details or {}).get("openai_error") or exc.message,
                                      usage=exc.usage)
                except ServiceError as exc:
                    outcome = Outcome(lot.seq, error=(exc.details or {}).get("openai_error") or exc.message)
                else:
                    done.append((lot.id, {**values, **lot_usage_values(lot, line_usage)}))
                    rows += results
                    usage.add(line_usage)
                    continue
            usage.add(outcome.usage)
            if outcome.refused:
                self.refused = self.refused or outcome.error
            self.fail_or_retry(session, lot, outcome.error or "no answer", refused=outcome.refused)
        self._update_many(session, done)
        insert_ignore(session, BatchResult, rows)
        return usage

    def fail_or_retry(self, session: Session, lot: BatchLot, error: str, refused: bool = False) -> None:
        """Send the lot to a later shard, or fail it once its attempts are spent (at once when refused)."""
        attempts = getattr(lot, self.attempts_column.key) + 1
        if attempts < self.max_attempts and not refused:
            self._update(session, lot, {self.shard_column.key: None, self.attempts_column.key: attempts})
        else:
            self._update(session, lot, {"status": "failed", self.attempts_column.key: attempts,
                                        "error_message": f"{self.kind} failed: {error}"[:1000],
                                        "processed_at": utcnow()})

    def _update_many(self, session: Session, done: list[tuple[int, dict[str, Any]]]) -> None:
        """The successes of a page in one executemany (one round trip per lot was most of a 50,000-lot job)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for pk, values in done:
            groups.setdefault(tuple(sorted(values)), []).append(
                {"lot_pk": pk, **{f"new_{name}": value for name, value in values.items()}})
        table = BatchLot.__table__
        for names, params in groups.items():
            statement = (table.update()
                         .where(table.c.id == bindparam("lot_pk"), table.c.status == self.waiting_status)
                         .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in names}))
            session.execute(statement, params)

    def _update(self, session: Session, lot: BatchLot, values: dict[str, Any]) -> None:
        session.execute(update(BatchLot).where(BatchLot.id == lot.id, BatchLot.status == self.waiting_status)
                        .values(**values).execution_options(synchronize_session=False))


class VisionStage(Stage):
    kind = "vision"
    waiting_status = "ready"
    done_status = "described"

    def request_body(self, lot: BatchLot) -> dict[str, Any]:
        return self.ai.vision_body(lot.usable_images or [], lot.additional_info or "")

    def success_values(self, lot, body):
        usable = lot.usable_images or []
        result = self.ai.read_vision(body, photo_indexes(lot.image_urls, usable), batch=self.batch_api)
        return ({"status": "described", "description_en": result.html, "findings": result.report,
                 "processed_images": len(usable)}, [], result.usage)


class TranslationStage(Stage):
    kind = "translation"
    waiting_status = "described"
    done_status = "completed"

    reads = ("id", "seq", "description_en", "vision_attempts", "translation_attempts", "input_tokens",
             "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost_usd")

    @property
    def targets(self) -> list[str]:
        return [code for code in self.job.languages if not is_english(code)]

    @property
    def needs_api(self) -> bool:
        return bool(self.targets)

    def request_body(self, lot: BatchLot) -> dict[str, Any]:
        return self.ai.translation_body(lot.description_en or "", self.targets)

    def success_values(self, lot, body):
        result = self.ai.read_translation(body, self.targets, batch=self.batch_api) if body else None
        texts = result.texts if result else {}
        rows = [{"job_id": self.job.id, "lot_pk": lot.id, "language": code,
                 "damages": lot.description_en if is_english(code) else texts[code], "created_at": utcnow()}
                for code in self.job.languages]
        return ({"status": "completed", "processed_at": utcnow()}, rows, result.usage if result else Usage())
