"""Property tests: decode's error contract, Event round trips, the props limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from libs.schemas import CONTRACTS, ContractError, DlqRecord, Event, decode, encode
from libs.schemas.base import (
    MAX_PROP_KEY_LENGTH,
    MAX_PROP_KEYS,
    MAX_PROP_LIST_ITEMS,
    MAX_PROP_STRING_LENGTH,
    MAX_PROP_TOTAL_KEYS,
)
from libs.schemas.dlq import EXAMPLES as DLQ_EXAMPLES

# Contract strings never carry NUL (Postgres cannot store it); a separate test checks
# that NUL is rejected.
_NO_NUL = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))


def no_nul_text(*, min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=_NO_NUL, min_size=min_size, max_size=max_size)


MODELS: list[tuple[type[Any], list[dict[str, Any]]]] = [
    *[(c.model, c.examples) for c in CONTRACTS.values()],
    (DlqRecord, DLQ_EXAMPLES),
]
MODEL_IDS = [m.__name__ for m, _ in MODELS]

PROPS_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Every JSON value orjson can write: ints in its i64/u64 range, finite floats.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | no_nul_text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(no_nul_text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def only_contract_error(model: type[Any], data: bytes | str) -> None:
    try:
        decode(model, data)
    except ContractError:
        pass


@pytest.mark.parametrize(("model", "examples"), MODELS, ids=MODEL_IDS)
@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300))
def test_decode_of_arbitrary_input_raises_only_contract_error(
    model: type[Any], examples: list[dict[str, Any]], data: bytes | str
) -> None:
    only_contract_error(model, data)


@pytest.mark.parametrize(("model", "examples"), MODELS, ids=MODEL_IDS)
@settings(max_examples=80, deadline=None)
@given(value=json_values)
def test_decode_of_arbitrary_json_raises_only_contract_error(
    model: type[Any], examples: list[dict[str, Any]], value: Any
) -> None:
    only_contract_error(model, orjson.dumps(value))


@pytest.mark.parametrize(("model", "examples"), MODELS, ids=MODEL_IDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_decode_of_example_with_a_field_replaced_raises_only_contract_error(
    model: type[Any], examples: list[dict[str, Any]], data: st.DataObject
) -> None:
    # Starting from a valid payload reaches the per-field validators, not just "missing".
    example = dict(data.draw(st.sampled_from(examples)))
    field = data.draw(st.sampled_from(sorted(model.model_fields)))
    example[field] = data.draw(json_values)
    only_contract_error(model, orjson.dumps(example))


@pytest.mark.parametrize("depth", [10, 200, 1022])
@pytest.mark.parametrize("field", ["props", "unknown_field"])
def test_deeply_nested_json_never_escapes_as_another_error(depth: int, field: str) -> None:
    # orjson caps nesting at 1024; below that, pydantic must not hit RecursionError.
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    data = orjson.dumps(CONTRACTS["events"].examples[1])[:-1] + f',"{field}":'.encode()
    try:
        event = decode(Event, data + nested + b"}")
    except ContractError as exc:
        # The bounded props walk runs before pydantic's own recursion.
        expected = "props.a.a.a" if depth < 1024 else None
        assert field == "props" and exc.field == expected
    else:
        assert field == "unknown_field"
        assert event == Event.model_validate(CONTRACTS["events"].examples[1])


# --- valid Events --------------------------------------------------------------------

ids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128)
short = no_nul_text(max_size=256)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=3, minutes=30)), timezone(timedelta(hours=-7))]
)
aware = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets
)
prop_keys = no_nul_text(min_size=1, max_size=MAX_PROP_KEY_LENGTH)
prop_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | no_nul_text(max_size=60)
)
# props is level 1, so containers may appear at levels 2 and 3 only.
level3 = st.lists(prop_leaves, max_size=5) | st.dictionaries(prop_keys, prop_leaves, max_size=5)
level2 = st.lists(prop_leaves | level3, max_size=5) | st.dictionaries(
    prop_keys, prop_leaves | level3, max_size=5
)
valid_props = st.dictionaries(prop_keys, prop_leaves | level2, max_size=5)


@st.composite
def events(draw: st.DrawFn) -> Event:
    device_id = draw(st.none() | ids)
    user_id = draw(ids) if device_id is None else draw(st.none() | ids)
    return Event(
        schema_version=draw(st.integers(min_value=1, max_value=5)),
        app_id=draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")),
        event_id=draw(ids),
        name=draw(no_nul_text(min_size=1, max_size=128)),
        device_id=device_id,
        user_id=user_id,
        adid=draw(st.none() | no_nul_text(max_size=128)),
        ts=draw(aware),
        received_at=draw(aware),
        source=draw(st.sampled_from(["sdk", "s2s", "backend"])),
        platform=draw(st.none() | st.sampled_from(["android", "ios", "web", "server"])),
        os_version=draw(st.none() | short),
        locale=draw(st.none() | short),
        timezone=draw(st.none() | st.text(alphabet="ABCabc/_+-0123456789", max_size=64)),
        session_id=draw(st.none() | ids),
        ip=draw(st.none() | no_nul_text(max_size=64)),
        props=draw(valid_props),
        revenue=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        currency=draw(st.none() | st.from_regex(r"\A[A-Z]{3}\Z")),
    )


@PROPS_SETTINGS
@given(event=events())
def test_valid_events_round_trip(event: Event) -> None:
    back = decode(Event, encode(event))
    assert back == event
    assert back.ts.tzinfo is UTC
    assert back.user_key == event.user_key


# --- props limits --------------------------------------------------------------------


def _violations() -> st.SearchStrategy[Any]:
    too_many = {f"k{i}": i for i in range(MAX_PROP_KEYS + 1)}
    per_group = MAX_PROP_KEYS
    groups = MAX_PROP_TOTAL_KEYS // per_group + 1
    too_many_total = {f"g{g}": {f"k{i}": i for i in range(per_group)} for g in range(groups)}
    return st.one_of(
        no_nul_text(min_size=MAX_PROP_STRING_LENGTH + 1, max_size=MAX_PROP_STRING_LENGTH + 20),
        st.just({"a": {"b": []}}),  # a container at level 4
        st.just({"a": [{"b": 1}]}),
        st.just([[[1]]]),
        st.just(list(range(MAX_PROP_LIST_ITEMS + 1))),
        st.just(too_many),
        st.just(too_many_total),
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
        st.just({"": 1}),
        st.just({"k" * (MAX_PROP_KEY_LENGTH + 1): 1}),
        st.sampled_from([2**63, -(2**63) - 1]),
    )


@PROPS_SETTINGS
@given(props=valid_props)
def test_props_within_limits_validate(props: dict[str, Any]) -> None:
    base = CONTRACTS["events"].examples[1]
    assert Event.model_validate({**base, "props": props}).props == props


@PROPS_SETTINGS
@given(props=valid_props, bad=_violations(), at=st.sampled_from(["top", "nested"]))
def test_props_beyond_limits_fail(props: dict[str, Any], bad: Any, at: str) -> None:
    props = dict(props)
    if at == "top":
        props["zz_bad"] = bad
    else:
        props["zz_bad"] = {"inner": bad}
    base = CONTRACTS["events"].examples[1]
    with pytest.raises(ValidationError) as info:
        Event.model_validate({**base, "props": props})
    error = info.value.errors()[0]
    assert error["loc"] == ("props",)
    assert error["ctx"]["field"].startswith("zz_bad")
