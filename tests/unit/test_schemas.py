"""app/schemas.py: the bulk check of a generate request's lots gives what the lot-by-lot check gives."""
from __future__ import annotations

import contextlib
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.schemas as schemas
from services.errors import ServiceError

GOOD = "http://127.0.0.1:9/car.jpg"
LIMITS = dict(max_batch_size=50, max_sync_images=4, max_images_per_lot=3, max_languages=10)

urls = st.sampled_from([GOOD, "https://h.example/a/b?c=1#d", "HTTP://H:8080/x", "ftp://h/x", "http://h/a b", "",
                        "http://[::1]/x.jpg", "http://h/\x00", "http://h/\ud800", "http://h/x\nhttp://h/y",
                        "http://h:١/x", "http://h/" + "x" * 2040, 7, None])
photos = st.one_of(st.builds(lambda u: {"url": u}, urls), urls, st.just({"nourl": GOOD}), st.just([GOOD]))
texts = st.sampled_from(["", "Camry", " ", "лот", "a\x00b", "\udc80", "x" * 129, "y" * 10_001, 5, None, ["a"]])
lot_ids = st.one_of(st.sampled_from(["a", "b", "c", " ", "", "x" * 128, "x" * 129, "лот-1", "a\x00", "\ud800", 42,
                                     None]), st.text(max_size=3))
webhooks = st.sampled_from(["", None, "http://127.0.0.1:9/hook", "ftp://h/x", "http://h/\x00", 0, False, ["x"]])


@st.composite
def raw_lot(draw, changed: bool | None = None):
    """A valid lot, often with one thing changed."""
    item = {"lot_id": f"lot-{draw(st.integers(0, 10**6))}", "additional_info": "Camry", "images": [{"url": GOOD}]}
    change = draw(st.integers(0, 8) if changed is None else st.integers(1, 7) if changed else st.just(0))
    if change == 1:
        item["lot_id"] = draw(lot_ids)
    elif change == 2:
        item["additional_info"] = draw(texts)
    elif change == 3:
        item["images"] = draw(st.one_of(st.lists(photos, max_size=4), st.sampled_from([GOOD, {"url": GOOD}, None])))
    elif change == 4:
        item["webhook"] = draw(webhooks)
    elif change == 5:
        del item[draw(st.sampled_from(sorted(item)))]
    elif change == 6:
        return draw(st.sampled_from([[], "lot", 3, None]))
    elif change == 7:
        item["images"] = [{"url": GOOD}, {"url": draw(urls)}]
    return item


def outcome(body: dict, bulk: bool) -> tuple:
    with contextlib.ExitStack() as stack:
        if not bulk:
            stack.enter_context(mock.patch.object(schemas, "_lots_in_bulk", lambda raw_lots, max_images: None))
        try:
            request = schemas.parse_generate(body, **LIMITS)
        except ServiceError as exc:
            return ("refused", exc.status, exc.code, exc.message, exc.details)
    return ("accepted", request)


@st.composite
def one_change(draw):
    """Valid lots and one changed lot among them, so that the change is what decides the outcome."""
    lots = draw(st.lists(raw_lot(changed=False), max_size=3, unique_by=lambda item: item["lot_id"]))
    lots.insert(draw(st.integers(0, len(lots))), draw(raw_lot(changed=True)))
    return lots


@settings(max_examples=500, deadline=None)
@given(lots=one_change())
def test_bulk_and_lot_by_lot_checks_agree_on_each_change(lots):
    body = {"lots": lots}
    assert outcome(body, True) == outcome(body, False)


@settings(max_examples=200, deadline=None)
@given(lots=st.lists(raw_lot(), min_size=1, max_size=4))
def test_bulk_and_lot_by_lot_checks_agree_on_any_mix(lots):
    body = {"lots": lots}
    assert outcome(body, True) == outcome(body, False)


@settings(max_examples=100, deadline=None)
@given(lots=st.lists(st.builds(lambda i, u, info, hook: {"lot_id": f"lot-{i}", "images": [{"url": x} for x in u],
                                                          "additional_info": info, "webhook": hook},
                               st.integers(0, 10**6), st.lists(st.sampled_from([GOOD, "https://h.example/p?q"]),
                                                               min_size=1, max_size=3),
                               st.sampled_from(["", None, "Camry", "лот 🚗"]),
                               st.sampled_from([None, "", "http://127.0.0.1:9/hook"])),
                     min_size=2, max_size=6, unique_by=lambda item: item["lot_id"]))
def test_a_well_formed_request_takes_the_bulk_path(lots):
    """The fast path is the one ordinary requests take (else the accept silently slows down again)."""
    found = schemas._lots_in_bulk(lots, 3)
    assert found is not None
    assert [(lot.lot_id, lot.image_urls, lot.webhook) for lot in found] == [
        (item["lot_id"], [photo["url"] for photo in item["images"]], item["webhook"] or None) for item in lots]


@pytest.mark.parametrize("value,ok", [("plain", True), ("лот 🚗", True), ("", True), ("a\x00b", False),
                                      ("\ud800", False), ("a\udfffb", False)])
def test_is_text(value, ok):
    assert schemas.is_text(value) is ok


@pytest.mark.parametrize("bad", [0, 4, 7, 9])
def test_every_group_of_urls_is_matched(monkeypatch, bad):
    monkeypatch.setattr(schemas, "URLS_PER_MATCH", 3)
    photos = [f"http://127.0.0.1:9/{i}.jpg" for i in range(10)]
    lots = [{"lot_id": f"lot-{i}", "images": [{"url": url} for url in photos[i * 2:i * 2 + 2]]} for i in range(5)]
    assert schemas._lots_in_bulk(lots, 3) is not None
    lots[bad // 2]["images"][bad % 2]["url"] = "http://127.0.0.1:9/a b.jpg"
    assert schemas._lots_in_bulk(lots, 3) is None
