"""The bounded body parser: the same result as json.loads for what it accepts, and work proportional
to the body (not to what json.loads would have built) for what it refuses."""
from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.jsonbody import container_budget, count_containers, load_object
from services.errors import ServiceError

LIMITS = {"array_limits": {"lots": 50_000}, "default_array_limit": 50_000}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                      max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(), values, max_size=6), indent=st.sampled_from([None, 0, 2]))
def test_same_result_as_json_loads(body, indent):
    raw = json.dumps(body, indent=indent, ensure_ascii=False).encode()
    assert load_object(raw, **LIMITS) == json.loads(raw)


@pytest.mark.parametrize("raw", [b'{"a":1,"a":2}', b' \n{ "lots" : [ ] , "x" : { } }\t', b'{"lots":[{"k":[1,{"b":"[{"}]}]}'])
def test_edge_cases_match_json_loads(raw):
    assert load_object(raw, **LIMITS) == json.loads(raw)


def test_brackets_inside_strings_do_not_count():
    raw = json.dumps({"lots": [{"additional_info": "[{" * 5_000}]}).encode()
    assert count_containers(raw, container_budget(len(raw))) == 3
    assert load_object(raw, **LIMITS)["lots"][0]["additional_info"] == "[{" * 5_000


def _peak_bytes(raw: bytes) -> tuple[int, ServiceError]:
    tracemalloc.start()
    try:
        load_object(raw, **LIMITS)
    except ServiceError as exc:
        error = exc
    else:
        raise AssertionError("accepted")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def test_eight_million_empty_lots_are_refused_without_building_them():
    raw = b'{"signature":"sha256=' + b"0" * 64 + b'","lots":[' + b"{}," * 8_000_000 + b"{}]}"
    peak, error = _peak_bytes(raw)
    assert error.status == 400
    # json.loads would allocate about 700 MB here; what remains is a copy or two of the body
    assert peak < 3 * len(raw), peak


def test_padded_lots_past_the_limit_stop_at_the_limit_plus_one():
    raw = b'{"lots":[' + b"{}            ," * 2_000_000 + b"{}]}"
    peak, error = _peak_bytes(raw)
    assert error.status == 400 and error.details == {"field": "lots"}
    assert peak < 2 * len(raw) + 20_000_000, peak


def test_both_parse_paths_hold_the_limit():
    few = json.dumps({"lots": [{"lot_id": str(i)} for i in range(12)]}).encode()      # one call to json.loads
    many = json.dumps({"lots": [[[[[[[[[[{}]]]]]]]]]] * 12}).encode()   # 10 containers a lot: walked lot by lot
    for raw, counted in ((few, 12), (many, 11)):
        with pytest.raises(ServiceError) as caught:
            load_object(raw, array_limits={"lots": 10}, default_array_limit=10,
                        too_many={"lots": lambda key, limit, n: ServiceError(413, "BATCH_SIZE_EXCEEDED", key,
                                                                              {"provided_lots": n})})
        assert caught.value.status == 413 and caught.value.details == {"provided_lots": counted}
    assert load_object(few, array_limits={"lots": 12}, default_array_limit=12) == json.loads(few)
    assert load_object(many, array_limits={"lots": 12}, default_array_limit=12) == json.loads(many)


@pytest.mark.parametrize("raw, floats", [
    (b'{"lots":[{"n":1,"m":-20,"s":"1.5e3"}]}', False),
    (b'{"lots":[{"n":1.0}]}', True), (b'{"x":2e3}', True), (b'{"x":[NaN]}', True), (b'{"x":-Infinity}', True),
])
def test_the_parsed_body_says_whether_a_number_was_not_an_integer(raw, floats):
    # as is: one json.loads call; padded with more containers than an array limit of 1 allows for: the walk
    padded = raw[:-1] + b',"pad":{' + b",".join(b'"%d":{}' % i for i in range(40)) + b"}}"
    for body_raw in (raw, padded):
        body = load_object(body_raw, array_limits={"lots": 1}, default_array_limit=1)
        assert json.dumps(body) == json.dumps(json.loads(body_raw)) and body.has_floats is floats  # NaN != NaN
