"""One user's ``ProfileView`` read from Postgres: the profile (``profiles``), its daily
counters, recent events and segment memberships (the segmenter's tables, of which it is
the one writer). Read-only — no lock is taken and nothing is written — so any service
may call it inside its own transaction: the journey service (a condition node answers a
segment rule on one profile), admin (the per-user view). The segmenter's real-time
consumer reads many users at once on its own batched path (``services.segmenter.store``).

Keyword-only, never commits; every read is scoped by ``app_id``.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any, cast

from sqlalchemy import BigInteger, Date, Float, Integer, String, Table, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime

from libs.rules.profile import DailyCount, ProfileState, ProfileView, RecentEvent
from libs.runtime.tables import Profile

_PROFILES = cast(Table, Profile.__table__)

# A user's memberships (kind 0), daily counters (kind 1, when asked for) and recent events
# (kind 2, likewise), in one round trip.
_HISTORY = text(
    "SELECT 0 AS kind, segment_id AS name, CAST(NULL AS date) AS day,"
    " CAST(NULL AS bigint) AS count, CAST(NULL AS float8) AS revenue,"
    " CAST(NULL AS timestamptz) AS ts, CAST(NULL AS jsonb) AS props"
    " FROM segment_memberships WHERE CAST(:segments AS boolean)"
    " AND app_id = :app_id AND user_key = :user_key"
    " UNION ALL SELECT 1, name, day, count, revenue, NULL, NULL"
    " FROM segmenter_daily_counters WHERE CAST(:counters AS boolean)"
    " AND app_id = :app_id AND user_key = :user_key"
    " UNION ALL SELECT 2, name, NULL, NULL, NULL, ts, props"
    " FROM segmenter_recent_events WHERE CAST(:recent AS boolean)"
    " AND app_id = :app_id AND user_key = :user_key"
).columns(
    kind=Integer,
    name=String,
    day=Date,
    count=BigInteger,
    revenue=Float,
    ts=DateTime(timezone=True),
    props=JSONB,
)


def state_of(row: Any) -> ProfileState:
    """A ``profiles`` row (ORM object or Core row) as a ``ProfileState`` (containers
    copied: the state never shares them with the row)."""
    return ProfileState(
        user_id=row.user_id,
        attributes=dict(row.attributes),
        attribute_writes=dict(row.attribute_writes or {}),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        platform=row.platform,
        app_version=row.app_version,
        os_version=row.os_version,
        device_model=row.device_model,
        locale=row.locale,
        timezone=row.timezone,
        attribution=row.attribution,
        sessions=row.sessions,
        purchases=row.purchases,
        revenue=row.revenue,
        events=row.events,
        push_permission=row.push_permission,
        push_tokens=list(row.push_tokens),
        phone=row.phone,
        email=row.email,
        web_push=list(row.web_push),
        opt_outs=list(row.opt_outs),
        last_lat=row.last_lat,
        last_lon=row.last_lon,
        last_location_at=row.last_location_at,
    )


async def load_state(session: AsyncSession, *, app_id: str, user_key: str) -> ProfileState | None:
    """The user's stored profile, or None when there is none. One statement, no lock."""
    row = (
        await session.execute(
            select(_PROFILES).where(_PROFILES.c.app_id == app_id, _PROFILES.c.user_key == user_key)
        )
    ).first()
    return None if row is None else state_of(row)


async def load_view(
    session: AsyncSession,
    *,
    app_id: str,
    user_key: str,
    counters: bool = True,
    recent: bool = True,
) -> ProfileView | None:
    """The user's ``ProfileView`` — profile, memberships, and its daily counters and
    recent events unless told they are not needed (``language.reads_counters`` and
    ``reads_recent`` of the rules to answer say) — or None when the user has no profile.
    Two statements, no lock: a concurrent segmenter batch may commit between them, so
    the view is as of either side of it."""
    state = await load_state(session, app_id=app_id, user_key=user_key)
    if state is None:
        return None
    return await view_of(
        session, app_id=app_id, user_key=user_key, state=state, counters=counters, recent=recent
    )


async def view_of(
    session: AsyncSession,
    *,
    app_id: str,
    user_key: str,
    state: ProfileState,
    counters: bool = True,
    recent: bool = True,
    segments: Set[str] | None = None,
) -> ProfileView:
    """The ``ProfileView`` of a profile already in hand (``state``, e.g. read under the
    caller's lock): its memberships (unless given as ``segments``), daily counters and
    recent events (each only when asked for), in one statement."""
    members: set[str] = set()
    rows: list[DailyCount] = []
    events: list[RecentEvent] = []
    if segments is None or counters or recent:
        params = {
            "app_id": app_id,
            "user_key": user_key,
            "segments": segments is None,
            "counters": counters,
            "recent": recent,
        }
        for kind, name, day, count, revenue, ts, props in await session.execute(_HISTORY, params):
            if kind == 0:
                members.add(name)
            elif kind == 1:
                rows.append(DailyCount(name, day, count, revenue))
            else:
                events.append(RecentEvent(name, ts, props))
    return ProfileView(
        state=state,
        counters=tuple(rows),
        recent=tuple(events),
        segments=members if segments is None else segments,
    )
