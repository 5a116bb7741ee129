"""One definition, two evaluators: for random rules and random users (profiles, daily
counters, recent events, memberships) in the real Postgres, the compiled SQL selects
exactly the users ``evaluation.evaluate`` accepts — at window boundaries, for missing and
null values, for every condition kind."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.rules import evaluation, profile, semantics, sql
from libs.rules.language import RuleError, parse_rule
from libs.runtime import postgres
from libs.runtime.settings import PlatformSettings
from libs.runtime.tables import DailyCounter, Membership, Profile, RecentEventRow

pytestmark = pytest.mark.integration

# More in a soak run: HODHOD_SEGMENT_EXAMPLES=2500 (passes; ~75 s).
EXAMPLES = int(os.environ.get("HODHOD_SEGMENT_EXAMPLES", "60"))
BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# `now` on and around a UTC midnight and mid-day: day windows change at midnight.
NOWS = st.sampled_from(
    [BASE, datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 1, 0, 0, 0, 1, tzinfo=UTC)]
)
AGES = [timedelta(0), timedelta(minutes=1), timedelta(hours=1), timedelta(hours=3)] + [
    timedelta(days=d) for d in (1, 2, 7, 14, 30, 31, 90, 400)
]
EPS = [timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)]
DURATIONS = st.sampled_from(
    [
        {"minutes": 1},
        {"hours": 1},
        {"hours": 3},
        {"days": 0},
        {"days": 1},
        {"days": 2},
        {"days": 7},
        {"days": 30},
        {"days": 90},
        {"hours": 24},
        {"days": 36600},
    ]
)
KEYS = ["a", "b"]
STRINGS = ["x", "", "Tehran", "تهران", "Teh", "2024-05-01", "2024-04-30T12:00:00Z"]
DATES = [
    "2024-05-01T12:00:00Z",
    "2024-05-01T11:59:59.999999Z",
    "2024-05-01T12:00:00",
    "2024-05-01 15:30+03:30",
    "2024-04-01",
    "2024-02-30",
    "2024-05-01T24:00",
    "not a date",
    "2024-05-01T12:00:00.5+00:00",
]
SCALARS = st.one_of(
    st.sampled_from([0, 1, 2, -1, 10**20, 0.5, 1.0, 2.5, 0.1, True, False]),
    st.sampled_from(STRINGS + DATES),
)
JSON_VALUES = st.one_of(
    st.none(),
    SCALARS,
    st.sampled_from([[1, True], [1.0, True], [True], {"a": 1}, {"a": 1.0}, {"a": True}, []]),
)
PROPS = st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=2)


@st.composite
def instants(draw: st.DrawFn, now: datetime) -> datetime:
    return now - draw(st.sampled_from(AGES)) + draw(st.sampled_from(EPS))


# --- rules --------------------------------------------------------------------------------


@st.composite
def json_condition(draw: st.DrawFn, key: str) -> dict[str, Any]:
    op = draw(
        st.sampled_from(
            [
                "eq",
                "ne",
                "gt",
                "gte",
                "lt",
                "lte",
                "in",
                "not_in",
                "contains",
                "starts_with",
                "exists",
                "not_exists",
                "before",
                "after",
            ]
        )
    )
    raw: dict[str, Any] = {key: draw(st.sampled_from(KEYS)), "op": op}
    if op in {"before", "after"}:
        raw["ago"] = draw(DURATIONS)
    elif op in {"in", "not_in"}:
        raw["value"] = draw(st.lists(JSON_VALUES, min_size=1, max_size=3))
    elif op in {"contains", "starts_with"}:
        raw["value"] = draw(st.sampled_from(STRINGS))
    elif op in {"gt", "gte", "lt", "lte"}:
        raw["value"] = draw(st.sampled_from([0, 1, 2, 0.5, 1.0, 0.1, 10**20, -1, *DATES, "x"]))
    elif op not in {"exists", "not_exists"}:
        raw["value"] = draw(JSON_VALUES)
    return raw


def window(draw: st.DrawFn, *, exact: bool) -> dict[str, Any]:
    if exact:
        return {"within": draw(st.sampled_from([{"minutes": 1}, {"hours": 3}, {"days": 30}]))}
    kind = draw(st.sampled_from(["within", "between", "none"]))
    if kind == "within":
        return {"within": draw(st.sampled_from([{"days": 0}, {"days": 1}, {"days": 7}]))}
    if kind == "between":
        start = date(2024, 5, 1) - timedelta(days=draw(st.integers(0, 10)))
        end = start + timedelta(days=draw(st.integers(0, 5)))
        return {"between": {"from": start.isoformat(), "to": end.isoformat()}}
    return {}


COMPARE = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"])


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "attribute",
                "seen",
                "install",
                "event",
                "revenue",
                "reachable",
                "geofence",
                "segment",
                "rfm",
            ]
        )
    )
    if kind == "attribute":
        return draw(json_condition("attribute"))
    if kind == "seen":
        which = draw(st.sampled_from(["first_seen", "last_seen"]))
        return {
            which: {
                "op": draw(
                    st.sampled_from(
                        [
                            "before",
                            "after",
                        ]
                    )
                ),
                "ago": draw(DURATIONS),
            }
        }
    if kind == "install":
        field = draw(st.sampled_from(["tracker", "network", "campaign", "channel"]))
        return {"install": {field: draw(st.sampled_from(["t1", "t2", "5"]))}}
    if kind == "event":
        raw: dict[str, Any] = {"event": draw(st.sampled_from(["$open", "buy"]))}
        exact = draw(st.booleans())
        if exact and draw(st.booleans()):
            raw["where"] = draw(st.lists(json_condition("prop"), min_size=1, max_size=2))
        if draw(st.booleans()):
            raw["count"] = {"op": draw(COMPARE), "value": draw(st.integers(0, 4))}
        return raw | window(draw, exact=exact)
    if kind == "revenue":
        value = draw(st.sampled_from([0, 10, 12.5, 25]))
        return {"revenue": {"op": draw(COMPARE), "value": value}} | window(draw, exact=False)
    if kind == "reachable":
        return {"reachable": draw(st.sampled_from(["push", "sms", "email", "web_push", "in_app"]))}
    if kind == "geofence":
        return {
            "geofence": {
                "lat": draw(st.sampled_from([35.6892, 35.7, 0.0])),
                "lon": draw(st.sampled_from([51.389, 51.4, 0.0])),
                "radius_m": draw(st.sampled_from([0, 1000, 2000, 50_000])),
            },
            "inside": draw(st.booleans()),
            "max_age": draw(
                st.sampled_from(
                    [
                        {"hours": 1},
                        {"days": 1},
                        {"days": 36600},
                    ]
                )
            ),
        }
    if kind == "segment":
        return {"segment": draw(st.sampled_from(["s1", "s2"]))}
    ranges = {}
    for key in draw(st.lists(st.sampled_from("rfm"), min_size=1, max_size=3, unique=True)):
        low = draw(st.integers(1, 5))
        ranges[key] = [low, draw(st.integers(low, 5))]
    return {"rfm": ranges}


@st.composite
def counter_leaves(draw: st.DrawFn) -> dict[str, Any]:
    """A condition answered from the daily counters (whole-day window, no props)."""
    if draw(st.booleans()):
        raw: dict[str, Any] = {"event": draw(st.sampled_from(["$open", "buy"]))}
        if draw(st.booleans()):
            raw["count"] = {"op": draw(COMPARE), "value": draw(st.integers(0, 4))}
        return raw | window(draw, exact=False)
    value = draw(st.sampled_from([0, 10, 12.5, 25]))
    return {"revenue": {"op": draw(COMPARE), "value": value}} | window(draw, exact=False)


def _groups(c: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return (
        st.lists(c, min_size=1, max_size=3).map(lambda n: {"all": n})
        | st.lists(c, min_size=1, max_size=3).map(lambda n: {"any": n})
        | c.map(lambda n: {"not": n})
    )


RULES = st.recursive(leaves(), _groups, max_leaves=6)
# Mostly daily-counter conditions, nested: the compiler answers those of one group in
# one subquery (windows, names and negations combined).
COUNTER_RULES = st.recursive(
    counter_leaves() | counter_leaves() | counter_leaves() | leaves(), _groups, max_leaves=6
)


# --- users --------------------------------------------------------------------------------

GRID = st.sampled_from([35.6892, 35.69, 35.7, 36.0, 0.0])
LON_GRID = st.sampled_from([51.389, 51.39, 51.4, 52.0, 0.0])


@st.composite
def users(draw: st.DrawFn, now: datetime) -> profile.ProfileView:
    maybe_instant = st.none() | instants(now)
    tokens = st.lists(
        st.fixed_dictionaries({"device_id": st.just("d"), "valid": st.booleans()}), max_size=2
    )
    attribution = st.none() | st.fixed_dictionaries(
        {},
        optional={
            **{
                k: st.sampled_from(["t1", "t2", "5", 5, None])
                for k in ("tracker_token", "network", "campaign", "channel")
            },
            "status": st.sampled_from(["verified", "pending", "rejected", None]),
        },
    )
    state = profile.ProfileState(
        attributes=draw(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=2)),
        first_seen=draw(maybe_instant),
        last_seen=draw(maybe_instant),
        attribution=draw(attribution),
        sessions=draw(st.integers(0, 6)),
        revenue=draw(st.sampled_from([0.0, 5.0, 12.5, 100.0])),
        push_permission=draw(st.sampled_from([None, True, False])),
        push_tokens=draw(tokens),
        phone=draw(st.sampled_from([None, "", "+989121234567"])),
        email=draw(st.sampled_from([None, "", "a@example.com"])),
        web_push=draw(tokens),
        opt_outs=draw(
            st.lists(st.sampled_from(["push", "sms", "email", "web_push", "in_app"]), unique=True)
        ),
    )
    location = draw(
        st.tuples(GRID, LON_GRID, instants(now))
        | st.tuples(st.none() | GRID, st.none() | LON_GRID, maybe_instant)
    )
    state = replace(state, last_lat=location[0], last_lon=location[1])
    state = replace(state, last_location_at=location[2])
    counters = draw(
        st.dictionaries(
            st.tuples(
                st.sampled_from(["$open", "buy"]),
                st.integers(-1, 12).map(lambda k: now.date() - timedelta(days=k)),
            ),
            st.tuples(st.integers(1, 3), st.sampled_from([0.0, 2.5, 10.0])),
            max_size=4,
        )
    )
    recent = draw(
        st.lists(
            st.builds(
                profile.RecentEvent,
                name=st.sampled_from(["$open", "buy"]),
                ts=instants(now),
                props=PROPS,
            ),
            max_size=4,
        )
    )
    return profile.ProfileView(
        state=state,
        counters=tuple(
            profile.DailyCount(name, day, c, r) for (name, day), (c, r) in counters.items()
        ),
        recent=tuple(recent),
        segments=frozenset(draw(st.lists(st.sampled_from(["s1", "s2"]), unique=True))),
    )


@st.composite
def cases(
    draw: st.DrawFn, rules: st.SearchStrategy[Any] = RULES
) -> tuple[Any, datetime, dict[str, profile.ProfileView], bool]:
    raw = draw(rules)
    now = draw(NOWS)
    count = draw(st.integers(1, 6))
    population = {f"u{i}": draw(users(now)) for i in range(count)}
    return raw, now, population, draw(st.booleans())


# --- the property -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(settings: PlatformSettings) -> Iterator[tuple[asyncio.Runner, AsyncEngine]]:
    runner = asyncio.Runner()
    engine = runner.run(_engine(settings.database_url))
    yield runner, engine
    runner.run(engine.dispose())
    runner.close()


async def _engine(url: str) -> AsyncEngine:
    return postgres.create_engine(url, pool_size=2)


async def _agree(
    engine: AsyncEngine,
    raw: Any,
    now: datetime,
    population: dict[str, profile.ProfileView],
    with_rfm: bool,
) -> None:
    app_id = f"segq_{secrets.token_hex(4)}"
    node = parse_rule(raw)
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await _insert(conn, app_id, population, now)
            context = semantics.Context()
            if with_rfm:
                async with postgres.session_factory(engine)(bind=conn) as session:
                    context = semantics.Context(
                        rfm=await sql.rfm_thresholds(session, app_id=app_id, now=now)
                    )
            note(f"context: {context}")
            query = sql.matching_users(node, app_id=app_id, now=now, context=context)
            got = set((await conn.execute(query)).scalars())
        finally:
            await transaction.rollback()
    expected = {
        u for u, view in population.items() if evaluation.evaluate(node, view, now, context)
    }
    assert got == expected


async def _insert(
    conn: Any, app_id: str, population: dict[str, profile.ProfileView], now: datetime
) -> None:
    profiles, counters, recent, members = [], [], [], []
    for user_key, view in population.items():
        s = view.state
        profiles.append(
            {
                "app_id": app_id,
                "user_key": user_key,
                "attributes": s.attributes,
                "first_seen": s.first_seen,
                "last_seen": s.last_seen,
                "attribution": s.attribution,
                "sessions": s.sessions,
                "purchases": 0,
                "revenue": s.revenue,
                "events": 0,
                "push_permission": s.push_permission,
                "push_tokens": s.push_tokens,
                "phone": s.phone,
                "email": s.email,
                "web_push": s.web_push,
                "opt_outs": s.opt_outs,
                "last_lat": s.last_lat,
                "last_lon": s.last_lon,
                "last_location_at": s.last_location_at,
                "updated_at": now,
            }
        )
        counters += [
            {"app_id": app_id, "user_key": user_key, "name": c.name, "day": c.day}
            | {"count": c.count, "revenue": c.revenue}
            for c in view.counters
        ]
        recent += [
            {"app_id": app_id, "event_id": f"{user_key}-{i}", "user_key": user_key}
            | {"name": e.name, "ts": e.ts, "props": e.props}
            for i, e in enumerate(view.recent)
        ]
        members += [
            {"app_id": app_id, "segment_id": s, "user_key": user_key, "entered_at": now}
            for s in view.segments
        ]
    await conn.execute(insert(Profile), profiles)
    for table, rows in (
        (DailyCounter, counters),
        (RecentEventRow, recent),
        (Membership, members),
    ):
        if rows:
            await conn.execute(insert(table), rows)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_sql_and_memory_agree(
    db: tuple[asyncio.Runner, AsyncEngine],
    case: tuple[Any, datetime, dict[str, profile.ProfileView], bool],
) -> None:
    _check(db, case)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(COUNTER_RULES))
def test_sql_and_memory_agree_on_counter_conditions(
    db: tuple[asyncio.Runner, AsyncEngine],
    case: tuple[Any, datetime, dict[str, profile.ProfileView], bool],
) -> None:
    _check(db, case)


def _check(
    db: tuple[asyncio.Runner, AsyncEngine],
    case: tuple[Any, datetime, dict[str, profile.ProfileView], bool],
) -> None:
    runner, engine = db
    raw, now, population, with_rfm = case
    try:
        parse_rule(raw)
    except RuleError:
        reject()
    note(f"rule: {raw}")
    runner.run(_agree(engine, raw, now, population, with_rfm))


DATEISH = st.one_of(
    st.from_regex(semantics.ISO_DATE, fullmatch=True),
    st.text(alphabet="0123456789-:T Z+.", max_size=32),
    st.sampled_from(DATES),
)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _sql_dates(engine: AsyncEngine, values: list[str]) -> list[int | None]:
    # Microseconds since the epoch: the instants may lie outside Python's datetime range
    # once converted to UTC (0001-01-01T00:00+01:00), which asyncpg could not return.
    query = text(
        "SELECT (extract(epoch FROM hodhod_iso_timestamp(v)) * 1000000)::bigint"
        " FROM unnest(CAST(:vs AS text[])) WITH ORDINALITY AS t(v, i) ORDER BY i"
    )
    async with engine.connect() as conn:
        return [row[0] for row in await conn.execute(query, {"vs": values})]


def _micros(value: str) -> int | None:
    when = semantics.as_date(value)
    return None if when is None else (when - EPOCH) // timedelta(microseconds=1)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(DATEISH, min_size=1, max_size=20))
def test_sql_reads_exactly_the_dates_python_reads(
    db: tuple[asyncio.Runner, AsyncEngine], values: list[str]
) -> None:
    runner, engine = db
    assert runner.run(_sql_dates(engine, values)) == [_micros(v) for v in values]
