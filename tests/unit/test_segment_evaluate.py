"""Profile folding of the reserved events, daily counts, and in-memory evaluation of every
condition of the rule language (boundaries and missing values included); the SQL
twin's agreement is proven in tests/integration/test_segment_agreement.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from libs.rules import sql
from libs.rules.evaluation import evaluate, haversine_m, quintile_thresholds, rfm_scores
from libs.rules.language import parse_rule
from libs.rules.profile import DailyCount, ProfileState, ProfileView, RecentEvent
from libs.rules.semantics import Context, RfmThresholds
from libs.schemas import Event
from services.segmenter.logic import apply_event, daily_counts, dependency_order, membership_changes

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
ids = count()


def event(name: str, ts: datetime = NOW, device: str | None = "dev_1", **kw: Any) -> Event:
    return Event(
        app_id="app",
        event_id=f"e{next(ids)}",
        name=name,
        ts=ts,
        received_at=NOW,
        device_id=device,
        user_id=None if device else "u1",
        **kw,
    )


def fold(*events: Event, state: ProfileState | None = None) -> ProfileState:
    state = state or ProfileState()
    for e in events:
        state = apply_event(state, e)
    return state


def ev(raw: Any, profile: ProfileState | ProfileView, now: datetime = NOW, **kw: Any) -> bool:
    return evaluate(parse_rule(raw), profile, now, Context(**kw))


# --- folding reserved events --------------------------------------------------------------


def test_push_tokens_per_device_and_provider() -> None:
    state = fold(
        event("$push_token", props={"token": "t1", "provider": "fcm"}),
        event("$push_token", props={"token": "t2", "provider": "fcm"}, ts=NOW + timedelta(1)),
        event("$push_token", props={"token": "a1", "provider": "apns"}, device="dev_2"),
        event("$push_token", props={"token": "w1", "provider": "webpush"}),
    )
    assert [(t["device_id"], t["token"], t["provider"], t["valid"]) for t in state.push_tokens] == [
        ("dev_1", "t2", "fcm", True),
        ("dev_2", "a1", "apns", True),
    ]
    assert [(w["device_id"], w["token"], w["valid"]) for w in state.web_push] == [
        ("dev_1", "w1", True)
    ]


def test_older_push_token_does_not_replace_newer() -> None:
    state = fold(
        event("$push_token", props={"token": "new", "provider": "fcm"}, ts=NOW),
        event("$push_token", props={"token": "old", "provider": "fcm"}, ts=NOW - timedelta(1)),
    )
    assert [t["token"] for t in state.push_tokens] == ["new"]


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"token": "t"},
        {"token": "t", "provider": "sms"},
        {"token": 5, "provider": "fcm"},
        {"token": "", "provider": "fcm"},
        {"token": ["t"], "provider": "fcm"},
        {"token": "t", "provider": ["fcm"]},
    ],
)
def test_malformed_push_token_is_ignored(props: dict[str, Any]) -> None:
    state = fold(event("$push_token", props=props))
    assert state.push_tokens == [] and state.web_push == [] and state.events == 1


def test_push_permission() -> None:
    assert fold(event("$push_permission", props={"granted": True})).push_permission is True
    state = fold(
        event("$push_permission", props={"granted": True}),
        event("$push_permission", props={"granted": False}, ts=NOW + timedelta(1)),
    )
    assert state.push_permission is False
    late = fold(
        event("$push_permission", props={"granted": False}),
        event("$push_permission", props={"granted": True}, ts=NOW - timedelta(1)),
    )
    assert late.push_permission is False
    for bad in ({}, {"granted": "yes"}, {"granted": 1}, {"granted": None}):
        assert fold(event("$push_permission", props=bad)).push_permission is None


def test_location_and_out_of_order() -> None:
    state = fold(event("$location", props={"lat": 35.7, "lon": 51.4, "accuracy": 10}))
    assert (state.last_lat, state.last_lon, state.last_location_at) == (35.7, 51.4, NOW)
    older = fold(event("$location", props={"lat": 1, "lon": 2}, ts=NOW - timedelta(1)), state=state)
    assert (older.last_lat, older.last_lon, older.last_location_at) == (35.7, 51.4, NOW)
    newer = fold(event("$location", props={"lat": 1, "lon": 2}, ts=NOW + timedelta(1)), state=state)
    assert (newer.last_lat, newer.last_lon) == (1.0, 2.0)
    assert isinstance(newer.last_lat, float)


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"lat": 35.7},
        {"lat": 91, "lon": 0},
        {"lat": 0, "lon": -180.5},
        {"lat": True, "lon": 0},
        {"lat": "35.7", "lon": "51.4"},
        {"lat": None, "lon": None},
    ],
)
def test_malformed_location_is_ignored(props: dict[str, Any]) -> None:
    state = fold(event("$location", props=props))
    assert state.last_lat is None and state.last_location_at is None


def test_attributes_fill_phone_and_email() -> None:
    state = fold(event("$attributes", props={"set": {"phone": "+989121234567", "email": "a@b.ir"}}))
    assert (state.phone, state.email) == ("+989121234567", "a@b.ir")
    assert state.attributes == {"phone": "+989121234567", "email": "a@b.ir"}
    kept = fold(event("$attributes", props={"set": {"phone": 5, "email": ""}}), state=state)
    assert (kept.phone, kept.email) == ("+989121234567", "a@b.ir")
    assert fold(event("$attributes", props={"set": {"email": "x" * 257}})).email is None


def test_set_once_fills_a_missing_contact_only() -> None:
    state = fold(event("$attributes", props={"set_once": {"phone": "+98912"}}))
    assert state.phone == "+98912"
    again = fold(event("$attributes", props={"set_once": {"phone": "+1555"}}), state=state)
    assert again.phone == "+98912"


def test_opt_out_and_in() -> None:
    state = fold(
        event("$opt_out", props={"channel": "sms"}),
        event("$opt_out", props={"channel": "email"}, ts=NOW + timedelta(seconds=1)),
        event("$opt_in", props={"channel": "sms"}, ts=NOW + timedelta(seconds=2)),
        event("$opt_out", props={"channel": "fax"}, ts=NOW + timedelta(seconds=3)),
        event("$opt_out", props={"channel": ["sms"]}, ts=NOW + timedelta(seconds=4)),
    )
    assert state.opt_outs == ["email"]


@given(
    st.sampled_from(["$push_token", "$push_permission", "$location", "$opt_out", "$opt_in"]),
    st.dictionaries(
        st.sampled_from(["token", "provider", "granted", "lat", "lon", "channel", "accuracy"]),
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(st.characters(blacklist_characters="\x00"), max_size=5)
        | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    ),
)
def test_reserved_events_never_crash(name: str, props: dict[str, Any]) -> None:
    assert fold(event(name, props=props)).events == 1


def test_daily_counts_by_utc_day_and_name() -> None:
    late = datetime(2024, 4, 30, 23, 59, 59, tzinfo=UTC)
    got = daily_counts(
        [
            event("$purchase", revenue=2.5, currency="IRR"),
            event("$purchase", revenue=1.0, currency="IRR"),
            event("$purchase", ts=late, revenue=3.0, currency="IRR"),
            event("$open"),
        ]
    )
    assert got == [
        DailyCount("$open", TODAY, 1, 0.0),
        DailyCount("$purchase", date(2024, 4, 30), 1, 3.0),
        DailyCount("$purchase", TODAY, 2, 3.5),
    ]


# --- events and revenue -------------------------------------------------------------------


def counters(*rows: tuple[str, int, int, float]) -> ProfileView:
    return ProfileView(
        ProfileState(),
        counters=tuple(DailyCount(n, TODAY - timedelta(days=k), c, r) for n, k, c, r in rows),
    )


BUYER = counters(
    ("buy", 0, 2, 10.0), ("buy", 7, 3, 100.0), ("buy", 30, 1, 1000.0), ("$open", 1, 5, 0)
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"event": "buy"}, True),
        ({"event": "nope"}, False),
        ({"event": "nope", "count": {"op": "eq", "value": 0}}, True),
        ({"event": "buy", "count": {"op": "eq", "value": 0}}, False),
        ({"event": "buy", "count": {"op": "eq", "value": 6}}, True),
        ({"event": "buy", "count": {"op": "gte", "value": 5}, "within": {"days": 7}}, True),
        # 7 days back from noon is noon seven days ago: that whole day counts.
        ({"event": "buy", "count": {"op": "eq", "value": 5}, "within": {"days": 7}}, True),
        ({"event": "buy", "count": {"op": "eq", "value": 2}, "within": {"days": 6}}, True),
        ({"event": "buy", "count": {"op": "eq", "value": 2}, "within": {"days": 0}}, True),
        ({"event": "buy", "count": {"op": "lt", "value": 6}, "within": {"days": 29}}, True),
        ({"event": "buy", "count": {"op": "ne", "value": 6}, "within": {"days": 30}}, False),
        (
            {
                "event": "buy",
                "count": {"op": "eq", "value": 3},
                "between": {"from": "2024-04-24", "to": "2024-04-24"},
            },
            True,
        ),
        (
            {
                "event": "buy",
                "count": {"op": "eq", "value": 0},
                "between": {"from": "2024-04-25", "to": "2024-04-30"},
            },
            True,
        ),
        ({"revenue": {"op": "eq", "value": 1110}}, True),
        ({"revenue": {"op": "eq", "value": 110}, "within": {"days": 7}}, True),
        ({"revenue": {"op": "gt", "value": 10}, "within": {"days": 6}}, False),
        (
            {
                "revenue": {"op": "eq", "value": 1000},
                "between": {"from": "2024-04-01", "to": "2024-04-01"},
            },
            True,
        ),
    ],
)
def test_counter_conditions(raw: dict[str, Any], expected: bool) -> None:
    assert ev(raw, BUYER) is expected


def test_day_windows_turn_at_utc_midnight() -> None:
    view = counters(("buy", 1, 1, 0.0))  # yesterday
    rule = {"event": "buy", "within": {"days": 1}}
    assert ev(rule, view, datetime(2024, 5, 1, 0, 0, tzinfo=UTC))
    assert ev(rule, view, datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=UTC))
    assert not ev(rule, view, datetime(2024, 5, 2, 0, 0, tzinfo=UTC))


def test_no_counters_means_zero() -> None:
    empty = ProfileView(ProfileState())
    assert ev({"revenue": {"op": "eq", "value": 0}}, empty)
    assert ev({"revenue": {"op": "lt", "value": 1}, "within": {"days": 3}}, empty)
    assert not ev({"event": "buy"}, empty)
    assert ev({"event": "buy", "count": {"op": "eq", "value": 0}}, ProfileState())


RECENT = ProfileView(
    ProfileState(),
    recent=(
        RecentEvent("buy", NOW - timedelta(hours=3), {"sku": "A", "price": 5}),
        RecentEvent("buy", NOW - timedelta(hours=1), {"sku": "B", "price": 50}),
        RecentEvent("buy", NOW - timedelta(minutes=10), {"sku": "A"}),
        RecentEvent("view", NOW, {"sku": "A"}),
    ),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"within": {"hours": 3}, "count": {"op": "eq", "value": 3}}, True),
        # exact: 3 hours back is inclusive, a microsecond less is not
        ({"within": {"minutes": 179}, "count": {"op": "eq", "value": 2}}, True),
        (
            {
                "where": [{"prop": "sku", "op": "eq", "value": "A"}],
                "within": {"days": 1},
                "count": {"op": "eq", "value": 2},
            },
            True,
        ),
        (
            {
                "where": [{"prop": "sku", "op": "eq", "value": "A"}],
                "within": {"hours": 2},
                "count": {"op": "eq", "value": 1},
            },
            True,
        ),
        (
            {
                "where": [{"prop": "price", "op": "gte", "value": 10}],
                "within": {"days": 1},
                "count": {"op": "eq", "value": 1},
            },
            True,
        ),
        # a missing prop matches ne, like a missing attribute
        (
            {
                "where": [{"prop": "price", "op": "ne", "value": 5}],
                "within": {"days": 1},
                "count": {"op": "eq", "value": 2},
            },
            True,
        ),
        (
            {
                "where": [
                    {"prop": "sku", "op": "eq", "value": "A"},
                    {"prop": "price", "op": "exists"},
                ],
                "within": {"days": 1},
                "count": {"op": "eq", "value": 1},
            },
            True,
        ),
        (
            {
                "where": [{"prop": "sku", "op": "eq", "value": "C"}],
                "within": {"days": 90},
                "count": {"op": "eq", "value": 0},
            },
            True,
        ),
    ],
)
def test_recent_event_conditions(raw: dict[str, Any], expected: bool) -> None:
    assert ev({"event": "buy", **raw}, RECENT) is expected


def test_exact_window_boundary() -> None:
    view = ProfileView(ProfileState(), recent=(RecentEvent("buy", NOW - timedelta(hours=3)),))
    rule = {"event": "buy", "within": {"hours": 3}}
    assert ev(rule, view)
    assert not ev(rule, view, NOW + timedelta(microseconds=1))


# --- reachability -------------------------------------------------------------------------

PUSHABLE = ProfileState(
    push_permission=True,
    push_tokens=[{"device_id": "d", "token": "t", "provider": "fcm", "valid": True}],
    phone="+98912",
    email="a@b.ir",
    web_push=[{"device_id": "d", "token": "w", "valid": True}],
    last_seen=NOW - timedelta(days=30),
)


@pytest.mark.parametrize("channel", ["push", "sms", "email", "web_push", "in_app"])
def test_reachable_and_opt_out(channel: str) -> None:
    assert ev({"reachable": channel}, PUSHABLE)
    assert not ev(
        {"reachable": channel}, PUSHABLE.__class__(**{**_fields(PUSHABLE), "opt_outs": [channel]})
    )
    assert not ev({"reachable": channel}, ProfileState())


def _fields(state: ProfileState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"push_permission": None}, False),
        ({"push_permission": False}, False),
        ({"push_tokens": []}, False),
        ({"push_tokens": [{"token": "t", "valid": False}]}, False),
        ({"push_tokens": [{"token": "t", "valid": 1}]}, False),
        ({"push_tokens": [{"valid": False}, {"valid": True}]}, True),
        ({"opt_outs": ["sms"]}, True),
    ],
)
def test_push_needs_permission_and_a_valid_token(changes: dict[str, Any], expected: bool) -> None:
    assert ev({"reachable": "push"}, ProfileState(**{**_fields(PUSHABLE), **changes})) is expected


def test_in_app_is_seen_in_the_last_30_days() -> None:
    assert not ev({"reachable": "in_app"}, PUSHABLE, NOW + timedelta(microseconds=1))
    assert not ev({"reachable": "sms"}, ProfileState(phone=""))


# --- geofence -----------------------------------------------------------------------------

TEHRAN = {"lat": 35.6892, "lon": 51.3890}
AZADI = ProfileState(
    last_lat=35.6997, last_lon=51.3380, last_location_at=NOW - timedelta(minutes=30)
)


def geo(radius: float, inside: bool, hours: float = 1) -> dict[str, Any]:
    return {
        "geofence": {**TEHRAN, "radius_m": radius},
        "inside": inside,
        "max_age": {"hours": hours},
    }


def test_haversine_known_distance() -> None:
    assert haversine_m(35.6892, 51.3890, 35.6997, 51.3380) == pytest.approx(4760, rel=0.01)
    assert haversine_m(0, 0, 0, 0) == 0.0
    assert haversine_m(0, 0, 0, 180) == pytest.approx(20_015_114, rel=1e-4)


def test_geofence_inside_and_outside() -> None:
    assert ev(geo(5000, True), AZADI) and not ev(geo(5000, False), AZADI)
    assert ev(geo(4000, False), AZADI) and not ev(geo(4000, True), AZADI)


def test_geofence_radius_is_inclusive() -> None:
    here = ProfileState(last_lat=TEHRAN["lat"], last_lon=TEHRAN["lon"], last_location_at=NOW)
    assert ev(geo(0, True), here) and not ev(geo(0, False), here)


def test_no_recent_location_matches_neither() -> None:
    stale_at = NOW - timedelta(hours=1, microseconds=1)
    stale = ProfileState(**{**_fields(AZADI), "last_location_at": stale_at})
    for state in (stale, ProfileState()):
        assert not ev(geo(5000, True), state) and not ev(geo(5000, False), state)
        assert ev({"not": geo(5000, True)}, state)  # "not known to be inside"
    exactly = ProfileState(**{**_fields(AZADI), "last_location_at": NOW - timedelta(hours=1)})
    assert ev(geo(5000, True), exactly)


# --- segments, rfm, attributes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [("verified", True), ("pending", True), (None, True), ("rejected", False)],
)
def test_install_source_skips_an_install_rejected_as_fraud(
    status: str | None, expected: bool
) -> None:
    attribution = {"tracker_token": "t1", "network": "n", "channel": "web", "status": status}
    state = ProfileState(attribution=attribution)
    for field, value in (("tracker", "t1"), ("network", "n"), ("channel", "web")):
        assert ev({"install": {field: value}}, state) is expected


def test_segment_membership() -> None:
    view = ProfileView(ProfileState(), segments={"s1"})
    assert ev({"segment": "s1"}, view) and not ev({"segment": "s2"}, view)
    assert not ev({"segment": "s1"}, ProfileState())


def test_quintile_thresholds_interpolate_like_percentile_cont() -> None:
    assert quintile_thresholds([]) == ()
    assert quintile_thresholds([7]) == (7, 7, 7, 7)
    assert quintile_thresholds([1, 2, 3, 4, 5, 6]) == pytest.approx((2.0, 3.0, 4.0, 5.0))
    assert quintile_thresholds([10, 0]) == pytest.approx((2.0, 4.0, 6.0, 8.0))


THRESHOLDS = RfmThresholds(
    recency_days=(1.0, 7.0, 14.0, 30.0),
    frequency=(1.0, 2.0, 5.0, 10.0),
    monetary=(0.0, 10.0, 100.0, 1000.0),
)


@pytest.mark.parametrize(
    ("state", "scores"),
    [
        (ProfileState(), (1, 1, 1)),
        (ProfileState(last_seen=NOW, sessions=1, revenue=0.0), (5, 1, 1)),
        (ProfileState(last_seen=NOW - timedelta(days=1), sessions=2, revenue=0.5), (5, 2, 2)),
        (
            ProfileState(last_seen=NOW - timedelta(days=1, seconds=1), sessions=3, revenue=10),
            (4, 3, 2),
        ),
        (ProfileState(last_seen=NOW - timedelta(days=20), sessions=10, revenue=100.5), (2, 4, 4)),
        (ProfileState(last_seen=NOW - timedelta(days=31), sessions=11, revenue=5000), (1, 5, 5)),
    ],
)
def test_rfm_scores(state: ProfileState, scores: tuple[int, int, int]) -> None:
    assert rfm_scores(state, NOW, THRESHOLDS) == scores


def test_rfm_condition() -> None:
    best = ProfileState(last_seen=NOW, sessions=11, revenue=5000)
    assert ev({"rfm": {"r": [4, 5], "f": [5, 5]}}, best, rfm=THRESHOLDS)
    assert not ev({"rfm": {"m": [1, 4]}}, best, rfm=THRESHOLDS)
    assert not ev({"rfm": {"r": [1, 5]}}, best)  # no thresholds computed: no one


@pytest.mark.parametrize(
    ("value", "op", "ago", "expected"),
    [
        ("2024-04-01", "before", {"days": 30}, True),
        ("2024-04-01T12:00:00Z", "before", {"days": 30}, False),
        ("2024-04-01T12:00:00Z", "after", {"days": 30}, True),
        ("2024-04-01T15:30:00+03:30", "after", {"days": 30}, True),
        ("2024-04-01T15:29:59+03:30", "after", {"days": 30}, False),
        ("2024-02-30", "before", {"days": 1}, False),
        ("yesterday", "before", {"days": 1}, False),
        (20240401, "before", {"days": 1}, False),
        (None, "after", {"days": 1}, False),
        ("0001-01-01", "before", {"days": 36600}, True),
    ],
)
def test_relative_date_attributes(value: Any, op: str, ago: dict[str, int], expected: bool) -> None:
    state = ProfileState(attributes={"d": value})
    assert ev({"attribute": "d", "op": op, "ago": ago}, state) is expected


@pytest.mark.parametrize(
    ("actual", "value", "expected"),
    [
        ([1, True], [1, True], True),
        ([True], [1], False),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": 1.0}, True),
        ([1, [2]], [1, [2.0]], True),
        ([1, 2], [2, 1], False),
    ],
)
def test_json_equality_at_depth(actual: Any, value: Any, expected: bool) -> None:
    assert (
        ev({"attribute": "a", "op": "eq", "value": value}, ProfileState(attributes={"a": actual}))
        is expected
    )


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00.1234567Z",
        "2024-05-01T12",
        "May 1 2024",
        "۲۰۲۴-۰۵-۰۱",
        "2024-05-01+00:00",
    ],
)
def test_only_iso_dates_compare(value: str) -> None:
    state = ProfileState(attributes={"a": value})
    assert not ev({"attribute": "a", "op": "lt", "value": "2100-01-01"}, state)


# --- memberships through references -------------------------------------------------------


def test_referencing_segments_see_this_pass_answers() -> None:
    segments = {
        "a_vip": parse_rule({"segment": "z_buyer"}),
        "z_buyer": parse_rule({"event": "buy"}),
        "m_not_vip": parse_rule({"not": {"segment": "a_vip"}}),
    }
    got = membership_changes(
        app_id="app",
        user_key="u",
        segments=segments,
        current={"m_not_vip"},
        state=counters(("buy", 0, 1, 0.0)),
        now=NOW,
        cause="e1",
    )
    assert [(c.segment_id, c.change) for c in got] == [
        ("a_vip", "entered"),
        ("m_not_vip", "exited"),
        ("z_buyer", "entered"),
    ]


def test_dependency_order_puts_referenced_segments_first_ties_by_id() -> None:
    segments = {
        "a": parse_rule({"segment": "c"}),
        "b": parse_rule({"all": [{"segment": "a"}, {"segment": "gone"}]}),
        "c": parse_rule({"event": "buy"}),
        "d": parse_rule({"event": "buy"}),
    }
    assert dependency_order(segments) == ["c", "d", "a", "b"]


def test_dependency_order_of_a_cycle_takes_its_members_in_id_order() -> None:
    segments = {
        "x": parse_rule({"segment": "y"}),
        "y": parse_rule({"segment": "x"}),
        "self": parse_rule({"segment": "self"}),
    }
    assert dependency_order(segments) == ["self", "x", "y"]


def test_a_precomputed_order_decides_as_the_computed_one() -> None:
    segments = {
        "a_vip": parse_rule({"segment": "z_buyer"}),
        "z_buyer": parse_rule({"event": "buy"}),
        "m_not_vip": parse_rule({"not": {"segment": "a_vip"}}),
    }
    kwargs: dict[str, Any] = dict(
        app_id="app",
        user_key="u",
        segments=segments,
        current={"m_not_vip"},
        state=counters(("buy", 0, 1, 0.0)),
        now=NOW,
        cause="e1",
    )
    order = dependency_order(segments)
    assert membership_changes(**kwargs, order=order) == membership_changes(**kwargs)


# --- the SQL twin compiles ----------------------------------------------------------------


def test_compiled_sql_is_scoped_by_app() -> None:
    rule = parse_rule(
        {
            "all": [
                {"event": "buy", "within": {"days": 7}},
                {
                    "event": "buy",
                    "where": [{"prop": "sku", "op": "eq", "value": "A"}],
                    "within": {"days": 7},
                },
                {"revenue": {"op": "gt", "value": 1}},
                {"segment": "s1"},
                {"reachable": "push"},
                {"geofence": {**TEHRAN, "radius_m": 1}, "max_age": {"hours": 1}},
                {"rfm": {"r": [1, 2]}},
            ]
        }
    )
    query = sql.matching_users(rule, app_id="app_1", now=NOW, context=Context(THRESHOLDS))
    text = str(query.compile(dialect=postgresql.dialect()))
    for table in ("segmenter_daily_counters", "segmenter_recent_events", "segment_memberships"):
        assert f"{table}.app_id = " in text
    assert "profiles.app_id = " in text


def test_coordinates_are_kept_to_seven_decimals() -> None:
    state = fold(event("$location", props={"lat": 1e-200, "lon": 51.123456789}))
    assert (state.last_lat, state.last_lon) == (0.0, 51.1234568)
    node = parse_rule(
        {"geofence": {"lat": 1e-200, "lon": 0, "radius_m": 0}, "max_age": {"days": 1}}
    )
    assert node.lat == 0.0  # type: ignore[union-attr]
