"""Structured findings: the strict schema, repair of bad model output, rendering, and the API fields."""
from __future__ import annotations

import json
import re

import openai
import pytest

from services.errors import UpstreamError
from services.findings import (DAMAGE_TYPES, UnusableReport, normalize, photo_indexes, render_html,
                               report_schema)
from services.openai_client import ModelSettings, OpenAIGateway
from tests.support.client import Api, lot

NEW_FIELDS = ("findings", "primary_damage", "secondary_damage", "no_visible_damage", "coverage")


def finding(**changes):
    base = {"part": "front_bumper", "side": "front", "damage_type": "dent", "severity": "moderate",
            "photos": [1], "note": "A dent."}
    return {**base, **changes}


def answer(findings, **changes):
    base = {"findings": findings, "no_visible_damage": not findings, "primary_damage": "front_end" if findings else "none",
            "secondary_damage": None, "coverage": {"views_present": ["front"], "views_missing": ["rear"]}}
    return json.dumps({**base, **changes})


def strict_objects(schema):
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            yield schema
        for value in schema.values():
            yield from strict_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from strict_objects(value)


def test_schema_is_strict_mode_compatible():
    for obj in strict_objects(report_schema()):
        assert obj["additionalProperties"] is False
        assert set(obj["required"]) == set(obj["properties"])


def test_clean_answer_needs_no_repair():
    report, repairs = normalize(answer([finding()]), [0, 2])
    assert repairs.dropped == repairs.fixed == 0
    assert report["findings"][0]["photos"] == [0]
    assert report["coverage"]["views_missing"] == ["rear", "left", "right", "interior", "odometer", "engine_bay"]


@pytest.mark.parametrize("bad,dropped", [
    (finding(part="spoiler"), 1),
    (finding(severity="catastrophic"), 1),
    (finding(photos=[7]), 1),
    (finding(photos=[]), 1),
    ("not an object", 1),
])
def test_invalid_findings_are_dropped_and_counted(bad, dropped):
    report, repairs = normalize(answer([bad, finding(part="hood")]), [0])
    assert repairs.dropped == dropped
    assert [f["part"] for f in report["findings"]] == ["hood"]


def test_fixable_fields_are_repaired_and_counted():
    report, repairs = normalize(answer([finding(side="upside", damage_type="smudge", photos=[1, 9])],
                                       no_visible_damage=True, primary_damage="none"), [3])
    f = report["findings"][0]
    assert (f["side"], f["damage_type"], f["photos"]) == ("center", "other", [3])
    assert report["no_visible_damage"] is False and report["primary_damage"] == "unknown"
    assert repairs.fixed == 5


def test_no_findings_means_no_visible_damage():
    report, _ = normalize(answer([], no_visible_damage=False, primary_damage="hail", secondary_damage="roof"), [0])
    assert report["no_visible_damage"] is True
    assert (report["primary_damage"], report["secondary_damage"]) == ("none", None)


@pytest.mark.parametrize("text", ["not json", "[]", '{"findings": "none"}', "{}"])
def test_unusable_answers_raise(text):
    with pytest.raises(UnusableReport):
        normalize(text, [0])


@pytest.mark.parametrize("damage_type", DAMAGE_TYPES)
def test_each_damage_type_renders_one_item(damage_type):
    report, _ = normalize(answer([finding(damage_type=damage_type, note="<script>x</script>")]), [0])
    html = render_html(report)
    assert html.count("<li>") == 1 and damage_type.replace("_", " ") in html
    assert "<script>" not in html


def test_no_damage_renders_a_plain_sentence():
    report, _ = normalize(answer([]), [0])
    assert render_html(report).startswith("<p>No visible damage")


def test_photo_indexes_skip_missing_photos():
    assert photo_indexes(["a", "b", "c", "a"], ["a", "c", "a"]) == [0, 2, 3]


def test_unusable_model_answer_is_an_upstream_error():
    gateway = OpenAIGateway(client=None, models=ModelSettings())
    body = {"status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": "oops"}]}]}
    with pytest.raises(UpstreamError):
        gateway.read_vision(body, [0])


def test_sandbox_answer_round_trips_through_the_sdk(sandbox):
    client = openai.OpenAI(api_key="x", base_url=sandbox.url, _strict_response_validation=True)
    gateway = OpenAIGateway(client, ModelSettings())
    urls = [f"http://127.0.0.1:1/car{i}.jpg" for i in range(6)]
    seen_damage = seen_clean = False
    for n in range(12):
        result = gateway.describe(urls[: 1 + n % 6], f"car {n}", list(range(1 + n % 6)))
        assert result.repairs.dropped == result.repairs.fixed == 0
        seen_damage |= bool(result.report["findings"])
        seen_clean |= result.report["no_visible_damage"]
    assert seen_damage
    no_damage = gateway.describe(urls[:1], "no-damage demo car", [0])
    assert no_damage.report["no_visible_damage"] and no_damage.report["coverage"]["views_missing"]


def test_sync_answer_has_findings_and_one_item_per_finding_in_every_language(module_api: Api, image_server):
    urls = [image_server.url(f"/img/f{i}.jpg") for i in range(4)] + [image_server.url("/missing/f.jpg")]
    for n in range(6):
        body = module_api.generate([lot(f"f-{n}", urls, info=f"car number {n}")], languages=["en", "ru", "de"]).json()
        result = body["lots"][0]
        for field in NEW_FIELDS:
            assert field in result
        for description in result["descriptions"]:
            assert len(re.findall(r"<li>", description["damages"])) == len(result["findings"])
        for item in result["findings"]:
            assert all(0 <= index < 4 for index in item["photos"])


def test_batch_results_carry_findings(api: Api, image_server):
    lots = [lot(f"bf-{i}", [image_server.url(f"/img/bf{i}.jpg"), image_server.url(f"/img/bf{i}b.jpg")])
            for i in range(3)]
    job_id = api.generate(lots, languages=["en", "fr"]).json()["job_id"]
    api.wait_status(job_id)
    for item in api.results(job_id).json()["results"]["lots"]:
        assert all(field in item for field in NEW_FIELDS)
        for description in item["descriptions"]:
            assert description["damages"].count("<li>") == len(item["findings"])


def test_rendered_location_names_a_side_only_for_left_and_right():
    report, _ = normalize(answer([finding(part="rear_bumper", side="rear"), finding(part="front_door", side="left")]),
                          [0])
    html = render_html(report)
    assert "<strong>Rear bumper</strong>" in html and "<strong>Left front door</strong>" in html
