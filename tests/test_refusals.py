"""The service against OpenAI's catalog as the sandbox serves it: what production would refuse fails here too.

The sandbox's catalog (services/sandbox/catalog.json) is written from OpenAI's pages independently of the
service's registry (services/model_registry.json); these tests hold the two against each other.
"""
from __future__ import annotations

from datetime import timedelta

import openai
import pytest
import requests

from app.config import ConfigError
from services.clock import utcnow
from services.models import EFFORTS, registry
from services.prompts import translation_request, vision_request
from tests.support.client import CAMRY, Api, photo_lots

TODAY = utcnow().date()


def _lots(image_server, count: int, prefix: str):
    return photo_lots(image_server, count, prefix, photos=("front",), info=CAMRY)


def test_the_default_configuration_completes_sync_and_batch_with_nothing_refused(api: Api, sandbox, image_server):
    sync = api.generate(_lots(image_server, 1, "d"), languages=["en", "de", "ja"])
    assert sync.status_code == 200, sync.text
    job = api.generate(_lots(image_server, 3, "db"), languages=["en", "de", "fr"]).json()
    assert api.wait_status(job["job_id"])["status"] == "completed"
    stats = sandbox.stats()
    assert stats["refused"] == {} and stats["batches_failed_validation"] == 0
    assert stats["stored_responses"] == 0  # every call sent store: false


@pytest.mark.parametrize("model", sorted(name for name, rules in registry().models.items()
                                          if rules.state_on(TODAY) != "shutdown"))
def test_every_served_model_of_the_registry_has_its_requests_accepted(sandbox, model):
    client = openai.OpenAI(api_key="x", base_url=sandbox.url, max_retries=0)
    rules = registry().rules(model)
    efforts = [e for e in EFFORTS if rules.takes_effort(e)] or [None]
    for effort in efforts:
        for body in (vision_request(rules, ["http://127.0.0.1:1/front.jpg"], "note", max_tokens=500,
                                    reasoning_effort=effort),
                     translation_request(rules, "<p>A dent.</p>", ["de"], max_tokens=500, reasoning_effort=effort,
                                         temperature=0.1)):
            client.responses.create(**body)
    assert sandbox.stats()["refused"] == {}


@pytest.mark.parametrize("model", sorted(name for name, rules in registry().models.items()
                                          if rules.state_on(TODAY) == "shutdown"))
