"""Synchronous mode through HTTP: one car in, descriptions in every requested language out."""
from __future__ import annotations

import pytest
import requests

from tests.support.client import Api, body_signature, lot


def test_one_car_three_photos_one_missing(module_api: Api, image_server):
    urls = [image_server.url("/img/front.jpg"), image_server.url("/img/side.jpg"), image_server.url("/missing/rear.jpg")]
    answer = module_api.generate([lot("sync-1", urls)], languages=["en", "ru", "de"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["processing_mode"] == "synchronous"
    assert body["version"] == "1.0.0" and body["total_lots"] == 1 and body["processed_at"].endswith("Z")
    result = body["lots"][0]
    assert result["lot_id"] == "sync-1" and result["status"] == "completed"
    assert result["processed_images"] == 2
    assert result["missing_images"] == [urls[2]]
    assert [d["language"] for d in result["descriptions"]] == ["en", "ru", "de"]
    for description in result["descriptions"]:
        assert description["damages"].startswith("<")
    assert "[ru]" in result["descriptions"][1]["damages"]


def test_descriptions_follow_requested_order_without_english(module_api: Api, image_server):
    answer = module_api.generate([lot("sync-2", [image_server.url("/img/a.jpg")])], languages=["de", "pt-BR"])
    assert answer.status_code == 200, answer.text
    assert [d["language"] for d in answer.json()["lots"][0]["descriptions"]] == ["de", "pt-BR"]


def test_wrong_key_is_403_json(module_api: Api, image_server):
    answer = module_api.generate([lot("sync-3", [image_server.url("/img/a.jpg")])], key="another-key-of-enough-length-0123456789")
    assert answer.status_code == 403
    assert answer.json()["code"] == "INVALID_SIGNATURE"


def test_bare_hex_signature_of_v1_is_accepted(module_live, image_server):
    lots = [lot("sync-4", [image_server.url("/img/a.jpg")])]
    payload = {"signature": body_signature(lots, prefix=False), "version": "1.0.0", "languages": ["en"], "lots": lots}
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json=payload, timeout=30)
    assert answer.status_code == 200, answer.text


def test_missing_signature_is_401(module_live, image_server):
    lots = [lot("sync-5", [image_server.url("/img/a.jpg")])]
    answer = requests.post(f"{module_live.url}/api/v1/generate-descriptions", json={"languages": ["en"], "lots": lots}, timeout=30)
    assert answer.status_code == 401 and answer.json()["code"] == "MISSING_SIGNATURE"


def test_too_few_usable_images_is_422_listing_missing(module_api: Api, image_server):
    urls = [image_server.url("/missing/a.jpg"), image_server.url("/missing/b.jpg"), image_server.url("/img/c.jpg")]
    answer = module_api.generate([lot("sync-6", urls)])
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "NOT_ENOUGH_IMAGES"
    assert body["details"]["missing_images"] == urls[:2]


def test_model_markup_is_sanitized(module_api: Api, image_server, sandbox):
    sandbox.configure(inject_unsafe_markup=True)
    answer = module_api.generate([lot("sync-7", [image_server.url("/img/a.jpg")])], languages=["en", "fr"])
    assert answer.status_code == 200, answer.text
    for description in answer.json()["lots"][0]["descriptions"]:
        html = description["damages"].lower()
        assert "<script" not in html and "onclick" not in html and "javascript:" not in html and "href" not in html


@pytest.mark.parametrize("status,code", [(429, "OPENAI_API_ERROR"), (500, "OPENAI_API_ERROR")])
def test_upstream_errors_map_to_502(module_api: Api, image_server, sandbox, status, code):
    sandbox.configure(fail_next=[status])
    answer = module_api.generate([lot("sync-8", [image_server.url("/img/a.jpg")])])
    assert answer.status_code == 502
    assert answer.json()["code"] == code


def test_upstream_timeout_maps_to_504(make_live, image_server, sandbox):
    api = Api(make_live(OPENAI_TIMEOUT="1").url)
    sandbox.configure(slow_next=1, slow_seconds=3)
    answer = api.generate([lot("sync-9", [image_server.url("/img/a.jpg")])])
    assert answer.status_code == 504
    assert answer.json()["code"] == "OPENAI_TIMEOUT"
