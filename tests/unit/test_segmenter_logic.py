"""Profile folding, attribution upgrades, rule evaluation and membership diffs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.rules.evaluation import RFM_TTL, RfmCache, evaluate
from libs.rules.language import parse_rule
from libs.rules.profile import ProfileState
from libs.rules.semantics import RfmThresholds
from libs.schemas import Event, UserAttributed
from services.segmenter.logic import (
    CHANGE_NS,
    MAX_ATTRIBUTES,
    Change,
    apply_attribution,
    apply_event,
    fold_attributes,
    membership_changes,
    rule_fingerprint,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
counter = iter(range(10**9))


def apply_attributes(current: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """``$attributes`` props applied to attributes with no write history."""
    return fold_attributes(current, {}, props, datetime.max.replace(tzinfo=UTC))[0]


def event(name: str = "x", ts: datetime = NOW, **kw: Any) -> Event:
    kw.setdefault("device_id", "dev_1")
    return Event(
        app_id="app", event_id=f"e{next(counter)}", name=name, ts=ts, received_at=NOW, **kw
    )


def attributed(install: str = "i1", method: str = "click_id", **kw: Any) -> UserAttributed:
    base: dict[str, Any] = dict(
        app_id="app",
        attribution_id=f"a_{install}_{method}",
        user_key="d:dev_1",
        device_id="dev_1",
        install_event_id=install,
        install_ts=NOW,
        attributed_at=NOW,
        method=method,
        kind="new_user" if method != "organic" else "organic",
        status="attributed",
    )
    if method != "organic":
        base.update(
            tracker_token="tok",
            click_id="c1",
            network="Instagram",
            campaign="حراج بهاره",
            channel="social",
        )
    base.update(kw)
    return UserAttributed(**base)


def ev_rule(raw: Any, state: ProfileState, now: datetime = NOW) -> bool:
    return evaluate(parse_rule(raw), state, now)


def attr(op: str, value: Any = ..., name: str = "a") -> dict[str, Any]:
    raw: dict[str, Any] = {"attribute": name, "op": op}
    if value is not ...:
        raw["value"] = value
    return raw


# --- apply_event --------------------------------------------------------------------------


def test_first_event_sets_everything() -> None:
    state = apply_event(
        ProfileState(),
        event(
            user_id="u1",
            platform="android",
            app_version="1.0",
            os_version="13",
            device_model="SM",
            locale="fa-IR",
            timezone="Asia/Tehran",
        ),
    )
    assert state.first_seen == state.last_seen == NOW
    assert state.events == 1 and state.user_id == "u1"
    assert (
        state.platform,
        state.app_version,
        state.os_version,
        state.device_model,
        state.locale,
        state.timezone,
    ) == ("android", "1.0", "13", "SM", "fa-IR", "Asia/Tehran")


def test_apply_event_does_not_mutate_the_input() -> None:
    before = ProfileState(attributes={"a": 1})
    after = apply_event(before, event("$attributes", props={"set": {"a": 2}}))
    assert before.attributes == {"a": 1} and before.events == 0
    assert after.attributes == {"a": 2}


def test_out_of_order_event_never_moves_last_seen_back() -> None:
    state = apply_event(ProfileState(), event(ts=NOW, platform="ios", app_version="2.0"))
    older = apply_event(
        state, event(ts=NOW - timedelta(days=1), platform="android", app_version="1.0", locale="en")
    )
    assert older.last_seen == NOW
    assert older.first_seen == NOW - timedelta(days=1)
    assert older.platform == "ios" and older.app_version == "2.0"
    assert older.locale is None  # an older event does not set device fields at all
    assert older.events == 2


def test_newer_event_moves_last_seen_and_keeps_first_seen() -> None:
    state = apply_event(ProfileState(), event(ts=NOW))
    newer = apply_event(state, event(ts=NOW + timedelta(hours=1), platform="android"))
    assert newer.first_seen == NOW and newer.last_seen == NOW + timedelta(hours=1)
    assert newer.platform == "android"


def test_same_timestamp_counts_as_newer() -> None:
    state = apply_event(ProfileState(), event(ts=NOW, platform="ios"))
    assert apply_event(state, event(ts=NOW, platform="android")).platform == "android"


def test_none_device_fields_do_not_erase() -> None:
    state = apply_event(ProfileState(), event(ts=NOW, platform="ios", locale="fa-IR"))
    later = apply_event(state, event(ts=NOW + timedelta(seconds=1)))
    assert later.platform == "ios" and later.locale == "fa-IR"


def test_user_id_first_one_sticks() -> None:
    state = apply_event(ProfileState(), event())
    assert state.user_id is None
    state = apply_event(state, event(user_id="u1"))
    state = apply_event(state, event(user_id="u2"))
    assert state.user_id == "u1"


@given(st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=20))
def test_fold_in_any_order_gives_min_and_max(offsets: list[int]) -> None:
    state = ProfileState()
    last = []
    for off in offsets:
        state = apply_event(state, event(ts=NOW + timedelta(seconds=off)))
        last.append(state.last_seen)
        assert last == sorted(last)  # never moves backwards
    assert state.first_seen == NOW + timedelta(seconds=min(offsets))
    assert state.last_seen == NOW + timedelta(seconds=max(offsets))
    assert state.events == len(offsets)


def test_open_counts_sessions() -> None:
    state = ProfileState()
    for _ in range(3):
        state = apply_event(state, event("$open"))
    state = apply_event(state, event("open"))
    assert state.sessions == 3 and state.events == 4 and state.purchases == 0


def test_purchase_counts_purchases_and_revenue() -> None:
    state = apply_event(ProfileState(), event("$purchase", revenue=100.5, currency="USD"))
    state = apply_event(state, event("$purchase"))  # no revenue
    state = apply_event(state, event("$purchase", revenue=-20.5, currency="USD"))  # refund
    assert state.purchases == 3 and state.revenue == pytest.approx(80.0)
    assert state.sessions == 0


def test_other_events_only_count() -> None:
    state = apply_event(ProfileState(), event("purchase", revenue=9.0, props={"set": {"a": 1}}))
    assert (state.events, state.purchases, state.revenue, state.attributes) == (1, 0, 0.0, {})


def test_attributes_event_set_set_once_increment_unset() -> None:
    state = ProfileState(attributes={"city": "Shiraz", "gone": 1, "visits": 2, "tier": "gold"})
    state = apply_event(
        state,
        event(
            "$attributes",
            props={
                "set": {"city": "تهران", "new": True},
                "set_once": {"tier": "silver", "signup": "2024-05-01"},
                "increment": {"visits": 3, "points": 1.5},
                "unset": ["gone", "missing"],
            },
        ),
    )
    assert state.attributes == {
        "city": "تهران",
        "visits": 5,
        "tier": "gold",
        "new": True,
        "signup": "2024-05-01",
        "points": 1.5,
    }


def test_set_once_does_not_overwrite_a_null_value() -> None:
    assert apply_attributes({"a": None}, {"set_once": {"a": 1}}) == {"a": None}


def test_set_then_unset_in_one_event_unsets() -> None:
    assert apply_attributes({}, {"set": {"a": 1}, "unset": ["a"]}) == {}


def test_increment_ignores_non_numbers_and_resets_non_numeric_base() -> None:
    attrs = apply_attributes(
        {"s": "text", "n": 1}, {"increment": {"s": 2, "n": "3", "b": True, "x": None}}
    )
    assert attrs == {"s": 2, "n": 1}


def test_increment_missing_starts_at_zero() -> None:
    assert apply_attributes({}, {"increment": {"n": -2}}) == {"n": -2}


def test_empty_attribute_props_change_nothing() -> None:
    assert apply_attributes({"a": 1}, {}) == {"a": 1}
    assert apply_attributes({"a": 1}, {"set": None, "unset": None}) == {"a": 1}


def test_attribute_count_is_capped_keeping_existing() -> None:
    current = {f"k{i}": i for i in range(MAX_ATTRIBUTES)}
    attrs = apply_attributes(current, {"set": {"extra": 1, "k0": "updated"}})
    assert len(attrs) == MAX_ATTRIBUTES
    assert "extra" not in attrs and attrs["k0"] == "updated"


@pytest.mark.parametrize(
    "props", [{"set": ["a"]}, {"set_once": "x"}, {"increment": [1]}, {"unset": 5}]
)
def test_malformed_attribute_props_do_not_crash(props: dict[str, Any]) -> None:
    state = apply_event(ProfileState(attributes={"a": 1}), event("$attributes", props=props))
    assert state.events == 1


# --- apply_attribution --------------------------------------------------------------------


def test_first_attribution_is_stored() -> None:
    state = apply_attribution(ProfileState(), attributed("i1"))
    assert state.attribution is not None
    assert state.attribution["install_event_id"] == "i1"
    assert state.attribution["tracker_token"] == "tok"
    assert state.attribution["method"] == "click_id"
    assert state.attribution["campaign"] == "حراج بهاره"
    assert state.attribution["install_ts"] == NOW.isoformat()
    assert state.attribution["fraud_reasons"] == []


def test_organic_is_upgraded_by_a_later_click_for_the_same_install() -> None:
    state = apply_attribution(ProfileState(), attributed("i1", "organic"))
    assert state.attribution is not None and state.attribution["tracker_token"] is None
    state = apply_attribution(state, attributed("i1", "click_id"))
    assert state.attribution is not None
    assert state.attribution["method"] == "click_id"
    assert state.attribution["tracker_token"] == "tok"


def test_click_is_not_downgraded_to_organic() -> None:
    state = apply_attribution(ProfileState(), attributed("i1", "click_id"))
    assert apply_attribution(state, attributed("i1", "organic")) == state


def test_another_installs_attribution_is_ignored() -> None:
    state = apply_attribution(ProfileState(), attributed("i1", "organic"))
    assert apply_attribution(state, attributed("i2", "click_id")) == state


def test_a_rejected_install_gives_way_to_an_honest_one() -> None:
    fraud = attributed("i1", status="rejected", fraud_reasons=["emulator"])
    state = apply_attribution(ProfileState(), fraud)
    assert state.attribution is not None and state.attribution["status"] == "rejected"
    honest = apply_attribution(state, attributed("i2", "organic"))
    assert honest.attribution is not None
    assert (honest.attribution["install_event_id"], honest.attribution["status"]) == (
        "i2",
        "attributed",
    )
    # a replay of the rejected statement, or another rejected install, changes nothing
    assert apply_attribution(honest, fraud) == honest
    assert apply_attribution(state, attributed("i3", status="rejected")) == state


def test_same_attribution_twice_is_idempotent() -> None:
    once = apply_attribution(ProfileState(), attributed("i1"))
    assert apply_attribution(once, attributed("i1")) == once


# --- evaluate -----------------------------------------------------------------------------

STATE = ProfileState(
    attributes={
        "city": "Tehran",
        "age": 30,
        "score": 2.5,
        "vip": True,
        "name": "مریم",
        "signup": "2024-04-01",
        "login": "2024-04-30T23:00:00+03:30",
        "nothing": None,
        "tags": ["a", "b"],
        "count_str": "10",
    },
    first_seen=NOW - timedelta(days=10),
    last_seen=NOW - timedelta(hours=2),
    attribution={
        "tracker_token": "tok",
        "network": "Instagram",
        "campaign": "حراج بهاره",
        "channel": "social",
        "method": "click_id",
    },
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (attr("eq", "Tehran", "city"), True),
        (attr("eq", "tehran", "city"), False),
        (attr("eq", 30.0, "age"), True),
        (attr("ne", "Shiraz", "city"), True),
        (attr("ne", "Tehran", "city"), False),
        (attr("eq", ["a", "b"], "tags"), True),
        (attr("in", ["Shiraz", "Tehran"], "city"), True),
        (attr("in", ["Shiraz"], "city"), False),
        (attr("not_in", ["Shiraz"], "city"), True),
        (attr("not_in", ["Tehran"], "city"), False),
        (attr("contains", "ehr", "city"), True),
        (attr("contains", "x", "city"), False),
        (attr("contains", "ری", "name"), True),
        (attr("contains", "a", "tags"), False),
        (attr("contains", "3", "age"), False),
        (attr("starts_with", "Teh", "city"), True),
        (attr("starts_with", "ran", "city"), False),
        (attr("starts_with", "", "city"), True),
        (attr("starts_with", "3", "age"), False),
        (attr("exists", name="city"), True),
        (attr("not_exists", name="city"), False),
        (attr("gt", 29, "age"), True),
        (attr("gt", 30, "age"), False),
        (attr("gte", 30, "age"), True),
        (attr("lt", 30.5, "age"), True),
        (attr("lt", 30, "age"), False),
        (attr("lte", 30, "age"), True),
        (attr("lte", 2.4, "score"), False),
        (attr("gt", 2, "score"), True),
        (attr("gt", 5, "count_str"), False),
        (attr("lt", 50, "count_str"), False),
        (attr("gt", "5", "age"), False),
        (attr("gt", "Shiraz", "city"), False),
    ],
)
def test_attribute_ops(rule: dict[str, Any], expected: bool) -> None:
    assert ev_rule(rule, STATE) is expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "x", False),
        ("ne", "x", True),
        ("in", ["x"], False),
        ("not_in", ["x"], True),
        ("contains", "x", False),
        ("starts_with", "x", False),
        ("gt", 1, False),
        ("gte", 1, False),
        ("lt", 1, False),
        ("lte", 1, False),
        ("exists", ..., False),
        ("not_exists", ..., True),
    ],
)
@pytest.mark.parametrize("name", ["missing", "nothing"])
def test_missing_or_null_attributes(op: str, value: Any, expected: bool, name: str) -> None:
    assert ev_rule(attr(op, value, name), STATE) is expected


def test_eq_null_never_matches_because_null_is_missing() -> None:
    assert ev_rule(attr("eq", None, "nothing"), STATE) is False
    assert ev_rule(attr("ne", None, "city"), STATE) is True


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("value", [0, 1, 2, "2024-01-01"])
def test_bool_attributes_never_compare(op: str, value: Any) -> None:
    assert ev_rule(attr(op, value, "vip"), STATE) is False


def test_bool_eq_bool() -> None:
    assert ev_rule(attr("eq", True, "vip"), STATE) is True
    assert ev_rule(attr("eq", False, "vip"), STATE) is False


@pytest.mark.parametrize(
    "rule", [attr("eq", 1, "vip"), attr("in", [1, 2], "vip"), attr("eq", True, "one")]
)
def test_bool_is_not_equal_to_a_number(rule: dict[str, Any]) -> None:
    state = ProfileState(attributes={"vip": True, "one": 1})
    assert ev_rule(rule, state) is False


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gt", "2024-03-31", True),
        ("gt", "2024-04-01", False),
        ("gte", "2024-04-01", True),
        ("lt", "2024-04-01T00:00:01Z", True),
        ("lt", "2024-04-01T00:00:00Z", False),
        ("lte", "2024-04-01T00:00:00+00:00", True),
        ("gt", "2024-04-01T02:00:00+03:30", True),
        ("gt", "not a date", False),
        ("lt", "not a date", False),
    ],
)
def test_iso_date_comparisons_naive_is_utc(op: str, value: str, expected: bool) -> None:
    assert ev_rule(attr(op, value, "signup"), STATE) is expected


def test_iso_datetime_with_offset_compares_as_instant() -> None:
    # login is 2024-04-30T19:30Z
    assert ev_rule(attr("gt", "2024-04-30T19:29:59Z", "login"), STATE) is True
    assert ev_rule(attr("gt", "2024-04-30T19:30:00Z", "login"), STATE) is False
    assert ev_rule(attr("gte", "2024-04-30T19:30:00Z", "login"), STATE) is True
    assert ev_rule(attr("lt", "2024-05-01", "login"), STATE) is True


def test_number_and_date_do_not_compare() -> None:
    assert ev_rule(attr("gt", 1, "signup"), STATE) is False
    assert ev_rule(attr("lt", "2030-01-01", "age"), STATE) is False


def test_non_date_string_attribute_does_not_compare() -> None:
    assert ev_rule(attr("lt", "2030-01-01", "city"), STATE) is False
    assert ev_rule(attr("gte", "2000-01-01", "city"), STATE) is False


@pytest.mark.parametrize(
    ("which", "op", "ago", "expected"),
    [
        ("first_seen", "before", {"days": 7}, True),
        ("first_seen", "before", {"days": 10}, False),
        ("first_seen", "after", {"days": 10}, True),
        ("first_seen", "after", {"days": 9}, False),
        ("last_seen", "after", {"hours": 3}, True),
        ("last_seen", "after", {"hours": 2}, True),
        ("last_seen", "after", {"minutes": 119}, False),
        ("last_seen", "before", {"hours": 2}, False),
        ("last_seen", "before", {"minutes": 119}, True),
        ("last_seen", "before", {"days": 0}, True),
    ],
)
def test_seen_conditions(which: str, op: str, ago: dict[str, int], expected: bool) -> None:
    assert ev_rule({which: {"op": op, "ago": ago}}, STATE) is expected


@pytest.mark.parametrize("op", ["before", "after"])
@pytest.mark.parametrize("which", ["first_seen", "last_seen"])
def test_seen_conditions_false_without_events(which: str, op: str) -> None:
    assert ev_rule({which: {"op": op, "ago": {"days": 1}}}, ProfileState()) is False
    assert ev_rule({"not": {which: {"op": op, "ago": {"days": 1}}}}, ProfileState()) is True


def test_seen_conditions_move_with_now() -> None:
    rule = {"last_seen": {"op": "before", "ago": {"days": 1}}}
    assert ev_rule(rule, STATE, NOW) is False
    assert ev_rule(rule, STATE, NOW + timedelta(days=1)) is True


def test_largest_accepted_duration_evaluates() -> None:
    rule = {"first_seen": {"op": "before", "ago": {"days": 100 * 366}}}
    assert ev_rule(rule, STATE) is False


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"tracker": "tok"}, True),
        ({"tracker": "other"}, False),
        ({"network": "Instagram"}, True),
        ({"network": "instagram"}, False),
        ({"campaign": "حراج بهاره"}, True),
        ({"channel": "social"}, True),
        ({"channel": "search"}, False),
    ],
)
def test_install_conditions(cond: dict[str, str], expected: bool) -> None:
    assert ev_rule({"install": cond}, STATE) is expected


@pytest.mark.parametrize("field", ["tracker", "network", "campaign", "channel"])
def test_install_conditions_without_attribution(field: str) -> None:
    assert ev_rule({"install": {field: "x"}}, ProfileState()) is False


def test_install_condition_after_organic_to_click_upgrade() -> None:
    state = apply_attribution(ProfileState(), attributed("i1", "organic"))
    assert ev_rule({"install": {"tracker": "tok"}}, state) is False
    state = apply_attribution(state, attributed("i1", "click_id"))
    assert ev_rule({"install": {"tracker": "tok"}}, state) is True
    assert ev_rule({"install": {"campaign": "حراج بهاره"}}, state) is True


T = attr("eq", "Tehran", "city")
F = attr("eq", "Shiraz", "city")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"all": [T]}, True),
        ({"all": [T, F]}, False),
        ({"all": [T, T, T]}, True),
        ({"any": [F]}, False),
        ({"any": [F, T]}, True),
        ({"any": [F, F]}, False),
        ({"not": T}, False),
        ({"not": F}, True),
        ({"not": {"not": T}}, True),
        ({"all": [T, {"any": [F, {"not": F}]}]}, True),
        ({"any": [{"all": [T, F]}, {"not": T}]}, False),
    ],
)
def test_groups(rule: dict[str, Any], expected: bool) -> None:
    assert ev_rule(rule, STATE) is expected


ATTR_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5)
    | st.sampled_from(["Tehran", "2024-04-01", "2024-04-01T00:00:00Z", "", "x"])
)
LEAF = st.one_of(
    st.builds(
        lambda op, v: attr(op, v, "a"),
        st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
        st.integers(-5, 5) | st.sampled_from(["Tehran", "2024-04-01", "x"]),
    ),
    st.builds(
        lambda op, v: attr(op, v, "a"),
        st.sampled_from(["in", "not_in"]),
        st.lists(ATTR_VALUES, min_size=1, max_size=3),
    ),
    st.builds(
        lambda op, v: attr(op, v, "a"),
        st.sampled_from(["contains", "starts_with"]),
        st.text(max_size=3),
    ),
    st.sampled_from([attr("exists"), attr("not_exists")]),
    st.builds(
        lambda w, op, n: {w: {"op": op, "ago": {"days": n}}},
        st.sampled_from(["first_seen", "last_seen"]),
        st.sampled_from(["before", "after"]),
        st.integers(0, 3650),
    ),
    st.builds(
        lambda f, v: {"install": {f: v}},
        st.sampled_from(["tracker", "network", "campaign", "channel"]),
        st.sampled_from(["tok", "Instagram", "x"]),
    ),
)
RULES = st.recursive(
    LEAF,
    lambda c: (
        st.lists(c, min_size=1, max_size=3).map(lambda n: {"all": n})
        | st.lists(c, min_size=1, max_size=3).map(lambda n: {"any": n})
        | c.map(lambda n: {"not": n})
    ),
    max_leaves=8,
)
STATES = st.builds(
    lambda a, seen: ProfileState(
        attributes={} if a is ... else {"a": a},
        first_seen=seen,
        last_seen=seen,
        attribution=STATE.attribution,
    ),
    ATTR_VALUES | st.just(...),
    st.none() | st.just(NOW - timedelta(days=3)),
)


@settings(max_examples=300, deadline=None)
@given(RULES, STATES)
def test_evaluate_is_total_and_not_inverts(raw: dict[str, Any], state: ProfileState) -> None:
    node = parse_rule(raw)
    result = evaluate(node, state, NOW)
    assert isinstance(result, bool)
    assert evaluate(parse_rule({"not": raw}), state, NOW) is (not result)
    assert evaluate(parse_rule({"all": [raw, raw]}), state, NOW) is result
    assert evaluate(parse_rule({"any": [raw, raw]}), state, NOW) is result


# --- membership_changes -------------------------------------------------------------------

SEGMENTS = {
    "tehran": parse_rule(T),
    "shiraz": parse_rule(F),
    "everyone": parse_rule({"not": F}),
    "vip": parse_rule(attr("eq", True, "vip")),
}


def changes(current: set[str], cause: str = "e1", state: ProfileState = STATE) -> list[Change]:
    return membership_changes(
        app_id="app",
        user_key="u1",
        segments=SEGMENTS,
        current=current,
        state=state,
        now=NOW,
        cause=cause,
    )


def test_entered_segments_sorted_by_id() -> None:
    got = changes(set())
    assert [(c.segment_id, c.change) for c in got] == [
        ("everyone", "entered"),
        ("tehran", "entered"),
        ("vip", "entered"),
    ]


def test_exited_and_unchanged() -> None:
    got = changes({"tehran", "shiraz", "everyone"})
    assert [(c.segment_id, c.change) for c in got] == [("shiraz", "exited"), ("vip", "entered")]


def test_no_changes_when_membership_matches() -> None:
    assert changes({"tehran", "everyone", "vip"}) == []


def test_memberships_of_unknown_segments_are_left_alone() -> None:
    assert changes({"tehran", "everyone", "vip", "deleted_segment"}) == []


def test_change_ids_are_deterministic_in_cause() -> None:
    first = changes(set(), cause="e1")
    assert first == changes(set(), cause="e1")
    other = changes(set(), cause="e2")
    assert [c.segment_id for c in first] == [c.segment_id for c in other]
    assert {c.change_id for c in first}.isdisjoint({c.change_id for c in other})
    assert len({c.change_id for c in first}) == len(first)


def test_change_id_formula_is_stable() -> None:
    (c,) = membership_changes(
        app_id="app",
        user_key="u1",
        segments={"s": parse_rule(T)},
        current=set(),
        state=STATE,
        now=NOW,
        cause="e9",
    )
    assert c.change_id == uuid.uuid5(CHANGE_NS, '["app", "u1", "s", "entered", "e9"]').hex


def test_entered_and_exited_ids_differ() -> None:
    entered = membership_changes(
        app_id="app",
        user_key="u1",
        segments={"s": parse_rule(T)},
        current=set(),
        state=STATE,
        now=NOW,
        cause="e1",
    )
    exited = membership_changes(
        app_id="app",
        user_key="u1",
        segments={"s": parse_rule(F)},
        current={"s"},
        state=STATE,
        now=NOW,
        cause="e1",
    )
    assert entered[0].change_id != exited[0].change_id


def test_change_ids_differ_per_user_and_app() -> None:
    base = membership_changes(
        app_id="app",
        user_key="u1",
        segments={"s": parse_rule(T)},
        current=set(),
        state=STATE,
        now=NOW,
        cause="e1",
    )
    user = membership_changes(
        app_id="app",
        user_key="u2",
        segments={"s": parse_rule(T)},
        current=set(),
        state=STATE,
        now=NOW,
        cause="e1",
    )
    app = membership_changes(
        app_id="app2",
        user_key="u1",
        segments={"s": parse_rule(T)},
        current=set(),
        state=STATE,
        now=NOW,
        cause="e1",
    )
    assert len({base[0].change_id, user[0].change_id, app[0].change_id}) == 3


def test_no_segments_no_changes() -> None:
    assert (
        membership_changes(
            app_id="a", user_key="u", segments={}, current={"x"}, state=STATE, now=NOW, cause="c"
        )
        == []
    )


def test_counters_saturate_instead_of_overflowing() -> None:
    import math
    import sys

    from services.segmenter.logic import INT64_MAX

    attrs = apply_attributes({"score": 1e308}, {"increment": {"score": 1e308}})
    assert attrs["score"] == sys.float_info.max and math.isfinite(attrs["score"])
    attrs = apply_attributes({"n": INT64_MAX}, {"increment": {"n": 5}})
    assert attrs["n"] == INT64_MAX and isinstance(attrs["n"], int)
    attrs = apply_attributes({"n": 2}, {"increment": {"n": 3}})
    assert attrs["n"] == 5 and isinstance(attrs["n"], int)


def test_rule_fingerprint_ignores_key_order_and_notices_any_change() -> None:
    rule = {"attribute": "city", "op": "eq", "value": "تهران"}
    same = {"value": "تهران", "op": "eq", "attribute": "city"}
    assert rule_fingerprint(rule) == rule_fingerprint(same)
    assert rule_fingerprint(rule) != rule_fingerprint({**rule, "value": "شیراز"})
    assert rule_fingerprint({"all": [rule]}) != rule_fingerprint(rule)
    assert len(rule_fingerprint(rule)) == 64


# --- RFM threshold cache ------------------------------------------------------------------

THRESHOLDS = RfmThresholds((1.0, 3.0, 7.0, 30.0), (1.0, 2.0, 5.0, 9.0), (0.0, 0.0, 1e5, 1e6))


def test_rfm_cache_misses_until_filled_and_keeps_apps_apart() -> None:
    cache = RfmCache()
    assert cache.get("app", NOW) is None
    cache.put("app", THRESHOLDS, NOW)
    assert cache.get("app", NOW) == THRESHOLDS
    assert cache.get("other", NOW) is None


def test_rfm_cache_serves_until_the_ttl_then_expires() -> None:
    cache = RfmCache(ttl=timedelta(minutes=5))
    cache.put("app", THRESHOLDS, NOW)
    assert cache.get("app", NOW + timedelta(minutes=5) - timedelta(microseconds=1)) == THRESHOLDS
    assert cache.get("app", NOW + timedelta(minutes=5)) is None
    assert cache.get("app", NOW) is None  # an expired entry is gone, not revived


def test_rfm_cache_put_replaces_and_restarts_the_ttl() -> None:
    cache = RfmCache()
    cache.put("app", RfmThresholds(), NOW)
    later = NOW + RFM_TTL - timedelta(seconds=1)
    cache.put("app", THRESHOLDS, later)
    assert cache.get("app", later + RFM_TTL - timedelta(seconds=1)) == THRESHOLDS


def test_rfm_cache_entry_from_the_future_is_expired() -> None:
    cache = RfmCache()
    cache.put("app", THRESHOLDS, NOW)
    assert cache.get("app", NOW - timedelta(seconds=1)) is None
