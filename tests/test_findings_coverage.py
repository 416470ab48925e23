"""The findings/coverage rule: no view is both listed missing and the place of a finding, on every answer."""
from __future__ import annotations

import json

import pytest

from services.findings import PARTS, SIDES, VIEWS, normalize, view_of
from services.metrics import Metrics
from services.openai_client import ModelSettings, OpenAIGateway
from tests.support.client import Api, lot


def finding(part="front_bumper", side="front", **changes):
    base = {"part": part, "side": side, "damage_type": "dent", "severity": "moderate", "photos": [1],
            "note": "A dent."}
    return {**base, **changes}


def answer(findings, present, missing=None, primary="front_end", secondary=None):
    return json.dumps({"findings": findings, "no_visible_damage": not findings, "primary_damage": primary,
                       "secondary_damage": secondary,
                       "coverage": {"views_present": present,
                                    "views_missing": [v for v in VIEWS if v not in present] if missing is None
                                    else missing}})


def response(text):
    return {"status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}


@pytest.mark.parametrize("part,side,view,primary", [
    ("front_bumper", "front", "front", "front_end"),
    ("headlight", "left", "front", "front_end"),
    ("rear_bumper", "rear", "rear", "rear_end"),
    ("trunk_lid", "center", "rear", "rear_end"),
    ("front_door", "left", "left", "left_side"),
    ("rear_quarter_panel", "right", "right", "right_side"),
    ("mirror", "right", "right", "right_side"),
    ("seat", "center", "interior", "interior"),
    ("airbag", "left", "interior", "interior"),
    ("engine_bay", "front", "engine_bay", "unknown"),
])
def test_a_view_a_finding_is_seen_from_moves_from_missing_to_present(part, side, view, primary):
    others = [v for v in ("odometer", "front", "rear") if v != view][:1]
    report, repairs = normalize(answer([finding(part, side, photos=[2])], others, primary=primary), [4, 7])
    assert view in report["coverage"]["views_present"] and view not in report["coverage"]["views_missing"]
    assert set(report["coverage"]["views_present"]) == {*others, view}
    assert (repairs.fixed, repairs.dropped) == (1, 0)
    assert repairs.reasons == [f"view {view!r} listed missing, yet a finding on the {part} ({side}) cites photos [7]"]
    assert report["findings"][0]["photos"] == [7]
    assert report["no_visible_damage"] is False and report["primary_damage"] == primary


def test_a_view_listed_both_missing_and_omitted_is_repaired_once_per_view():
    findings = [finding("front_bumper"), finding("hood"), finding("front_door", "left", photos=[2])]
    report, repairs = normalize(answer(findings, ["rear"], missing=["front", "left", "interior"]), [0, 1])
    assert report["coverage"]["views_present"] == ["front", "rear", "left"]
    assert report["coverage"]["views_missing"] == ["right", "interior", "odometer", "engine_bay"]
    assert repairs.fixed == 2 and len(report["findings"]) == 3


@pytest.mark.parametrize("findings,present,primary,secondary", [
    ([finding()], ["front"], "front_end", None),
    ([finding(), finding("rear_door", "right")], ["front", "right"], "front_end", "right_side"),
    ([finding("roof", "center"), finding("undercarriage", "center")], [], "hail", None),
    ([finding("wheel", "center")], ["interior"], "all_over", "roof"),
    ([finding("other", "center")], [], "unknown", None),
    ([], [], "none", None),
])
def test_consistent_answers_are_left_as_they_are(findings, present, primary, secondary):
    text = answer(findings, present, primary=primary, secondary=secondary)
    report, repairs = normalize(text, [0])
    assert (repairs.fixed, repairs.dropped) == (0, 0)
    assert report["coverage"]["views_present"] == present
    assert (report["primary_damage"], report["secondary_damage"]) == (primary, secondary)


def test_primary_damage_on_a_view_not_shown_is_taken_from_the_findings():
    report, repairs = normalize(answer([finding("hood"), finding("rear_door", "left")], ["front", "left"],
                                       primary="rear_end", secondary="left_side"), [0])
    assert (report["primary_damage"], report["secondary_damage"]) == ("front_end", "left_side")
    assert repairs.reasons == ["primary_damage 'rear_end' is on a view not shown"]


def test_an_area_whose_view_the_findings_prove_shown_is_kept():
    report, repairs = normalize(answer([finding("rear_bumper", "rear")], ["front"], primary="rear_end"), [0])
    assert report["coverage"]["views_present"] == ["front", "rear"]
    assert report["primary_damage"] == "rear_end" and repairs.fixed == 1


def test_secondary_damage_on_a_view_not_shown_is_dropped():
    report, repairs = normalize(answer([finding()], ["front"], secondary="interior"), [0])
    assert report["secondary_damage"] is None and report["primary_damage"] == "front_end"
    assert repairs.reasons == ["secondary_damage 'interior' is on a view not shown"]


def test_primary_damage_without_a_finding_of_a_view_becomes_unknown():
    report, repairs = normalize(answer([finding("roof", "center")], ["front"], primary="left_side"), [0])
    assert report["primary_damage"] == "unknown" and repairs.fixed == 1


def test_every_part_and_side_is_seen_from_a_listed_view_or_from_none():
    for part in PARTS:
        for side in SIDES:
            assert view_of(part, side) in (*VIEWS, None)
    assert view_of("front_door", "left") == "left" and view_of("front_door", "center") is None
    assert {view_of(p, "center") for p in ("seat", "dashboard", "steering_wheel", "interior_trim")} == {"interior"}


def test_the_coverage_repair_is_counted_as_a_fixed_field():
    metrics = Metrics()
    gateway = OpenAIGateway(client=None, models=ModelSettings(), on_repairs=metrics.model_repairs)
    result = gateway.read_vision(response(answer([finding("rear_bumper", "rear")], ["front"], primary="rear_end")),
                                 [0])
    assert result.report["coverage"]["views_present"] == ["front", "rear"]
    assert "<p>Not shown in the photos: left, right, interior, odometer, engine bay.</p>" in result.html
    text = metrics.render().decode()
    assert 'model_output_repairs_total{kind="fixed_field"} 1.0' in text
    assert 'kind="dropped_finding"' not in text


def test_a_front_collision_through_the_sync_endpoint_shows_on_the_front(module_api: Api, image_server):
    urls = [image_server.url(f"/img/bmw-x5-{view}.jpg") for view in ("front", "left", "interior")]
    body = module_api.generate([lot("cov-1", urls, info="2021 BMW X5, front collision")],
                               languages=["en", "de"]).json()
    result = body["lots"][0]
    assert result["status"] == "completed" and result["findings"]
    for item in result["findings"]:
        assert view_of(item["part"], item["side"]) == "front" and item["photos"] == [0]
    assert result["primary_damage"] == "front_end" and result["no_visible_damage"] is False
    assert result["coverage"] == {"views_present": ["front", "left", "interior"],
                                  "views_missing": ["rear", "right", "odometer", "engine_bay"]}
    english = next(d["damages"] for d in result["descriptions"] if d["language"] == "en")
    assert "Not shown in the photos: rear, right, odometer, engine bay." in english
    assert english.count("<li>") == len(result["findings"])
