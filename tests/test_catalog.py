"""The catalog check on its own: what each kind of answer from GET /v1/models/{id} does (no servers)."""
from __future__ import annotations

from datetime import date, timedelta

import httpx
import openai
import pytest
import requests

from services.catalog import Catalog, ModelUnavailable
from services.clock import utcnow

REQUEST = httpx.Request("GET", "https://api.openai.com/v1/models/x")


def not_found(code: str | None) -> openai.NotFoundError:
    body = {"error": {"message": "The model does not exist", "type": "invalid_request_error", "param": None,
                      "code": code}}
    return openai.NotFoundError("not found", response=httpx.Response(404, request=REQUEST), body=body["error"])


class Answers:
    """A stand-in for client.models.retrieve: answers (or raises) from a queue per model."""

    def __init__(self, queues: dict):
        self.queues = {model: list(answers) for model, answers in queues.items()}
        self.calls: list[str] = []

    def __call__(self, model: str):
        self.calls.append(model)
        answer = self.queues[model].pop(0) if len(self.queues[model]) > 1 else self.queues[model][0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def catalog(answers: Answers, vision: str = "gpt-6.1-terra", translation: str = "gpt-6-luna") -> Catalog:
    return Catalog(answers, {"OPENAI_MODEL_VISION": vision, "OPENAI_MODEL_TRANSLATION": translation})


def test_a_model_openai_does_not_serve_stops_start_up_and_is_an_error_later():
    answers = Answers({"gpt-6.1-terra": [not_found("model_not_found")], "gpt-6-luna": [{"id": "gpt-6-luna"}]})
    with pytest.raises(ModelUnavailable, match="OPENAI_MODEL_VISION=gpt-6.1-terra"):
        catalog(answers).check(at_startup=True)
    later = catalog(answers)
    assert later.check() is True
    degraded, models = later.health()
    assert degraded and models[0]["state"] == "shutdown"


def test_a_server_without_a_catalog_is_not_taken_for_a_missing_model():
    answers = Answers({"gpt-6.1-terra": [not_found(None)], "gpt-6-luna": [not_found(None)]})
    found = catalog(answers)
    assert found.check(at_startup=True) is False
    degraded, models = found.health()
    assert not degraded and [m["state"] for m in models] == ["active", "active"]
    assert models[0]["source"] == "registry" and models[0]["error"] == "the server has no model catalog"


def test_openai_out_of_reach_at_start_up_is_a_warning_and_the_next_check_learns(caplog):
    unreachable = openai.APIConnectionError(request=REQUEST)
    soon = (utcnow().date() + timedelta(days=10)).isoformat()
    answers = Answers({"gpt-6.1-terra": [unreachable, {"id": "gpt-6.1-terra", "shutdown_date": soon}],
                      "gpt-6-luna": [unreachable, {"id": "gpt-6-luna", "shutdown_date": None}]})
    found = catalog(answers)
    assert found.check(at_startup=True) is False
    assert "checking again later" in caplog.text
    assert found.health()[0] is False
    assert found.check() is True
    degraded, models = found.health()
    assert degraded and models[0]["state"] == "deprecated" and models[0]["days_left"] == 10
    assert "shuts it down on " + soon in caplog.text


def test_degraded_starts_fourteen_days_before_the_shutdown():
    day = date(2027, 1, 14)
    answers = Answers({"gpt-6.1-terra": [{"id": "gpt-6.1-terra"}],
                       "gpt-6-luna": [{"id": "gpt-6-luna", "shutdown_date": day.isoformat()}]})
    found = catalog(answers)
    found.check()
    assert found.health(day - timedelta(days=15))[0] is False
    assert found.health(day - timedelta(days=14))[0] is True
    assert found.health(day)[1][1]["state"] == "shutdown"


def test_an_unknown_model_is_named_in_a_warning(caplog):
    answers = Answers({"gpt-7-nova": [{"id": "gpt-7-nova"}], "gpt-6-luna": [{"id": "gpt-6-luna"}]})
    found = catalog(answers, vision="gpt-7-nova")
    assert "OPENAI_MODEL_VISION=gpt-7-nova is not in the model registry" in caplog.text
    found.check()
    assert found.health()[1][0]["in_registry"] is False and found.health()[1][0]["state"] == "active"


def test_the_service_starts_when_openai_is_out_of_reach(make_live):
    live = make_live(OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_TIMEOUT="2")
    body = requests.get(f"{live.url}/health", timeout=10).json()
    assert body["status"] == "healthy"
    assert all(m["error"] and m["error"].startswith("catalog check failed") for m in body["openai"]["models"])
