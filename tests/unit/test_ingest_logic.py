"""Ingest rules: an SDK batch becomes Event/InstallReported records, event by event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.runtime.errors import InvalidInput
from libs.schemas import Event, InstallReported, encode
from libs.schemas.events import EXAMPLES
from services.ingest.logic import (
    MAX_BATCH,
    MAX_EVENT_AGE,
    MAX_FUTURE,
    BatchResult,
    clock_skew,
    encode_event,
    parse_batch,
    parse_time,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def ev(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e1",
        "name": "purchase",
        "device_id": "dev_1",
        "ts": iso(NOW - timedelta(minutes=5)),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def parse(events: Any, *, sent_at: Any = None, **kwargs: Any) -> BatchResult:
    body: dict[str, Any] = {"events": events}
    if sent_at is not None:
        body["sent_at"] = sent_at
    kwargs.setdefault("app_id", "digikala")
    kwargs.setdefault("received_at", NOW)
    kwargs.setdefault("ip", "5.160.12.34")
    kwargs.setdefault("user_agent", "Dalvik/2.1.0")
    return parse_batch(body, **kwargs)


def only_rejection(result: BatchResult) -> tuple[int, str | None, str]:
    assert len(result.rejected) == 1, result.rejected
    r = result.rejected[0]
    return r.index, r.field, r.reason


# --- envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "events", 1, True])
def test_body_not_an_object(body: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_batch(body, app_id="a", received_at=NOW, ip=None, user_agent=None)
    assert info.value.field == "events"


@pytest.mark.parametrize(
    "body",
    [{}, {"events": None}, {"events": {}}, {"events": "x"}, {"events": 3}, {"events": ({"a": 1},)}],
)
def test_events_not_a_list(body: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_batch(body, app_id="a", received_at=NOW, ip=None, user_agent=None)
    assert info.value.field == "events"


def test_empty_events_list_is_fine() -> None:
    result = parse([])
    assert (result.events, result.installs, result.rejected) == ([], [], [])


def test_batch_at_max_is_accepted_and_one_over_raises() -> None:
    events = [ev(event_id=f"e{i}") for i in range(MAX_BATCH)]
    assert len(parse(events).events) == MAX_BATCH
    with pytest.raises(InvalidInput) as info:
        parse([*events, ev(event_id="extra")])
    assert info.value.field == "events"
    assert str(MAX_BATCH) in info.value.message


def test_custom_max_batch() -> None:
    with pytest.raises(InvalidInput) as info:
        parse([ev(), ev(event_id="e2"), ev(event_id="e3")], max_batch=2)
    assert info.value.field == "events"
    assert len(parse([ev(), ev(event_id="e2")], max_batch=2).events) == 2


def test_oversize_batch_raises_even_if_every_event_is_garbage() -> None:
    with pytest.raises(InvalidInput):
        parse([1, 2, 3], max_batch=2)


@pytest.mark.parametrize("sent_at", ["yesterday", "2024-05-01T10:00:00", 12345, ["x"], ""])
def test_bad_sent_at_raises_naming_sent_at(sent_at: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_batch(
            {"events": [ev()], "sent_at": sent_at},
            app_id="a",
            received_at=NOW,
            ip=None,
            user_agent=None,
        )
    assert info.value.field == "sent_at"


def test_null_sent_at_means_no_skew() -> None:
    ts = NOW - timedelta(minutes=5)
    result = parse_batch(
        {"events": [ev(ts=iso(ts))], "sent_at": None},
        app_id="a",
        received_at=NOW,
        ip=None,
        user_agent=None,
    )
    assert result.events[0].ts == ts


# --- a valid event ------------------------------------------------------------------------


def test_valid_event_becomes_an_event_contract() -> None:
    raw = ev(
        user_id="u_1",
        adid="38400000-8cf0-11bd-b23e-10b96e40000d",
        platform="android",
        os_version="13",
        device_model="SM-A536E",
        app_version="5.12.0",
        locale="fa-IR",
        timezone="Asia/Tehran",
        session_id="s1",
        props={"product": "گوشی موبایل"},
        revenue=125000.0,
        currency="IRR",
    )
    result = parse([raw], source="sdk")
    assert result.rejected == [] and result.installs == []
    (event,) = result.events
    assert isinstance(event, Event)
    assert event.app_id == "digikala" and event.event_id == "e1" and event.name == "purchase"
    assert event.device_id == "dev_1" and event.user_id == "u_1"
    assert event.received_at == NOW and event.source == "sdk" and event.ip == "5.160.12.34"
    assert event.platform == "android" and event.locale == "fa-IR"
    assert event.timezone == "Asia/Tehran" and event.session_id == "s1"
    assert event.props == {"product": "گوشی موبایل"}
    assert event.revenue == 125000.0 and event.currency == "IRR"
    assert event.ts == NOW - timedelta(minutes=5)


@pytest.mark.parametrize("source", ["sdk", "s2s", "backend"])
def test_source_is_passed_through(source: str) -> None:
    assert parse([ev()], source=source).events[0].source == source


def test_null_device_fields_are_dropped() -> None:
    event = parse([ev(user_id=None, platform=None, locale=None)]).events[0]
    assert event.user_id is None and event.platform is None


def test_missing_props_become_empty() -> None:
    assert parse([ev(props=None)]).events[0].props == {}


def test_user_id_only_event_is_accepted() -> None:
    event = parse([ev(device_id=..., user_id="u_9")]).events[0]
    assert event.device_id is None and event.user_id == "u_9"


def test_timestamp_with_offset_is_normalised_to_utc() -> None:
    tehran = timezone(timedelta(hours=3, minutes=30))
    ts = (NOW - timedelta(hours=1)).astimezone(tehran)
    event = parse([ev(ts=ts.isoformat())]).events[0]
    assert event.ts == NOW - timedelta(hours=1)
    assert event.ts.utcoffset() == timedelta(0)


def test_z_suffix_is_accepted() -> None:
    event = parse([ev(ts="2024-05-01T11:00:00.123Z")]).events[0]
    assert event.ts == datetime(2024, 5, 1, 11, 0, 0, 123000, tzinfo=UTC)


# --- partial acceptance -------------------------------------------------------------------


def test_valid_events_kept_when_neighbours_are_invalid() -> None:
    events = [
        ev(event_id="ok0"),
        "not an object",
        ev(event_id="ok2"),
        ev(event_id="bad3", colour="red"),
        ev(event_id="bad4", ts="2024-05-01T10:00:00"),
        ev(event_id="ok5", name="$open"),
        ev(event_id="bad6", name=""),
    ]
    result = parse(events)
    assert [e.event_id for e in result.events] == ["ok0", "ok2", "ok5"]
    assert [(r.index, r.field) for r in result.rejected] == [
        (1, None),
        (3, "colour"),
        (4, "ts"),
        (6, "name"),
    ]
    assert all(r.reason for r in result.rejected)


@pytest.mark.parametrize("raw", [None, 1, "x", [], [ev()], True])
def test_non_object_event_rejected_without_field(raw: Any) -> None:
    assert only_rejection(parse([raw]))[:2] == (0, None)


def test_unknown_field_rejected_naming_it() -> None:
    index, field, reason = only_rejection(parse([ev(color="red")]))
    assert (index, field) == (0, "color")
    assert "props" in reason


def test_several_unknown_fields_name_the_first_alphabetically() -> None:
    assert only_rejection(parse([ev(zeta=1, alpha=2)]))[1] == "alpha"


@pytest.mark.parametrize("name", ["app_id", "received_at", "source", "ip", "schema_version"])
def test_server_owned_fields_are_unknown_to_clients(name: str) -> None:
    assert only_rejection(parse([ev(**{name: "x"})]))[1] == name


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"event_id": ...}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "a\x00b"}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": 5}, "event_id"),
        ({"name": ...}, "name"),
        ({"name": ""}, "name"),
        ({"name": "n" * 129}, "name"),
        ({"platform": "symbian"}, "platform"),
        ({"currency": "rial"}, "currency"),
        ({"revenue": "a lot"}, "revenue"),
        ({"session_id": ""}, "session_id"),
        ({"adid": "a" * 129}, "adid"),
        ({"os_version": "v" * 257}, "os_version"),
        ({"props": ["a"]}, "props"),
        ({"props": "x"}, "props"),
    ],
)
def test_invalid_field_values_name_the_field(override: dict[str, Any], field: str) -> None:
    index, got, reason = only_rejection(parse([ev(**override)]))
    assert (index, got) == (0, field)
    assert reason


def test_props_limits_reject_with_props_field() -> None:
    result = parse([ev(props={"a": [[[1]]]})])
    field = only_rejection(result)[1]
    assert field is not None and field.startswith("props")


def test_event_without_identity_names_device_id() -> None:
    assert only_rejection(parse([ev(device_id=...)]))[1] == "device_id"


def test_event_without_identity_is_rejected() -> None:
    index, _, reason = only_rejection(parse([ev(device_id=...)]))
    assert index == 0 and "device_id" in reason


# --- time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts", [..., None, 1714560000, "", "yesterday", "2024-13-01T00:00:00Z", ["2024-05-01T00:00:00Z"]]
)
def test_bad_ts_rejected_naming_ts(ts: Any) -> None:
    assert only_rejection(parse([ev(ts=ts)]))[:2] == (0, "ts")


@pytest.mark.parametrize("ts", ["2024-05-01T11:00:00", "2024-05-01T11:00:00.5", "2024-05-01"])
def test_naive_timestamp_rejected(ts: str) -> None:
    _, field, reason = only_rejection(parse([ev(ts=ts)]))
    assert field == "ts"
    assert "zone" in reason


def test_naive_sent_at_raises() -> None:
    with pytest.raises(InvalidInput) as info:
        parse([ev()], sent_at="2024-05-01T11:00:00")
    assert info.value.field == "sent_at"


def test_clock_skew_is_added_to_every_event() -> None:
    # Device clock two hours behind: it says it sent at 10:00 while we received at 12:00.
    sent_at = NOW - timedelta(hours=2)
    events = [
        ev(event_id="a", ts=iso(sent_at - timedelta(minutes=10))),
        ev(event_id="b", ts=iso(sent_at - timedelta(days=1))),
    ]
    result = parse(events, sent_at=iso(sent_at))
    assert [e.ts for e in result.events] == [NOW - timedelta(minutes=10), NOW - timedelta(days=1)]


def test_clock_skew_ahead_is_subtracted() -> None:
    sent_at = NOW + timedelta(hours=3)  # device clock 3 hours ahead
    result = parse([ev(ts=iso(sent_at - timedelta(seconds=30)))], sent_at=iso(sent_at))
    assert result.events[0].ts == NOW - timedelta(seconds=30)


def test_skew_correction_rescues_a_seemingly_future_event() -> None:
    ahead = NOW + timedelta(days=2)
    assert only_rejection(parse([ev(ts=iso(ahead))]))[1] == "ts"
    assert parse([ev(ts=iso(ahead))], sent_at=iso(ahead)).events[0].ts == NOW


def test_skew_correction_rescues_a_seemingly_old_event() -> None:
    behind = NOW - timedelta(days=30)
    assert only_rejection(parse([ev(ts=iso(behind))]))[1] == "ts"
    assert parse([ev(ts=iso(behind))], sent_at=iso(behind)).events[0].ts == NOW


def test_clock_skew_function() -> None:
    assert clock_skew(None, NOW) == timedelta(0)
    assert clock_skew(NOW - timedelta(seconds=5), NOW) == timedelta(seconds=5)
    assert clock_skew(NOW + timedelta(seconds=5), NOW) == timedelta(seconds=-5)


def test_future_event_rejected() -> None:
    _, field, reason = only_rejection(parse([ev(ts=iso(NOW + MAX_FUTURE + timedelta(seconds=1)))]))
    assert field == "ts" and "future" in reason


def test_future_boundary_is_inclusive() -> None:
    assert parse([ev(ts=iso(NOW + MAX_FUTURE))]).events[0].ts == NOW + MAX_FUTURE


def test_event_older_than_seven_days_rejected() -> None:
    _, field, reason = only_rejection(
        parse([ev(ts=iso(NOW - MAX_EVENT_AGE - timedelta(microseconds=1)))])
    )
    assert field == "ts"
    assert "7 days" in reason


def test_event_exactly_seven_days_old_accepted() -> None:
    assert MAX_EVENT_AGE == timedelta(days=7)
    assert len(parse([ev(ts=iso(NOW - timedelta(days=7)))]).events) == 1


def test_max_age_none_accepts_history() -> None:
    old = NOW - timedelta(days=900)
    assert parse([ev(ts=iso(old))], max_age=None).events[0].ts == old


def test_custom_max_age() -> None:
    result = parse([ev(ts=iso(NOW - timedelta(days=2)))], max_age=timedelta(days=1))
    _, field, reason = only_rejection(result)
    assert field == "ts" and "1 days" in reason


def test_parse_time() -> None:
    assert parse_time("2024-05-01T12:00:00Z", "x") == NOW
    assert parse_time("2024-05-01T15:30:00+03:30", "x") == NOW
    with pytest.raises(InvalidInput) as info:
        parse_time("2024-05-01T12:00:00", "where")
    assert info.value.field == "where"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_out_of_range_is_invalid_input(value: str) -> None:
    with pytest.raises(InvalidInput):
        parse_time(value, "ts")


def test_out_of_range_event_ts_is_a_rejection() -> None:
    result = parse([ev(event_id="ok"), ev(event_id="bad", ts="0001-01-01T00:00:00+01:00")])
    assert [e.event_id for e in result.events] == ["ok"]
    assert only_rejection(result)[:2] == (1, "ts")


def test_skew_overflow_is_a_rejection() -> None:
    result = parse([ev(ts="9999-01-01T00:00:00Z")], sent_at="0001-01-02T00:00:00Z")
    assert only_rejection(result)[1] == "ts"


# --- installs ---------------------------------------------------------------------------


def test_install_produces_install_reported_with_referrer() -> None:
    referrer = "click_id=c_01HZX&hodhod_tracker=tok"
    raw = ev(
        event_id="i1",
        name="$install",
        user_id="u1",
        platform="android",
        adid="38400000-8cf0-11bd-b23e-10b96e40000d",
        os_version="13",
        device_model="SM-A536E",
        app_version="5.12.0",
        locale="fa-IR",
        props={"referrer": referrer, "install_begin_ts": "2024-05-01T11:50:00Z"},
    )
    result = parse([raw])
    assert result.rejected == []
    (event,) = result.events
    (install,) = result.installs
    assert isinstance(install, InstallReported)
    assert install.referrer == referrer
    assert install.event_id == "i1" == event.event_id
    assert install.app_id == "digikala" and install.device_id == "dev_1"
    assert install.user_id == "u1" and install.platform == "android"
    assert install.ts == event.ts and install.received_at == NOW
    assert install.ip == "5.160.12.34" and install.user_agent == "Dalvik/2.1.0"
    assert install.install_begin_ts == datetime(2024, 5, 1, 11, 50, tzinfo=UTC)
    assert install.adid == event.adid and install.locale == "fa-IR"


def test_install_without_referrer() -> None:
    install = parse([ev(name="$install")]).installs[0]
    assert install.referrer is None and install.install_begin_ts is None


def test_install_user_agent_is_truncated() -> None:
    install = parse([ev(name="$install")], user_agent="U" * 5000).installs[0]
    assert install.user_agent == "U" * 2048


@pytest.mark.parametrize("agent", [None, ""])
def test_install_without_user_agent(agent: str | None) -> None:
    assert parse([ev(name="$install")], user_agent=agent).installs[0].user_agent is None


@pytest.mark.parametrize("referrer", [123, ["click_id=x"], {"click_id": "x"}, True, 1.5])
def test_non_string_referrer_rejected(referrer: Any) -> None:
    result = parse(
        [ev(event_id="ok"), ev(event_id="i", name="$install", props={"referrer": referrer})]
    )
    assert [e.event_id for e in result.events] == ["ok"]
    assert result.installs == []
    assert only_rejection(result)[:2] == (1, "props.referrer")


def test_install_without_device_id_rejected_and_event_dropped() -> None:
    result = parse([ev(name="$install", device_id=..., user_id="u1")])
    assert result.events == [] and result.installs == []
    assert only_rejection(result)[:2] == (0, "device_id")


@pytest.mark.parametrize("begin", ["soon", "2024-05-01T11:50:00", 1714560000])
def test_bad_install_begin_ts_rejected(begin: Any) -> None:
    result = parse([ev(name="$install", props={"install_begin_ts": begin})])
    assert result.events == [] and result.installs == []
    assert only_rejection(result)[1] == "props.install_begin_ts"


def test_only_install_events_produce_installs() -> None:
    result = parse(
        [
            ev(event_id="a", name="install"),
            ev(event_id="b", name="$open"),
            ev(event_id="c", name="$install"),
        ]
    )
    assert [i.event_id for i in result.installs] == ["c"]
    assert len(result.events) == 3


def test_persian_props_and_names_unchanged() -> None:
    event = parse([ev(name="خرید", props={"دسته": "کالای دیجیتال"})]).events[0]
    assert event.name == "خرید" and event.props == {"دسته": "کالای دیجیتال"}


# --- properties -------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "event_id",
        "name",
        "ts",
        "props",
        "revenue",
        "currency",
        "device_id",
        "user_id",
        "adid",
        "platform",
        "os_version",
        "device_model",
        "app_version",
        "locale",
        "timezone",
        "session_id",
        "referrer",
        "junk",
    ]
)
TS = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=3, minutes=30))]),
)
TS_TEXT = TS.map(lambda d: d.isoformat()) | st.text(max_size=25) | st.just(iso(NOW))
NAMES = st.sampled_from(["$install", "$open", "$purchase", "$attributes", "x", ""])
FIELD_VALUE = JSON | TS_TEXT | NAMES
EVENT = st.dictionaries(FIELD_NAMES, FIELD_VALUE, max_size=8) | JSON
PROPS_INSTALL = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=5),
        "name": NAMES,
        "device_id": st.text(max_size=5),
        "ts": TS_TEXT,
        "props": st.dictionaries(
            st.sampled_from(["referrer", "install_begin_ts", "x"]), FIELD_VALUE, max_size=3
        ),
    }
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    events=st.lists(EVENT | PROPS_INSTALL, max_size=8),
    sent_at=st.none() | TS_TEXT,
    max_age=st.none() | st.just(MAX_EVENT_AGE),
)
def test_junk_events_never_raise_and_every_event_is_accounted_for(
    events: list[Any], sent_at: Any, max_age: timedelta | None
) -> None:
    try:
        result = parse_batch(
            {"events": events, "sent_at": sent_at},
            app_id="a",
            received_at=NOW,
            ip=None,
            user_agent="ua",
            max_age=max_age,
        )
    except InvalidInput as exc:
        assert exc.field == "sent_at"  # the only envelope problem this input can have
        return
    assert len(result.events) + len(result.rejected) + result.duplicates == len(events)
    accepted = {e.event_id for e in result.events}
    assert {i.event_id for i in result.installs} <= accepted
    assert len(result.installs) == sum(e.name == "$install" for e in result.events)
    indexes = [r.index for r in result.rejected]
    assert indexes == sorted(set(indexes))
    assert all(0 <= i < len(events) for i in indexes)


@settings(max_examples=100, deadline=None)
@given(body=JSON)
def test_junk_bodies_raise_only_invalid_input(body: Any) -> None:
    try:
        parse_batch(body, app_id="a", received_at=NOW, ip=None, user_agent=None)
    except InvalidInput:
        pass


def test_repeats_of_an_event_id_in_one_batch_are_dropped() -> None:
    from datetime import UTC, datetime

    from services.ingest.logic import parse_batch

    now = datetime.now(UTC)
    one = {"event_id": "e-1", "name": "$open", "device_id": "d", "ts": now.isoformat()}
    other = {**one, "event_id": "e-2"}
    result = parse_batch(
        {"events": [one, other, one, dict(one)]},
        app_id="app",
        received_at=now,
        ip=None,
        user_agent=None,
    )
    assert [e.event_id for e in result.events] == ["e-1", "e-2"]
    assert result.duplicates == 2
    assert result.rejected == []


def test_install_carries_the_sdk_device_checks() -> None:
    plain = parse([ev(name="$install")]).installs[0]
    assert (plain.is_emulator, plain.is_rooted, plain.signature) == (False, False, None)
    flagged = parse([ev(name="$install", props={"is_emulator": True, "is_rooted": True})])
    assert (flagged.installs[0].is_emulator, flagged.installs[0].is_rooted) == (True, True)


@pytest.mark.parametrize("flag", ["is_emulator", "is_rooted"])
@pytest.mark.parametrize("value", ["true", 1, None, [True]])
def test_non_boolean_device_check_rejected(flag: str, value: Any) -> None:
    result = parse([ev(event_id="ok"), ev(event_id="i", name="$install", props={flag: value})])
    assert [e.event_id for e in result.events] == ["ok"] and result.installs == []
    assert only_rejection(result)[:2] == (1, f"props.{flag}")


# --- encoding ---------------------------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("example", EXAMPLES)
def test_encode_event_is_the_contracts_encoding_of_the_examples(example: dict[str, Any]) -> None:
    event = Event.model_validate(example)
    assert encode_event(event) == encode(event)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    props=st.dictionaries(st.text(min_size=1, max_size=8), _JSON, max_size=4),
    revenue=st.none() | st.integers(-(10**6), 10**6) | st.floats(-1e9, 1e9),
    optional=st.fixed_dictionaries(
        {},
        optional={
            "user_id": st.sampled_from(["u_1", "کاربر"]),
            "platform": st.sampled_from(["android", "ios"]),
            "locale": st.text(max_size=5).filter(lambda t: "\x00" not in t),
            "currency": st.just("IRR"),
            "session_id": st.just("s1"),
        },
    ),
)
def test_encode_event_is_the_contracts_encoding(
    props: dict[str, Any], revenue: Any, optional: dict[str, Any]
) -> None:
    result = parse([ev(props=props, revenue=revenue, **optional)])
    for event, value in zip(result.events, result.encoded, strict=True):
        assert value == encode(event) == encode_event(event)


def test_null_optional_fields_are_as_if_absent() -> None:
    """A JSON null for an optional field (props included) is its default."""
    nulls = {k: None for k in ("user_id", "adid", "platform", "revenue", "currency", "props")}
    with_nulls, without = parse([ev(**nulls)]), parse([ev()])
    assert with_nulls.events == without.events
    assert with_nulls.events[0].props == {}


@pytest.mark.parametrize("field", ["event_id", "name"])
def test_null_id_or_name_is_rejected_as_null_not_as_missing(field: str) -> None:
    null_reason = only_rejection(parse([ev(**{field: None})]))
    assert null_reason[:2] == (0, field)
    assert only_rejection(parse([ev(**{field: ...})])) == null_reason
