"""The full segment rule language: every documented form parses into its node; bad nodes
name their path; segment references resolve and never cycle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.rules.evaluation import evaluate
from libs.rules.language import (
    RECENT_EVENTS_DAYS,
    AttributeCond,
    EventCond,
    GeofenceCond,
    ReachableCond,
    RevenueCond,
    RfmCond,
    RuleError,
    SegmentCond,
    Window,
    is_time_dependent,
    parse_rule,
    referenced_segments,
)
from libs.rules.profile import DailyCount, ProfileState, ProfileView, RecentEvent
from libs.rules.semantics import Context, RfmThresholds

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)

# The public contract, verbatim.
CONTRACT = [
    {"attribute": "city", "op": "eq", "value": "Tehran"},
    {"attribute": "signup_at", "op": "before", "ago": {"days": 30}},
    {
        "event": "$purchase",
        "where": [{"prop": "sku", "op": "eq", "value": "A"}],
        "count": {"op": "gte", "value": 5},
        "within": {"days": 30},
    },
    {"revenue": {"op": "gt", "value": 1000000}, "within": {"days": 14}},
    {"last_seen": {"op": "before", "ago": {"hours": 3}}},
    {"install": {"tracker": "TOKEN"}},
    {"reachable": "push"},
    {
        "geofence": {"lat": 35.6892, "lon": 51.3890, "radius_m": 2000},
        "inside": False,
        "max_age": {"hours": 1},
    },
    {"segment": "SEGMENT_ID"},
    {"rfm": {"r": [4, 5], "f": [4, 5], "m": [3, 5]}},
]


def error(raw: Any, **kw: Any) -> RuleError:
    with pytest.raises(RuleError) as info:
        parse_rule(raw, **kw)
    assert info.value.reason and str(info.value).startswith(info.value.path)
    return info.value


def test_every_contract_form_parses() -> None:
    nodes = [parse_rule(raw) for raw in CONTRACT]
    assert nodes[1] == AttributeCond("signup_at", "before", timedelta(days=30))
    assert nodes[2] == EventCond(
        "$purchase",
        (AttributeCond("sku", "eq", "A"),),
        "gte",
        5,
        Window(within=timedelta(days=30)),
    )
    assert nodes[3] == RevenueCond("gt", 1000000.0, Window(within=timedelta(days=14)))
    assert nodes[6] == ReachableCond("push")
    assert nodes[7] == GeofenceCond(35.6892, 51.389, 2000.0, False, timedelta(hours=1))
    assert nodes[8] == SegmentCond("SEGMENT_ID")
    assert nodes[9] == RfmCond((4, 5), (4, 5), (3, 5))
    parse_rule({"all": CONTRACT})


def test_event_defaults_to_at_least_once_all_time_from_counters() -> None:
    node = parse_rule({"event": "$open"})
    assert node == EventCond("$open", (), "gte", 1, Window())
    assert isinstance(node, EventCond) and not node.exact


def test_never_is_count_eq_zero() -> None:
    node = parse_rule({"event": "$purchase", "count": {"op": "eq", "value": 0}})
    assert isinstance(node, EventCond) and (node.count_op, node.count) == ("eq", 0)


def test_event_sources() -> None:
    days = parse_rule({"event": "x", "within": {"days": 7}})
    hours = parse_rule({"event": "x", "within": {"hours": 3}})
    day_in_hours = parse_rule({"event": "x", "within": {"hours": 48}})
    where = parse_rule(
        {"event": "x", "where": [{"prop": "p", "op": "exists"}], "within": {"days": 1}}
    )
    between = parse_rule({"event": "x", "between": {"from": "2024-01-01", "to": "2024-01-31"}})
    assert isinstance(days, EventCond) and not days.exact
    assert isinstance(hours, EventCond) and hours.exact
    assert isinstance(day_in_hours, EventCond) and not day_in_hours.exact  # whole days
    assert isinstance(where, EventCond) and where.exact
    assert isinstance(between, EventCond) and not between.exact
    assert between.window.between == (date(2024, 1, 1), date(2024, 1, 31))


def test_where_filters_take_every_attribute_op() -> None:
    for op, value in [("in", [1]), ("contains", "a"), ("gt", 3), ("after", {"days": 1})]:
        raw: dict[str, Any] = {"prop": "p", "op": op}
        raw["ago" if op == "after" else "value"] = value
        parse_rule({"event": "x", "where": [raw], "within": {"days": 1}})


def test_revenue_all_time_and_between() -> None:
    assert parse_rule({"revenue": {"op": "lt", "value": 0.5}}) == RevenueCond("lt", 0.5, Window())
    parse_rule(
        {"revenue": {"op": "eq", "value": 0}, "between": {"from": "2024-01-01", "to": "2024-01-01"}}
    )


def test_geofence_inside_defaults_to_true() -> None:
    node = parse_rule({"geofence": {"lat": 0, "lon": 0, "radius_m": 0}, "max_age": {"days": 1}})
    assert isinstance(node, GeofenceCond) and node.inside is True


def test_rfm_partial() -> None:
    assert parse_rule({"rfm": {"m": [5, 5]}}) == RfmCond(None, None, (5, 5))


@pytest.mark.parametrize("channel", ["push", "sms", "email", "web_push", "in_app"])
def test_reachable_channels(channel: str) -> None:
    assert parse_rule({"reachable": channel}) == ReachableCond(channel)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"attribute": "a", "op": "before"}, "ago"),
        ({"attribute": "a", "op": "before", "value": 1, "ago": {"days": 1}}, "value"),
        ({"attribute": "a", "op": "eq", "value": 1, "ago": {"days": 1}}, "ago"),
        ({"attribute": "a", "op": "after", "ago": {"weeks": 1}}, "ago.weeks"),
        ({"attribute": "a", "op": "gt", "value": float("nan")}, "value"),
        ({"event": ""}, "event"),
        ({"event": 5}, "event"),
        ({"event": "x", "extra": 1}, "extra"),
        ({"event": "x", "where": []}, "where"),
        ({"event": "x", "where": {}}, "where"),
        ({"event": "x", "where": ["p"], "within": {"days": 1}}, "where.0"),
        (
            {"event": "x", "where": [{"prop": "p", "op": "nope"}], "within": {"days": 1}},
            "where.0.op",
        ),
        (
            {"event": "x", "where": [{"prop": "", "op": "exists"}], "within": {"days": 1}},
            "where.0.prop",
        ),
        (
            {"event": "x", "where": [{"prop": "p", "op": "eq"}], "within": {"days": 1}},
            "where.0.value",
        ),
        ({"event": "x", "where": [{"prop": "p", "op": "exists"}]}, "within"),
        (
            {
                "event": "x",
                "where": [{"prop": "p", "op": "exists"}],
                "within": {"days": RECENT_EVENTS_DAYS + 1},
            },
            "within",
        ),
        (
            {
                "event": "x",
                "where": [{"prop": "p", "op": "exists"}],
                "between": {"from": "2024-01-01", "to": "2024-01-02"},
            },
            "within",
        ),
        ({"event": "x", "within": {"hours": 24 * RECENT_EVENTS_DAYS + 1}}, "within"),
        ({"event": "x", "count": 5}, "count"),
        ({"event": "x", "count": {"op": "gte"}}, "count.value"),
        ({"event": "x", "count": {"op": "gte", "value": -1}}, "count.value"),
        ({"event": "x", "count": {"op": "gte", "value": 1.5}}, "count.value"),
        ({"event": "x", "count": {"op": "gte", "value": True}}, "count.value"),
        ({"event": "x", "count": {"op": "in", "value": 1}}, "count.op"),
        ({"event": "x", "count": {"op": "gte", "value": 1, "x": 1}}, "count.x"),
        ({"event": "x", "within": {"days": 1}, "between": {}}, "between"),
        ({"event": "x", "between": "2024"}, "between"),
        ({"event": "x", "between": {"from": "2024-01-01"}}, "between.to"),
        ({"event": "x", "between": {"from": "2024-1-1", "to": "2024-01-02"}}, "between.from"),
        ({"event": "x", "between": {"from": "2024-01-03", "to": "2024-01-02"}}, "between.to"),
        ({"event": "x", "between": {"from": "2024-01-01", "to": "2024-02-30"}}, "between.to"),
        (
            {"event": "x", "between": {"from": "2024-01-01", "to": "2024-01-02", "x": 1}},
            "between.x",
        ),
        ({"revenue": 5}, "revenue"),
        ({"revenue": {"op": "gt", "value": "5"}}, "revenue.value"),
        ({"revenue": {"op": "gt", "value": float("inf")}}, "revenue.value"),
        ({"revenue": {"op": "gt", "value": 1}, "within": {"hours": 3}}, "within"),
        ({"revenue": {"op": "gt", "value": 1}, "where": []}, "where"),
        ({"reachable": "fax"}, "reachable"),
        ({"reachable": ["push"]}, "reachable"),
        ({"reachable": "push", "x": 1}, "x"),
        ({"geofence": None, "max_age": {"days": 1}}, "geofence"),
        (
            {"geofence": {"lat": 91, "lon": 0, "radius_m": 1}, "max_age": {"days": 1}},
            "geofence.lat",
        ),
        (
            {"geofence": {"lat": 0, "lon": 181, "radius_m": 1}, "max_age": {"days": 1}},
            "geofence.lon",
        ),
        (
            {"geofence": {"lat": 0, "lon": 0, "radius_m": -1}, "max_age": {"days": 1}},
            "geofence.radius_m",
        ),
        (
            {"geofence": {"lat": True, "lon": 0, "radius_m": 1}, "max_age": {"days": 1}},
            "geofence.lat",
        ),
        ({"geofence": {"lat": 0, "lon": 0}, "max_age": {"days": 1}}, "geofence.radius_m"),
        (
            {"geofence": {"lat": 0, "lon": 0, "radius_m": 1, "x": 0}, "max_age": {"days": 1}},
            "geofence.x",
        ),
        ({"geofence": {"lat": 0, "lon": 0, "radius_m": 1}}, "max_age"),
        (
            {"geofence": {"lat": 0, "lon": 0, "radius_m": 1}, "max_age": {"days": 1}, "inside": 1},
            "inside",
        ),
        ({"segment": ""}, "segment"),
        ({"segment": 5}, "segment"),
        ({"segment": "x" * 33}, "segment"),
        ({"rfm": {}}, "rfm"),
        ({"rfm": {"x": [1, 2]}}, "rfm.x"),
        ({"rfm": {"r": [0, 2]}}, "rfm.r"),
        ({"rfm": {"r": [3, 2]}}, "rfm.r"),
        ({"rfm": {"f": [1, 6]}}, "rfm.f"),
        ({"rfm": {"m": [1]}}, "rfm.m"),
        ({"rfm": {"m": [1, True]}}, "rfm.m"),
        (
            {"all": [{"reachable": "push"}, {"event": "x", "count": {"op": "gt", "value": "1"}}]},
            "all.1.count.value",
        ),
        ({"not": {"any": [{"rfm": {"r": [1, 9]}}]}}, "not.any.0.rfm.r"),
    ],
)
def test_rejections_name_the_path(raw: Any, path: str) -> None:
    assert error(raw).path == path


# --- segment references -------------------------------------------------------------------

CATALOG: dict[str, Any] = {
    "a": {"segment": "b"},
    "b": {"all": [{"reachable": "sms"}, {"segment": "c"}]},
    "c": {"reachable": "email"},
    "loop1": {"segment": "loop2"},
    "loop2": {"any": [{"reachable": "sms"}, {"segment": "loop1"}]},
    "broken": {"reachable": "fax"},
}


def test_references_resolve() -> None:
    node = parse_rule({"all": [{"segment": "a"}, {"segment": "c"}]}, CATALOG.get)
    assert referenced_segments(node) == {"a", "c"}


def test_unknown_reference_names_its_path() -> None:
    err = error({"all": [{"segment": "a"}, {"not": {"segment": "zzz"}}]}, resolver=CATALOG.get)
    assert err.path == "all.1.not.segment" and "zzz" in err.reason


def test_self_reference_is_a_cycle() -> None:
    err = error({"any": [{"segment": "me"}]}, resolver=CATALOG.get, segment_id="me")
    assert err.path == "any.0.segment" and "me -> me" in err.reason


def test_indirect_cycle_through_this_segment() -> None:
    catalog = {**CATALOG, "c": {"segment": "me"}}
    err = error({"segment": "a"}, resolver=catalog.get, segment_id="me")
    assert err.path == "segment"
    assert "me -> a -> b -> c -> me" in err.reason


def test_cycle_among_referenced_segments() -> None:
    err = error({"segment": "loop1"}, resolver=CATALOG.get)
    assert "loop1 -> loop2 -> loop1" in err.reason


def test_invalid_referenced_segment() -> None:
    assert "broken" in error({"segment": "broken"}, resolver=CATALOG.get).reason


def test_without_resolver_references_are_not_checked() -> None:
    assert parse_rule({"segment": "anything"}) == SegmentCond("anything")


def test_diamond_is_not_a_cycle() -> None:
    catalog = {"x": {"segment": "z"}, "y": {"segment": "z"}, "z": {"reachable": "sms"}}
    parse_rule({"all": [{"segment": "x"}, {"segment": "y"}]}, catalog.get, segment_id="me")


# --- time dependence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"attribute": "d", "op": "after", "ago": {"days": 1}}, True),
        ({"event": "x"}, False),
        ({"event": "x", "between": {"from": "2024-01-01", "to": "2024-01-02"}}, False),
        ({"event": "x", "within": {"days": 1}}, True),
        ({"revenue": {"op": "gt", "value": 1}}, False),
        ({"revenue": {"op": "gt", "value": 1}, "within": {"days": 1}}, True),
        ({"reachable": "push"}, False),
        ({"reachable": "in_app"}, True),
        (CONTRACT[7], True),
        ({"segment": "s"}, True),
        ({"rfm": {"r": [1, 2]}}, True),
        ({"not": {"all": [{"reachable": "sms"}, {"reachable": "in_app"}]}}, True),
    ],
)
def test_is_time_dependent(raw: Any, expected: bool) -> None:
    assert is_time_dependent(parse_rule(raw)) is expected


# --- totality -----------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "all",
        "any",
        "not",
        "attribute",
        "op",
        "value",
        "ago",
        "days",
        "hours",
        "event",
        "where",
        "prop",
        "count",
        "within",
        "between",
        "from",
        "to",
        "revenue",
        "reachable",
        "geofence",
        "lat",
        "lon",
        "radius_m",
        "inside",
        "max_age",
        "segment",
        "rfm",
        "r",
        "f",
        "m",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-10, 10**6)
    | st.floats(allow_nan=False)
    | st.sampled_from(["gte", "eq", "push", "sms", "2024-01-01", "x", ""])
)
JSON = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(KEYS, c, max_size=4),
    max_leaves=20,
)
VIEWS = [
    ProfileView(ProfileState()),
    ProfileView(
        ProfileState(
            attributes={"x": "2024-01-01", "y": 3},
            last_seen=NOW,
            first_seen=NOW,
            push_permission=True,
            push_tokens=[{"valid": True}],
            phone="1",
            last_lat=1.0,
            last_lon=2.0,
            last_location_at=NOW,
        ),
        counters=(DailyCount("x", NOW.date(), 2, 5.0),),
        recent=(RecentEvent("x", NOW, {"x": "a"}),),
        segments={"x"},
    ),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json_raises_only_rule_error_and_parsed_rules_evaluate(raw: Any) -> None:
    try:
        node = parse_rule(raw, lambda ref: {"reachable": "sms"} if ref == "x" else None)
    except RuleError as exc:
        assert exc.path and exc.reason
        return
    context = Context(RfmThresholds((1.0,) * 4, (1.0,) * 4, (1.0,) * 4))
    for view in VIEWS:
        assert evaluate(node, view, NOW, context) in (True, False)
    assert is_time_dependent(node) in (True, False)
