"""What the segment benchmarks share: a realistic rule mix, a realistic user population
(profiles, daily counters, recent events), and a fresh Postgres database.

The population is deterministic (seeded per user), so every benchmark and every
repetition sees the same users. Its shape, per user, over the 90 days before ``now``:

- engagement: 40 % dormant (0-2 active days), 40 % casual (3-10), 20 % engaged (10-40);
  ``last_seen`` is the last active day (or up to a year back for a user never active in
  the window), ``first_seen`` before the first;
- per active day: 1-4 ``$open``, ``view_item`` on 60 % of days (1-10, each with a
  category), ``add_to_cart`` on 15 %, ``$purchase`` on 5 % (revenue 100,000-5,000,000);
- recent events (when asked for): one per counted event, with props;
- eight attributes (city weighted toward Tehran, tier, age, gender, signup date,
  language, plan, loyalty points); 75 % Android (FCM) / 25 % iOS (APNs), push permission
  granted for 70 % / 45 %, one token in ten invalid; a phone for 60 %, an email for 25 %,
  a few opt-outs; a location near a city for half the users (within the last 3 days);
  an attribution for 60 %.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from bisect import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, literal
from sqlalchemy.ext.asyncio import AsyncSession

from libs.rules.language import Node
from libs.rules.profile import DailyCount, ProfileState, ProfileView, RecentEvent
from libs.rules.semantics import Context
from libs.rules.sql import matching_users
from libs.runtime import localinfra, postgres
from libs.runtime.tables import Membership, Profile
from services.segmenter.logic import dependency_order

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
WINDOW_DAYS = 90
CITIES = [
    ("Tehran", 35.6892, 51.3890, 35),
    ("Mashhad", 36.2605, 59.6168, 12),
    ("Isfahan", 32.6546, 51.6680, 10),
    ("Shiraz", 29.5918, 52.5837, 8),
    ("Tabriz", 38.0800, 46.2919, 7),
    ("Karaj", 35.8400, 50.9391, 6),
    ("Ahvaz", 31.3183, 48.6706, 5),
    ("Qom", 34.6416, 50.8746, 5),
    ("Kermanshah", 34.3142, 47.0650, 4),
    ("Rasht", 37.2808, 49.5832, 4),
    ("Kish", 26.5325, 53.9800, 4),
]
CITY_NAMES = [c[0] for c in CITIES]
CITY_CUMULATIVE = list(accumulate(c[3] for c in CITIES))
CATEGORIES = ["electronics", "fashion", "grocery", "books", "home", "beauty"]
CHANNELS = [("instagram", "meta"), ("google_ads", "google"), ("telegram", "tg_ads")]

# The app's segments as admin stores them (id → rule): every condition kind, nested
# groups, and one segment referencing another. "s_buyers_tehran" is the bulk benchmark's
# 5-condition rule.
RULES: dict[str, Any] = {
    "s_tehran": {"attribute": "city", "op": "eq", "value": "Tehran"},
    "s_active_7d": {"last_seen": {"op": "after", "ago": {"days": 7}}},
    "s_frequent": {"event": "$open", "count": {"op": "gte", "value": 10}, "within": {"days": 30}},
    "s_big_spenders": {"revenue": {"op": "gt", "value": 3_000_000}, "within": {"days": 30}},
    "s_push": {"reachable": "push"},
    "s_near_tehran": {
        "geofence": {"lat": 35.6892, "lon": 51.389, "radius_m": 20_000},
        "inside": True,
        "max_age": {"hours": 24},
    },
    "s_cart_abandoners": {
        "all": [
            {"event": "add_to_cart", "within": {"days": 7}},
            {"not": {"event": "$purchase", "within": {"days": 7}}},
            {
                "any": [
                    {"reachable": "push"},
                    {"reachable": "sms"},
                    {"reachable": "email"},
                ]
            },
            {"not": {"attribute": "tier", "op": "eq", "value": "gold"}},
        ]
    },
    "s_active_adults": {
        "all": [
            {"segment": "s_active_7d"},
            {"attribute": "age", "op": "gte", "value": 25},
            {"attribute": "city", "op": "in", "value": ["Tehran", "Karaj", "Isfahan"]},
        ]
    },
    "s_electronics_browsers": {
        "event": "view_item",
        "where": [{"prop": "category", "op": "eq", "value": "electronics"}],
        "count": {"op": "gte", "value": 3},
        "within": {"days": 7},
    },
    "s_champions": {"rfm": {"r": [4, 5], "f": [4, 5], "m": [3, 5]}},
    "s_old_signups": {
        "all": [
            {"attribute": "signup_at", "op": "before", "ago": {"days": 180}},
            {"install": {"channel": "instagram"}},
        ]
    },
    "s_buyers_tehran": {
        "all": [
            {"attribute": "city", "op": "eq", "value": "Tehran"},
            {"event": "$open", "count": {"op": "gte", "value": 3}, "within": {"days": 30}},
            {"revenue": {"op": "gt", "value": 0}, "within": {"days": 14}},
            {"last_seen": {"op": "after", "ago": {"days": 7}}},
            {"reachable": "push"},
        ]
    },
}


@dataclass(frozen=True, slots=True)
class User:
    """One generated user: the profile, its daily counters and (when asked) recent events."""

    user_key: str
    state: ProfileState
    counters: tuple[DailyCount, ...]
    recent: tuple[RecentEvent, ...]

    def view(self, segments: frozenset[str] = frozenset()) -> ProfileView:
        return ProfileView(self.state, self.counters, self.recent, segments)


def user_key(i: int) -> str:
    return f"u{i:08d}"


def make_user(i: int, now: datetime, *, recent: bool) -> User:
    """User number ``i`` (the same for the same ``i`` and ``now``)."""
    rnd = random.Random(i * 7919 + 17)
    today = now.astimezone(UTC).date()
    roll = rnd.random()
    if roll < 0.4:
        days = _int(rnd, 0, 2)
    elif roll < 0.8:
        days = _int(rnd, 3, 10)
    else:
        days = _int(rnd, 10, 40)
    # Recent activity is skewed toward the latest weeks.
    offsets = sorted({min(WINDOW_DAYS - 1, int(rnd.expovariate(1 / 20))) for _ in range(days)})
    counters: list[DailyCount] = []
    events: list[RecentEvent] = []
    sessions = purchases = total = 0
    revenue = 0.0
    for back in offsets:
        day = today - timedelta(days=back)
        opens = _int(rnd, 1, 4)
        counters.append(DailyCount("$open", day, opens))
        sessions += opens
        total += opens
        if recent:
            events.extend(RecentEvent("$open", _at(day, rnd, now)) for _ in range(opens))
        if rnd.random() < 0.6:
            views = _int(rnd, 1, 10)
            counters.append(DailyCount("view_item", day, views))
            total += views
            if recent:
                for _ in range(views):
                    events.append(
                        RecentEvent(
                            "view_item",
                            _at(day, rnd, now),
                            {
                                "category": rnd.choice(CATEGORIES),
                                "sku": f"sku-{_int(rnd, 1, 5000)}",
                            },
                        )
                    )
        if rnd.random() < 0.15:
            counters.append(DailyCount("add_to_cart", day, 1))
            total += 1
            if recent:
                events.append(RecentEvent("add_to_cart", _at(day, rnd, now), {"qty": 1}))
        if rnd.random() < 0.05:
            amount = float(_int(rnd, 100, 5_000) * 1_000)
            counters.append(DailyCount("$purchase", day, 1, amount))
            purchases += 1
            revenue += amount
            total += 1
            if recent:
                events.append(RecentEvent("$purchase", _at(day, rnd, now), {"amount": amount}))
    if offsets:
        last_seen = _at(today - timedelta(days=offsets[0]), rnd, now)
        first_seen = _at(today - timedelta(days=offsets[-1] + _int(rnd, 0, 300)), rnd, now)
    else:
        last_seen = now - timedelta(days=WINDOW_DAYS + _int(rnd, 0, 275), hours=_int(rnd, 0, 23))
        first_seen = last_seen - timedelta(days=_int(rnd, 0, 300))
    city = CITY_NAMES[bisect(CITY_CUMULATIVE, rnd.random() * CITY_CUMULATIVE[-1])]
    android = rnd.random() < 0.75
    granted = rnd.random() < (0.7 if android else 0.45)
    token = {
        "device_id": f"dev{i}",
        "token": f"tok-{i}-{_int(rnd, 0, 1 << 30)}",
        "provider": "fcm" if android else "apns",
        "valid": rnd.random() >= 0.1,
        "updated_at": first_seen.isoformat(),
    }
    lat = lon = located = None
    if rnd.random() < 0.5:
        _, base_lat, base_lon, _ = CITIES[CITY_NAMES.index(city)]
        lat = round(base_lat + rnd.uniform(-0.3, 0.3), 7)
        lon = round(base_lon + rnd.uniform(-0.3, 0.3), 7)
        located = now - timedelta(minutes=_int(rnd, 0, 3 * 1440))
    attribution = None
    if rnd.random() < 0.6:
        channel, network = rnd.choice(CHANNELS)
        attribution = {
            "tracker_token": f"trk{_int(rnd, 1, 40)}",
            "network": network,
            "campaign": f"cmp{_int(rnd, 1, 12)}",
            "channel": channel,
            "method": "click",
        }
    opt = rnd.random()
    tier = rnd.random()
    state = ProfileState(
        user_id=f"user{i}" if rnd.random() < 0.55 else None,
        attributes={
            "city": city,
            "tier": "free" if tier < 0.7 else ("silver" if tier < 0.9 else "gold"),
            "age": _int(rnd, 16, 70),
            "gender": rnd.choice(["f", "m", "x"]),
            "signup_at": (first_seen + timedelta(minutes=_int(rnd, 0, 600))).isoformat(),
            "language": "fa" if rnd.random() < 0.9 else "en",
            "plan": rnd.choice(["basic", "plus", "pro"]),
            "loyalty_points": _int(rnd, 0, 20_000),
        },
        first_seen=first_seen,
        last_seen=last_seen,
        platform="android" if android else "ios",
        app_version=rnd.choice(["5.12.0", "5.11.2", "5.10.0"]),
        locale="fa-IR",
        timezone="Asia/Tehran",
        attribution=attribution,
        sessions=sessions,
        purchases=purchases,
        revenue=revenue,
        events=total,
        push_permission=granted if rnd.random() < 0.95 else None,
        push_tokens=[token],
        phone=f"+98912{i % 10_000_000:07d}" if rnd.random() < 0.6 else None,
        email=f"user{i}@example.ir" if rnd.random() < 0.25 else None,
        opt_outs=["sms"] if opt < 0.05 else (["push"] if opt < 0.08 else []),
        last_lat=lat,
        last_lon=lon,
        last_location_at=located,
    )
    return User(user_key(i), state, tuple(counters), tuple(events))


def _int(rnd: random.Random, low: int, high: int) -> int:
    """``rnd.randint(low, high)``, five times cheaper (a million users are generated)."""
    return low + int(rnd.random() * (high - low + 1))


def _at(day: date, rnd: random.Random, now: datetime) -> datetime:
    """A time on ``day`` (UTC), never after ``now``."""
    when = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=_int(rnd, 0, 86_399)
    )
    return min(when, now)


def population(start: int, count: int, now: datetime, *, recent: bool) -> Iterator[User]:
    for i in range(start, start + count):
        yield make_user(i, now, recent=recent)


# --- Postgres -----------------------------------------------------------------------------

PROFILE_COLUMNS = (
    "app_id",
    "user_key",
    "user_id",
    "attributes",
    "first_seen",
    "last_seen",
    "platform",
    "app_version",
    "locale",
    "timezone",
    "attribution",
    "sessions",
    "purchases",
    "revenue",
    "events",
    "push_permission",
    "push_tokens",
    "phone",
    "email",
    "web_push",
    "opt_outs",
    "last_lat",
    "last_lon",
    "last_location_at",
    "updated_at",
)
COUNTER_COLUMNS = ("app_id", "user_key", "name", "day", "count", "revenue")


def copy_rows(
    app_id: str, start: int, count: int, now: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """COPY rows (profiles, daily counters) of users ``start`` … ``start + count - 1``."""
    profiles: list[tuple[Any, ...]] = []
    counters: list[tuple[Any, ...]] = []
    dumps = json.dumps
    for user in population(start, count, now, recent=False):
        s = user.state
        profiles.append(
            (
                app_id,
                user.user_key,
                s.user_id,
                dumps(s.attributes),
                s.first_seen,
                s.last_seen,
                s.platform,
                s.app_version,
                s.locale,
                s.timezone,
                dumps(s.attribution) if s.attribution is not None else None,
                s.sessions,
                s.purchases,
                s.revenue,
                s.events,
                s.push_permission,
                dumps(s.push_tokens),
                s.phone,
                s.email,
                "[]",
                dumps(s.opt_outs),
                s.last_lat,
                s.last_lon,
                s.last_location_at,
                now,
            )
        )
        counters.extend(
            (app_id, user.user_key, c.name, c.day, c.count, c.revenue) for c in user.counters
        )
    return profiles, counters


async def load_users(
    url: str, app_id: str, users: int, now: datetime, *, chunk: int = 25_000
) -> dict[str, float]:
    """COPY users 0 … ``users - 1`` (profiles and daily counters; no recent events) in
    chunks — the next chunk is generated in a thread while the current one is copied —
    then VACUUM ANALYZE. Returns timings, row counts and table sizes."""
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    counter_rows = 0
    try:
        starts = list(range(0, users, chunk))
        pending = asyncio.create_task(
            asyncio.to_thread(copy_rows, app_id, 0, min(chunk, users), now)
        )
        for i, start in enumerate(starts):
            profiles, counters = await pending
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                pending = asyncio.create_task(
                    asyncio.to_thread(copy_rows, app_id, nxt, min(chunk, users - nxt), now)
                )
            await conn.copy_records_to_table("profiles", records=profiles, columns=PROFILE_COLUMNS)
            await conn.copy_records_to_table(
                "segmenter_daily_counters", records=counters, columns=COUNTER_COLUMNS
            )
            counter_rows += len(counters)
            if i % 8 == 7:
                print(f"  loaded {start + len(profiles)} users", flush=True)
        copied = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE profiles")
        await conn.execute("VACUUM ANALYZE segmenter_daily_counters")
        sizes = await conn.fetchrow(
            "SELECT pg_total_relation_size('profiles') AS p,"
            " pg_total_relation_size('segmenter_daily_counters') AS c"
        )
    finally:
        await conn.close()
    return {
        "copy_seconds": round(copied, 1),
        "vacuum_analyze_seconds": round(time.perf_counter() - started - copied, 1),
        "daily_counter_rows": counter_rows,
        "profiles_mb": round(sizes["p"] / 2**20),
        "daily_counters_mb": round(sizes["c"] / 2**20),
    }


async def seed_memberships(
    session: AsyncSession,
    *,
    app_id: str,
    segments: Mapping[str, Node],
    at: datetime,
    context: Context,
) -> int:
    """Store every segment's members as of ``at`` (the compiled rules, in dependency
    order, so references see the members just stored) — the state the scheduler and
    the consumer would have left. Returns how many memberships were stored."""
    stored = 0
    for segment_id in dependency_order(segments):
        answer = matching_users(
            segments[segment_id], app_id=app_id, now=at, context=context
        ).with_only_columns(literal(app_id), literal(segment_id), Profile.user_key, literal(at))
        result = await session.execute(
            insert(Membership).from_select(
                ["app_id", "segment_id", "user_key", "entered_at"], answer
            )
        )
        stored += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return stored


@dataclass
class Database:
    """A fresh, migrated database on the machine's Postgres (127.0.0.1:5432, trust auth)
    if it answers, else on an embedded server under ``tmp`` — as tests/conftest.py picks.
    ``drop`` removes it (and stops the embedded server)."""

    url: str
    server: str
    embedded: localinfra.EmbeddedPostgres | None

    @classmethod
    async def create(cls, tmp: Path, *, name: str | None = None) -> Database:
        """A fresh database, or, with ``name``, that database (created and migrated if
        missing, its data kept: for iterating on a filled database)."""
        base = DEFAULT_DATABASE
        embedded = None
        server = "machine Postgres 127.0.0.1:5432"
        if not await postgres.accepts_connections(base):
            embedded = await asyncio.to_thread(localinfra.EmbeddedPostgres, tmp / "pg")
            base = embedded.url("postgres")
            server = "embedded Postgres"
        head, _, tail = base.partition("?")
        name = name or f"hodhod_bench_{secrets.token_hex(4)}"
        url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")
        await postgres.ensure_database(url)
        await postgres.migrate_async(url)
        return cls(url, server, embedded)

    async def drop(self) -> None:
        await postgres.drop_database(self.url)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
