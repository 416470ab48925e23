"""The configured models against OpenAI's live catalog (GET /v1/models/{id}), at start-up and once a day.

A model OpenAI does not serve stops start-up; a model with a shutdown date is logged and shown
in /health (``degraded`` from DEGRADED_DAYS before the date); OpenAI out of reach at start-up is
a warning, and the check runs again later. The registry's own date is used until the catalog
has answered.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

import openai

from services.clock import iso, utcnow
from services.models import registry

log = logging.getLogger(__name__)

DEGRADED_DAYS = 14
CHECK_EVERY = timedelta(days=1)
RETRY_AFTER_FAILURE = timedelta(minutes=10)


class ModelUnavailable(Exception):
    """A configured model that OpenAI answers 404 for; the message names the setting and the model."""


@dataclass
class ModelState:
    setting: str
    model: str
    known: bool
    shutdown_date: date | None = None
    source: str = "registry"
    checked_at: datetime | None = None
    served: bool | None = None  # None: not checked yet (or OpenAI out of reach)
    error: str | None = None

    def state(self, today: date) -> str:
        if self.served is False or (self.shutdown_date is not None and today >= self.shutdown_date):
            return "shutdown"
        if self.shutdown_date is not None:
            return "deprecated"
        return "active" if self.served or self.known else "unknown"

    def degraded(self, today: date) -> bool:
        return self.state(today) == "shutdown" or (
            self.shutdown_date is not None and today >= self.shutdown_date - timedelta(days=DEGRADED_DAYS))

    def as_dict(self, today: date) -> dict[str, Any]:
        return {"setting": self.setting, "model": self.model, "state": self.state(today),
                "shutdown_date": self.shutdown_date.isoformat() if self.shutdown_date else None,
                "days_left": (self.shutdown_date - today).days if self.shutdown_date else None,
                "source": self.source, "checked_at": iso(self.checked_at), "in_registry": self.known,
                "error": self.error}


@dataclass
class Catalog:
    """What is known of each configured model; ``check`` asks OpenAI, ``watch`` repeats it daily."""
    retrieve: Callable[[str], Any]
    models: dict[str, str]
    on_shutdown_date: Callable[[str, str, date | None], None] = lambda setting, model, day: None
    states: dict[str, ModelState] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        for setting, model in self.models.items():
            rules = registry().rules(model)
            self.states[setting] = ModelState(setting, model, rules.known, rules.shutdown_date)
            if not rules.known:
                log.warning("%s=%s is not in the model registry (checked %s): its requests carry neither a "
                            "reasoning effort nor a temperature, and it is priced like the dearest known model",
                            setting, model, registry().checked.isoformat())

    def check(self, at_startup: bool = False) -> bool:
        """Ask OpenAI about every configured model; True when every answer came. A 404 for a model raises
        ModelUnavailable at start-up and is logged as an error later."""
        complete = True
        for setting, state in self.states.items():
            try:
                found = self.retrieve(state.model)
            except openai.NotFoundError as exc:
                if getattr(exc, "code", None) != "model_not_found":
                    complete = False  # a compatible server without the models endpoint
                    state.error = "the server has no model catalog"
                    continue
                state.served, state.checked_at, state.source = False, utcnow(), "catalog"
                state.error = f"OpenAI does not serve {state.model}"
                message = (f"{setting}={state.model}: OpenAI answers that this model does not exist or is not "
                           f"available to this API key (it may have been shut down); choose another model for "
                           f"{setting}")
                if at_startup:
                    raise ModelUnavailable(message) from None
                log.error(message)
                continue
            except openai.OpenAIError as exc:
                complete = False
                state.error = f"catalog check failed: {type(exc).__name__}"
                log.warning("could not check %s=%s against OpenAI's catalog (%s); checking again later", setting,
                            state.model, type(exc).__name__)
                continue
            self._learn(state, found)
        for state in self.states.values():
            self.on_shutdown_date(state.setting, state.model, state.shutdown_date)
            self._warn(state)
        return complete

    @staticmethod
    def _learn(state: ModelState, found: Any) -> None:
        raw = found.get("shutdown_date") if isinstance(found, dict) else getattr(found, "shutdown_date", None)
        state.served, state.checked_at, state.source, state.error = True, utcnow(), "catalog", None
        try:
            state.shutdown_date = date.fromisoformat(raw) if raw else None
        except (TypeError, ValueError):
            log.warning("OpenAI gave %s an unreadable shutdown_date %r", state.model, raw)

    @staticmethod
    def _warn(state: ModelState) -> None:
        if state.shutdown_date is None:
            return
        days = (state.shutdown_date - utcnow().date()).days
        log.warning("%s=%s is deprecated: OpenAI shuts it down on %s (%d days from today); choose its replacement",
                    state.setting, state.model, state.shutdown_date.isoformat(), days)

    def health(self, today: date | None = None) -> tuple[bool, list[dict[str, Any]]]:
        """(degraded, one entry per configured setting) for /health."""
        today = today or utcnow().date()
        states = list(self.states.values())
        return any(s.degraded(today) for s in states), [s.as_dict(today) for s in states]

    def watch(self, first_delay: timedelta) -> None:
        """Check again after ``first_delay``, then daily (sooner after a failed check), on a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            delay = first_delay
            while not self._stop.wait(delay.total_seconds()):
                try:
                    ok = self.check()
                except Exception:  # a check must never kill its thread
                    log.exception("model catalog check failed")
                    ok = False
                delay = CHECK_EVERY if ok else RETRY_AFTER_FAILURE

        self._thread = threading.Thread(target=loop, name="model-catalog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def shutdown_timestamp(day: date | None) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() if day else 0.0
