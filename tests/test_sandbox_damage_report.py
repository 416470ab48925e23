"""The sandbox's demo damage reports: plausible for the photos and notes, and never in need of repair.

Requests are built by the service's own gateway and answered by the sandbox's answer function, so the
photos and notes reach the sandbox exactly as the service words them.
"""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.findings import view_of
from services.openai_client import ModelSettings, OpenAIGateway
from services.sandbox.catalog import base_catalog
from services.sandbox.generate import RESPONSES, respond

GATEWAY = OpenAIGateway(client=None, models=ModelSettings())
CATALOG = base_catalog()
NAMED = {"front": "front", "rear": "rear", "left": "left", "right": "right", "interior": "interior",
         "odometer": "odometer", "engine": "engine_bay"}
NEUTRAL = ("img", "photo", "bumper", "wheel", "detail", "dsc", "car", "lot")
NOTES = ("front collision", "rear damage", "minor rear damage", "hail damage on roof and hood", "no damage",
         "flood damage", "left side scratches", "driver doors", "side collision", "runs and drives",
         "2019 Toyota Camry", "front collision, no damage to the rear", "airbags deployed", "")


def report_for(urls: list[str], notes: str):
    """(the sandbox's raw answer, the report after the service's checks, the repairs they made)."""
    body = respond(RESPONSES, GATEWAY.vision_body(urls, notes), catalog=CATALOG)
    raw = json.loads(body["output"][-1]["content"][0]["text"])
    result = GATEWAY.read_vision(body, list(range(len(urls))))
    return raw, result.report, result.repairs


@st.composite
def photo(draw):
    """A photo URL and the view its name gives it (None for a name of no view)."""
    view = draw(st.sampled_from([*NAMED, None]))
    words = draw(st.lists(st.sampled_from(NEUTRAL), min_size=0 if view else 1, max_size=3))
    if view:
        words.insert(draw(st.integers(0, len(words))), view)
    number = draw(st.integers(0, 999))
    return f"http://127.0.0.1:1/cars/{number}/{'-'.join(words)}.jpg", NAMED.get(view)


@st.composite
def car(draw):
    photos = draw(st.lists(photo(), min_size=1, max_size=8))
    notes = ", ".join(draw(st.lists(st.sampled_from(NOTES), max_size=3)))
    return [url for url, _ in photos], [view for _, view in photos], notes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(car())
def test_every_demo_answer_passes_the_checks_unrepaired(sample):
    urls, views, notes = sample
    raw, report, repairs = report_for(urls, notes)
    assert (repairs.dropped, repairs.fixed) == (0, 0), repairs.reasons
    for named in set(views) - {None}:
        assert named in report["coverage"]["views_present"]
    for item in report["findings"]:
        seen_from = view_of(item["part"], item["side"])
        for index in item["photos"]:
            assert views[index] in (None, seen_from) or seen_from is None, (item, urls[index])
    assert report_for(urls, notes)[0] == raw


@settings(max_examples=100, deadline=None)
@given(car(), st.sampled_from(["front collision", "2021 BMW X5, front collision", "Frontal impact. Front collision"]))
def test_a_front_collision_shows_on_front_parts_in_front_photos(sample, notes):
    urls, views, _ = sample
    urls, views = [*urls, "http://127.0.0.1:1/cars/x5-front.jpg"], [*views, "front"]
    _, report, _ = report_for(urls, notes)
    assert report["findings"] and report["primary_damage"] == "front_end"
    for item in report["findings"]:
        assert view_of(item["part"], item["side"]) == "front"
        assert all(views[index] in ("front", None) for index in item["photos"])


def test_the_example_of_the_issue_reads_like_an_inspection():
    urls = [f"http://127.0.0.1:1/cars/bmw-x5-{view}.jpg" for view in ("front", "left", "interior")]
    _, report, repairs = report_for(urls, "2021 BMW X5, front collision")
    assert {f["part"] for f in report["findings"]} <= {"front_bumper", "hood", "headlight", "grille", "windshield"}
    assert all(f["photos"] == [0] and f["damage_type"] != "rust" for f in report["findings"])
    assert report["coverage"]["views_missing"] == ["rear", "right", "odometer", "engine_bay"]
    assert (repairs.dropped, repairs.fixed) == (0, 0)


def test_rear_damage_shows_on_rear_parts():
    urls = ["http://127.0.0.1:1/c300-rear.jpg", "http://127.0.0.1:1/c300-front.jpg"]
    _, report, _ = report_for(urls, "2019 Mercedes-Benz C 300, minor rear damage")
    assert report["findings"] and report["primary_damage"] == "rear_end"
    assert all(view_of(f["part"], f["side"]) == "rear" and f["photos"] == [0] and f["severity"] == "minor"
               for f in report["findings"])


def test_hail_dents_the_roof_hood_and_trunk():
    urls = [f"http://127.0.0.1:1/a4-{name}.jpg" for name in ("roof", "front", "rear")]
    _, report, _ = report_for(urls, "hail damage on roof and hood")
    assert report["findings"] and report["primary_damage"] == "hail"
    assert all(f["part"] in ("roof", "hood", "trunk_lid") and f["damage_type"] == "dent" for f in report["findings"])


def test_a_car_sold_with_no_damage_has_none():
    urls = [f"http://127.0.0.1:1/{view}.jpg" for view in ("front", "rear", "left", "right")]
    _, report, _ = report_for(urls, "Clean title, no damage")
    assert report["findings"] == [] and report["no_visible_damage"] and report["primary_damage"] == "none"
    assert report["coverage"]["views_present"] == ["front", "rear", "left", "right"]


def test_photos_named_for_no_view_show_the_views_no_other_photo_names():
    urls = ["http://127.0.0.1:1/a.jpg", "http://127.0.0.1:1/front.jpg", "http://127.0.0.1:1/b.jpg",
            "http://127.0.0.1:1/engine-bay.jpg", "http://127.0.0.1:1/front-left.jpg"]
    _, report, _ = report_for(urls, "")
    assert report["coverage"]["views_present"] == ["front", "rear", "left", "right", "engine_bay"]