def test_every_shut_down_model_of_the_registry_is_refused_by_the_catalog(sandbox, model):
    client = openai.OpenAI(api_key="x", base_url=sandbox.url, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(model)
    assert caught.value.code == "model_not_found"


def test_a_shut_down_model_stops_start_up_naming_the_setting(make_app):
    with pytest.raises(ConfigError) as caught:
        make_app(OPENAI_MODEL_VISION="o4-mini")
    assert "OPENAI_MODEL_VISION=o4-mini" in str(caught.value)


def test_a_deprecated_model_shows_its_date_in_health(make_live, sandbox):
    soon = (TODAY + timedelta(days=5)).isoformat()
    sandbox.configure(catalog_overrides={"gpt-6.1-terra": {"shutdown_date": soon}})
    live = make_live(OPENAI_MODEL_TRANSLATION="gpt-4.1-mini", OPENAI_TRANSLATION_REASONING_EFFORT="none")
    answer = requests.get(f"{live.url}/health", timeout=10)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded"
    models = {m["setting"]: m for m in body["openai"]["models"]}
    vision, translation = models["OPENAI_MODEL_VISION"], models["OPENAI_MODEL_TRANSLATION"]
    assert (vision["model"], vision["state"], vision["shutdown_date"], vision["days_left"]) == \
        ("gpt-6.1-terra", "deprecated", soon, 5)
    assert vision["source"] == "catalog" and vision["checked_at"]
    assert (translation["model"], translation["state"], translation["shutdown_date"]) == \
        ("gpt-4.1-mini", "deprecated", "2027-01-14")
    metrics = requests.get(f"{live.url}/metrics", timeout=10).text
    assert 'openai_model_shutdown_timestamp_seconds{model="gpt-4.1-mini",setting="OPENAI_MODEL_TRANSLATION"} 1.7998848e+09' in metrics


def test_a_model_far_from_its_shutdown_is_deprecated_but_healthy(make_live):
    live = make_live(OPENAI_MODEL_TRANSLATION="gpt-4.1-mini")
    body = requests.get(f"{live.url}/health", timeout=10).json()
    assert body["status"] == "healthy"
    assert {m["model"]: m["state"] for m in body["openai"]["models"]} == {"gpt-6.1-terra": "active",
                                                                         "gpt-4.1-mini": "deprecated"}


def test_a_refused_parameter_fails_a_sync_request_at_once_and_is_not_retried(make_live, sandbox, image_server):
    live = make_live(OPENAI_MAX_RETRIES="2")
    # OpenAI changes its mind about the translation model after start-up: effort none is no longer taken
    sandbox.configure(catalog_overrides={"gpt-6-luna": {"efforts": ["low", "medium", "high", "xhigh", "max"]}})
    before = sandbox.stats()["responses_text_calls"]
    answer = Api(live.url).generate(_lots(image_server, 1, "r"), languages=["en", "de"])
    assert answer.status_code == 502, answer.text
    error = answer.json()
    assert error["code"] == "OPENAI_API_ERROR"
    assert error["details"]["setting"] == "OPENAI_TRANSLATION_REASONING_EFFORT"
    assert "unsupported_value" in error["details"]["openai_error"]
    assert sandbox.stats()["responses_text_calls"] - before == 1  # the SDK's two retries were not used


def test_a_refused_batch_line_ends_the_job_without_resubmitting(make_live, sandbox, image_server):
    live = make_live(BATCH_RESUBMIT_ATTEMPTS="2")
    api = Api(live.url)
    sandbox.configure(catalog_overrides={"gpt-6-luna": {"efforts": ["low", "medium", "high", "xhigh", "max"]}})
    job = api.generate(_lots(image_server, 4, "rb"), languages=["en", "de"]).json()
    final = api.wait_status(job["job_id"])
    assert final["status"] == "failed"
    assert "OPENAI_TRANSLATION_REASONING_EFFORT" in final["error_message"]
    stats = sandbox.stats()
    assert stats["batches_created"] == 2  # one vision batch, one translation batch: nothing resubmitted
    assert stats["refused"].get("unsupported_value") == 4
    results = api.results(job["job_id"])
    assert results.status_code == 409
    lots = api.get(f"/api/v1/batch-results/{job['job_id']}/download", sign=job["job_id"]).json()["results"]["lots"]
    assert all(item["status"] == "failed" and "OPENAI_TRANSLATION_REASONING_EFFORT" in item["error"] for item in lots)


def test_a_batch_refused_at_validation_ends_its_job_with_the_reason(make_live, sandbox, image_server):
    live = make_live(BATCH_RESUBMIT_ATTEMPTS="2")
    api = Api(live.url)
    sandbox.configure(catalog_overrides={"gpt-6.1-terra": {"shut_down": True}})  # after start-up
    job = api.generate(_lots(image_server, 3, "rv"), languages=["en", "de"]).json()
    final = api.wait_status(job["job_id"])
    assert final["status"] == "failed"
    assert "model_not_found" in final["error_message"] and "OPENAI_MODEL_VISION" in final["error_message"]
    stats = sandbox.stats()
    assert stats["batches_created"] == 1 and stats["batches_failed_validation"] == 1


def test_a_refused_direct_call_ends_a_direct_job_after_one_page(make_live, sandbox, image_server):
    live = make_live(BATCH_STRATEGY="direct", DIRECT_CONCURRENCY="2")
    api = Api(live.url)
    sandbox.configure(catalog_overrides={"gpt-6.1-terra": {"shut_down": True}})
    before = sandbox.stats()["responses_vision_calls"]
    job = api.generate(_lots(image_server, 20, "rd"), languages=["en"]).json()
    final = api.wait_status(job["job_id"])
    assert final["status"] == "failed" and "OPENAI_MODEL_VISION" in final["error_message"]
    assert final["progress"]["failed_lots"] == 20
    assert sandbox.stats()["responses_vision_calls"] - before <= 4  # one page, not 20 paid-for refusals
