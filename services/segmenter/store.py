"""Segmenter's tables: processed records, erasures carried out and rule syncs here;
profiles, device aliases, daily counters, recent events and segment memberships in
``libs.runtime.tables`` (admin reads them). Segmenter is their only writer. Repo
functions never commit.

Event conditions with ``where`` property filters (or windows of minutes/hours) cannot be
answered from daily counters, which are per (name, day) only. They are answered from
``segmenter_recent_events``: every first-seen event of the last ``RECENT_EVENTS_DAYS``
days with its props, pruned per user on write. Chosen over per-(prop, value) counters
because any operator on any prop then works, with one table and no list of props to
configure; the rule language bounds such windows to the retention."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import (
    Index,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.rules.language import RECENT_EVENTS_DAYS
from libs.rules.loader import state_of
from libs.rules.profile import DailyCount, ProfileState, ProfileView, RecentEvent
from libs.runtime.postgres import Base, fetch_raw, lock
from libs.runtime.tables import (
    DailyCounter,
    DeviceAlias,
    Membership,
    Profile,
    RecentEventRow,
    Segment,
)
from libs.runtime.timed import claim_due
from libs.schemas import Event
from libs.schemas.base import ANONYMOUS_PREFIX
from services.segmenter.identity import Alias
from services.segmenter.logic import daily_counts


class SeenEvent(Base):
    """Event ids already folded into a profile: replays change nothing."""

    __tablename__ = "segmenter_seen_events"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime]


class Erasure(Base):
    """Erasures (admin's ``DELETE /admin/v1/users/{user_key}``) already carried out: a
    redelivered erasure record does nothing, so it cannot erase what the user did
    after it (nor events of its batch marked seen). Keeps no user key."""

    __tablename__ = "segmenter_erasures"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erasure_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    erased_at: Mapped[datetime]


class RuleSync(Base):
    """The rule (by ``logic.rule_fingerprint``) a segment's memberships were last fully
    reconciled with by the scheduler. A segment without a row, or whose rule has another
    fingerprint now, is new or changed: the scheduler recomputes its memberships."""

    __tablename__ = "segmenter_rule_syncs"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[datetime]


class Schedule(Base):
    """When the scheduler next re-evaluates an app's segments in bulk: one row per app
    that has (or had) segments, claimed ``FOR UPDATE SKIP LOCKED`` when due, so that
    replicas share the apps and each app is worked on by one replica at a time."""

    __tablename__ = "segmenter_schedules"
    __table_args__ = (Index("ix_segmenter_schedules_due_at", "due_at"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime]
    ticked_at: Mapped[datetime | None]


# The real-time path's statements, built once: asyncpg caches their prepared statements,
# so a batch pays neither per user nor per batch. The hottest run on asyncpg itself
# (``_raw``, ``_fetch``); the others are SQLAlchemy text or Core over the tables (not ORM
# entities), compiled once. A batch costs about ten round trips whatever its size.
_PROFILES = cast(Table, Profile.__table__)
_ALIASES = cast(Table, DeviceAlias.__table__)
_KEYS = bindparam("keys", type_=ARRAY(String))
_PROFILE_FIELDS = tuple(f.name for f in fields(ProfileState))

_JSONB = frozenset(c.name for c in _PROFILES.columns if isinstance(c.type, JSONB))
_PARAM = re.compile(r"(?<![:\w]):([a-z_]+)")


class _Raw(NamedTuple):
    """A statement for asyncpg itself: ``sql`` with ``$n`` parameters, ``names`` the
    parameter names in that order."""

    sql: str
    names: tuple[str, ...]


def _raw(sql: str) -> _Raw:
    """``sql`` with ``:name`` parameters (a name repeated is one parameter) for asyncpg."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _Raw(_PARAM.sub(number, sql), tuple(names))


async def _fetch(session: AsyncSession, statement: _Raw, params: Mapping[str, Any]) -> list[Any]:
    """``statement`` with ``params`` by name, through ``postgres.fetch_raw`` (the session's
    asyncpg connection, in its transaction): on the real-time path SQLAlchemy's statement
    machinery and its JSON decoding were a sixth of the consumer's CPU. JSONB values are
    read as text and decoded here (``orjson``)."""
    return await fetch_raw(session, statement.sql, *(params[n] for n in statement.names))


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


# A batch's first statement: marks its records seen (the first sightings come back with
# ``alias`` false) and reads the stored aliases of its devices, in one round trip.
_SIGHTINGS_AND_ALIASES = text(
    "WITH sighted AS (INSERT INTO segmenter_seen_events (app_id, event_id, seen_at)"
    " SELECT CAST(:app_id AS text), e, CAST(:now AS timestamptz)"
    " FROM unnest(CAST(:ids AS text[])) AS e"
    " ON CONFLICT DO NOTHING RETURNING event_id)"
    " SELECT false AS alias, event_id AS id, NULL AS user_key,"
    " CAST(NULL AS timestamptz) AS linked_at FROM sighted"
    " UNION ALL SELECT true, device_id, user_key, linked_at FROM device_aliases"
    " WHERE app_id = :app_id AND device_id = ANY(CAST(:devices AS text[]))"
)
# Rows come out of unnest in array order, so the locks are taken in the order given.
_LOCK_MANY = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
    " FROM unnest(CAST(:keys AS text[])) AS k"
)
_LOAD_PROFILES = _raw(
    "SELECT user_key, "
    + ", ".join(f"CAST({f} AS text)" if f in _JSONB else f for f in _PROFILE_FIELDS)
    + " FROM profiles WHERE app_id = :app_id AND user_key = ANY(CAST(:keys AS text[]))"
    " FOR UPDATE"
)


def _upsert_json(table: Table, conflict: str, param: str = "rows") -> str:
    """``INSERT INTO table (every column) SELECT … FROM jsonb_populate_recordset(…)``: the
    SQL of one statement with one parameter (``param``) — a JSON array of row objects
    (``_json_rows``), typed by the table — for any number of rows; the server runs it
    once, where an executemany runs once per row. A JSONB column's ``null`` becomes JSON
    ``null``, as SQLAlchemy stores a Python None there (not SQL NULL)."""
    names = [c.name for c in table.columns]
    values = [
        f"COALESCE({n}, 'null'::jsonb)" if isinstance(table.c[n].type, JSONB) else n for n in names
    ]
    return (
        f"INSERT INTO {table.name} AS t ({', '.join(names)}) SELECT {', '.join(values)} FROM"
        f" jsonb_populate_recordset(CAST(NULL AS {table.name}), CAST(:{param} AS jsonb)) {conflict}"
    )


def _json_rows(rows: list[dict[str, Any]]) -> str:
    """The parameter of an ``_upsert_json`` statement (datetimes ISO-8601 with their
    offset; a naive one is UTC, as asyncpg takes it)."""
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


_SAVE_PROFILES = _upsert_json(
    _PROFILES,
    "ON CONFLICT (app_id, user_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_PROFILE_FIELDS, "updated_at")),
)
_ALIASES_OF = select(_ALIASES.c.device_id, _ALIASES.c.user_key, _ALIASES.c.linked_at).where(
    _ALIASES.c.app_id == bindparam("app_id"), _ALIASES.c.device_id == any_(_KEYS)
)
_SAVE_ALIASES = _upsert_json(
    _ALIASES,
    "ON CONFLICT (app_id, device_id) DO UPDATE SET user_key = excluded.user_key,"
    " linked_at = excluded.linked_at, updated_at = excluded.updated_at"
    # An anonymous alias is only ever a first one: it never replaces a link (which a
    # replica handling the device's events may have just stored).
    f" WHERE (excluded.user_key NOT LIKE '{ANONYMOUS_PREFIX}%' OR t.user_key LIKE"
    f" '{ANONYMOUS_PREFIX}%')"
    # An alias stored as it is (a replayed link) is not rewritten.
    " AND (t.user_key, t.linked_at) IS DISTINCT FROM (excluded.user_key, excluded.linked_at)",
    "aliases",
)
# Multi-row writes are one statement over arrays (``unnest``) or a JSON array of rows,
# not an executemany: the server runs one statement instead of one per row (under load
# the per-row executions were the largest share of Postgres' time). A counter row
# appears once per statement (``logic.daily_counts`` sums per user, name and day), as
# ON CONFLICT DO UPDATE needs. The batch's writes — device aliases, counters, recent
# events and their pruning, profiles — go in one statement (data-modifying WITH clauses:
# five tables, none reading another's rows, so that one round trip does what five did).
_SAVE_USERS = _raw(
    f"WITH linked AS ({_SAVE_ALIASES}), counted AS ("
    "INSERT INTO segmenter_daily_counters AS c (app_id, user_key, name, day, count, revenue)"
    " SELECT CAST(:app_id AS text), u, n, d, k, r"
    " FROM unnest(CAST(:users AS text[]), CAST(:names AS text[]), CAST(:days AS date[]),"
    " CAST(:counts AS bigint[]), CAST(:revenues AS float8[])) AS t(u, n, d, k, r)"
    " ON CONFLICT (app_id, user_key, name, day)"
    " DO UPDATE SET count = c.count + excluded.count, revenue = c.revenue + excluded.revenue"
    "), kept AS ("
    "INSERT INTO segmenter_recent_events (app_id, event_id, user_key, name, ts, props)"
    " SELECT CAST(:app_id AS text), e, u, n, t, CAST(p AS jsonb)"
    " FROM unnest(CAST(:ids AS text[]), CAST(:recent_users AS text[]),"
    " CAST(:recent_names AS text[]), CAST(:ts AS timestamptz[]), CAST(:props AS text[]))"
    " AS x(e, u, n, t, p)"
    " ON CONFLICT DO NOTHING"
    "), pruned AS ("
    "DELETE FROM segmenter_recent_events WHERE app_id = :app_id"
    " AND user_key = ANY(CAST(:keys AS text[])) AND ts < CAST(:horizon AS timestamptz)"
    ") " + _SAVE_PROFILES
)
# What evaluating the changed users needs, in one read: their memberships (kind 0), daily
# counters (kind 1, when the rules need them) and recent events (kind 2, likewise).
_VIEWS_OF = _raw(
    "SELECT 0 AS kind, user_key, segment_id AS name, CAST(NULL AS date) AS day,"
    " CAST(NULL AS bigint) AS count, CAST(NULL AS float8) AS revenue,"
    " CAST(NULL AS timestamptz) AS ts, CAST(NULL AS text) AS props"
    " FROM segment_memberships WHERE app_id = :app_id AND user_key = ANY(CAST(:keys AS text[]))"
    " UNION ALL SELECT 1, user_key, name, day, count, revenue, NULL, NULL"
    " FROM segmenter_daily_counters WHERE CAST(:counters AS boolean)"
    " AND app_id = :app_id AND user_key = ANY(CAST(:keys AS text[]))"
    " UNION ALL SELECT 2, user_key, name, NULL, NULL, NULL, ts, CAST(props AS text)"
    " FROM segmenter_recent_events WHERE CAST(:recent AS boolean)"
    " AND app_id = :app_id AND user_key = ANY(CAST(:keys AS text[]))"
)
_ACTIVE_SEGMENTS = _raw(
    "SELECT id, CAST(rule AS text), updated_at FROM segments"
    " WHERE app_id = :app_id AND status = 'active'"
)
_ENTER = _raw(
    "INSERT INTO segment_memberships (app_id, segment_id, user_key, entered_at)"
    " SELECT CAST(:app_id AS text), s, u, CAST(:at AS timestamptz)"
    " FROM unnest(CAST(:segments AS text[]), CAST(:users AS text[])) AS m(s, u)"
    " ON CONFLICT DO NOTHING"
)
_LEAVE = text(
    "DELETE FROM segment_memberships m"
    " USING unnest(CAST(:segments AS text[]), CAST(:users AS text[])) AS x(s, u)"
    " WHERE m.app_id = :app_id AND m.segment_id = x.s AND m.user_key = x.u"
)


async def sightings_and_aliases(
    session: AsyncSession, *, app_id: str, event_ids: list[str], device_ids: Iterable[str]
) -> tuple[set[str], dict[str, Alias]]:
    """Record ``event_ids`` as seen and read the stored aliases of ``device_ids``, in one
    statement. Returns the ids not seen before (to be applied; an id repeated in
    ``event_ids`` is returned at most once) and the alias of each device that has one."""
    devices = sorted(set(device_ids))
    if not event_ids and not devices:
        return set(), {}
    conn = await session.connection()
    rows = await conn.execute(
        _SIGHTINGS_AND_ALIASES,
        {"app_id": app_id, "now": datetime.now(UTC), "ids": list(event_ids), "devices": devices},
    )
    fresh: set[str] = set()
    stored: dict[str, Alias] = {}
    for is_alias, key, user_key, linked_at in rows:
        if is_alias:
            stored[key] = Alias(user_key, linked_at)
        else:
            fresh.add(key)
    return fresh, stored


async def lock_profiles(session: AsyncSession, *, app_id: str, user_keys: Sequence[str]) -> None:
    """Take the profiles' advisory locks (held until the transaction ends; re-entrant),
    in one statement, one key after another in sorted order. Blocks. Callers that lock
    several profiles lock them all at once, in sorted ``(app_id, user_key)`` order across
    the transaction, so that replicas never wait on each other in a cycle. The lock of a
    profile is ``libs.runtime.postgres.lock(session, "profile", app_id, user_key)``'s."""
    keys = ["\x1f".join(("profile", app_id, k)) for k in sorted(set(user_keys))]
    if len(keys) == 1:
        await lock(session, "profile", app_id, user_keys[0])
    elif keys:
        conn = await session.connection()
        await conn.execute(_LOCK_MANY, {"keys": keys})


async def load_profiles(
    session: AsyncSession, *, app_id: str, user_keys: Iterable[str]
) -> dict[str, ProfileState]:
    """The stored profiles among ``user_keys`` (``FOR UPDATE``), by key, in one
    statement. The caller holds their advisory locks (``lock_profiles``)."""
    keys = sorted(set(user_keys))
    if not keys:
        return {}
    found: dict[str, ProfileState] = {}
    for row in await _fetch(session, _LOAD_PROFILES, {"app_id": app_id, "keys": keys}):
        values = dict(zip(_PROFILE_FIELDS, row[1:], strict=True))
        for name in _JSONB:
            values[name] = _json(values[name])
        values["attribute_writes"] = values["attribute_writes"] or {}
        found[row[0]] = ProfileState(**values)
    return found


async def load_profile(
    session: AsyncSession, *, app_id: str, user_key: str, locked: bool = False
) -> ProfileState | None:
    """The profile, locked for this transaction (one writer per user at a time), or None.

    The advisory lock also covers a profile that does not exist yet, so two replicas
    that both see it missing cannot both create it and lose one another's update.
    ``locked``: the caller already holds it (``lock_profiles``), saving a round trip.
    """
    if not locked:
        await lock_profiles(session, app_id=app_id, user_keys=[user_key])
    row = await session.scalar(
        select(Profile)
        .where(Profile.app_id == app_id, Profile.user_key == user_key)
        .with_for_update()
    )
    return None if row is None else state_of(row)


async def save_profile(
    session: AsyncSession, *, app_id: str, user_key: str, state: ProfileState
) -> None:
    values: dict[str, Any] = asdict(state)
    values.update(app_id=app_id, user_key=user_key, updated_at=datetime.now(UTC))
    stmt = insert(Profile).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Profile.app_id, Profile.user_key],
            set_={k: stmt.excluded[k] for k in values if k not in ("app_id", "user_key")},
        )
    )


async def aliases(
    session: AsyncSession, *, app_id: str, device_ids: Iterable[str]
) -> dict[str, Alias]:
    """The stored alias of each of ``device_ids`` that has one."""
    wanted = sorted(set(device_ids))
    if not wanted:
        return {}
    conn = await session.connection()
    rows = await conn.execute(_ALIASES_OF, {"app_id": app_id, "keys": wanted})
    return {device: Alias(key, linked_at) for device, key, linked_at in rows}


async def move_history(session: AsyncSession, *, app_id: str, source: str, target: str) -> None:
    """Move ``source``'s daily counters (summed into ``target``'s rows of the same name
    and day) and recent events to ``target``; ``source`` keeps none. Both profiles must
    be locked by the caller. Not idempotent on its own (the counters are added): the
    caller deletes ``source`` in the same transaction."""
    moved = select(
        DailyCounter.app_id,
        literal(target).label("user_key"),
        DailyCounter.name,
        DailyCounter.day,
        DailyCounter.count,
        DailyCounter.revenue,
    ).where(DailyCounter.app_id == app_id, DailyCounter.user_key == source)
    stmt = insert(DailyCounter).from_select(
        ["app_id", "user_key", "name", "day", "count", "revenue"], moved
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[
                DailyCounter.app_id,
                DailyCounter.user_key,
                DailyCounter.name,
                DailyCounter.day,
            ],
            set_={
                "count": DailyCounter.count + stmt.excluded.count,
                "revenue": DailyCounter.revenue + stmt.excluded.revenue,
            },
        )
    )
    await session.execute(
        delete(DailyCounter).where(DailyCounter.app_id == app_id, DailyCounter.user_key == source)
    )
    await session.execute(
        update(RecentEventRow)
        .where(RecentEventRow.app_id == app_id, RecentEventRow.user_key == source)
        .values(user_key=target)
    )


async def delete_profile(session: AsyncSession, *, app_id: str, user_key: str) -> None:
    """Delete the profile, its daily counters and recent events (memberships: ``leave``,
    one by one, so that each exit is announced). Idempotent."""
    for table in (DailyCounter, RecentEventRow, Profile):
        await session.execute(
            delete(table).where(table.app_id == app_id, table.user_key == user_key)
        )


async def delete_aliases(session: AsyncSession, *, app_id: str, user_key: str) -> None:
    """Forget every device whose alias names ``user_key``. Idempotent."""
    await session.execute(
        delete(DeviceAlias).where(DeviceAlias.app_id == app_id, DeviceAlias.user_key == user_key)
    )


async def claim_erasure(
    session: AsyncSession, *, app_id: str, erasure_id: str, at: datetime
) -> bool:
    """Record the erasure as carried out; False when it already was (a redelivery)."""
    claimed = await session.scalar(
        insert(Erasure)
        .values(app_id=app_id, erasure_id=erasure_id, erased_at=at)
        .on_conflict_do_nothing()
        .returning(Erasure.erasure_id)
    )
    return claimed is not None


class ActiveSegment(NamedTuple):
    id: str
    rule: Any
    updated_at: datetime


async def active_segments(session: AsyncSession, *, app_id: str) -> list[ActiveSegment]:
    """The app's active segments: id, stored rule and last write (read per batch)."""
    rows = await _fetch(session, _ACTIVE_SEGMENTS, {"app_id": app_id})
    return [ActiveSegment(id, _json(rule), updated_at) for id, rule, updated_at in rows]


async def memberships(session: AsyncSession, *, app_id: str, user_key: str) -> set[str]:
    rows = await session.scalars(
        select(Membership.segment_id).where(
            Membership.app_id == app_id, Membership.user_key == user_key
        )
    )
    return set(rows)


async def enrol_apps(session: AsyncSession, *, now: datetime) -> int:
    """Give every app that has segments and no schedule a schedule due at ``now``;
    returns how many were added. Idempotent; concurrent callers may wait for each
    other's uncommitted rows (commit soon). The one statement not scoped by an app: it
    enumerates tenants."""
    result = await session.execute(
        insert(Schedule)
        .from_select(
            ["app_id", "due_at"],
            select(Segment.app_id, literal(now))
            .where(~select(Schedule.app_id).where(Schedule.app_id == Segment.app_id).exists())
            .distinct(),
        )
        .on_conflict_do_nothing(index_elements=[Schedule.app_id])
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def claim_schedules(session: AsyncSession, *, now: datetime, limit: int) -> list[Schedule]:
    """At most ``limit`` apps' schedules due at ``now``, oldest first, locked ``FOR UPDATE
    SKIP LOCKED``."""
    return list(
        await session.scalars(claim_due(select(Schedule), Schedule.due_at, now=now, limit=limit))
    )


async def claim_schedule(session: AsyncSession, *, app_id: str, now: datetime) -> Schedule | None:
    """The app's schedule (created due at ``now`` if it has none), locked ``FOR UPDATE
    SKIP LOCKED``: None when another transaction holds it. Waits only when another
    transaction is creating the same app's schedule at the same moment."""
    locked = select(Schedule).where(Schedule.app_id == app_id).with_for_update(skip_locked=True)
    schedule = await session.scalar(locked)
    if schedule is None:
        await session.execute(
            insert(Schedule)
            .values(app_id=app_id, due_at=now)
            .on_conflict_do_nothing(index_elements=[Schedule.app_id])
        )
        schedule = await session.scalar(locked)
    return schedule


async def next_schedule(session: AsyncSession, *, after: datetime) -> datetime | None:
    """The earliest schedule due after ``after``, of any app."""
    return await session.scalar(select(func.min(Schedule.due_at)).where(Schedule.due_at > after))


async def synced_rules(session: AsyncSession, *, app_id: str) -> dict[str, str]:
    """Segment id → fingerprint of the rule its memberships were last reconciled with."""
    rows = await session.execute(
        select(RuleSync.segment_id, RuleSync.fingerprint).where(RuleSync.app_id == app_id)
    )
    return {segment_id: fingerprint for segment_id, fingerprint in rows}


async def mark_synced(
    session: AsyncSession, *, app_id: str, fingerprints: dict[str, str], at: datetime
) -> None:
    """Record that each segment's memberships now agree with the rule ``fingerprints``
    names (idempotent: the latest call wins)."""
    if not fingerprints:
        return
    stmt = insert(RuleSync).values(
        [
            {"app_id": app_id, "segment_id": s, "fingerprint": f, "synced_at": at}
            for s, f in sorted(fingerprints.items())
        ]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[RuleSync.app_id, RuleSync.segment_id],
            set_={"fingerprint": stmt.excluded.fingerprint, "synced_at": stmt.excluded.synced_at},
        )
    )


async def drop_inactive(session: AsyncSession, *, app_id: str) -> int:
    """Delete the memberships (and sync marks) of the app's segments that are no longer
    active (archived by admin); returns how many memberships went. No SegmentChanged is
    published: the segment is gone, its users did not change."""
    active = select(Segment.id).where(Segment.app_id == app_id, Segment.status == "active")
    await session.execute(
        delete(RuleSync).where(RuleSync.app_id == app_id, RuleSync.segment_id.not_in(active))
    )
    result = await session.execute(
        delete(Membership).where(Membership.app_id == app_id, Membership.segment_id.not_in(active))
    )
    return int(result.rowcount or 0)


async def members(session: AsyncSession, *, app_id: str, segment_id: str) -> set[str]:
    """Every user key in the segment (the scheduler's bulk comparison)."""
    rows = await session.scalars(
        select(Membership.user_key).where(
            Membership.app_id == app_id, Membership.segment_id == segment_id
        )
    )
    return set(rows)


async def save_users(
    session: AsyncSession,
    *,
    app_id: str,
    aliases: Mapping[str, Alias],
    events: Mapping[str, Sequence[Event]],
    states: Mapping[str, ProfileState],
    now: datetime,
) -> None:
    """Store the batch's device ``aliases`` (device id → alias), count each user's
    ``events`` (user key → its first sightings: the caller filters by
    ``sightings_and_aliases`` in the same transaction, which makes this exactly-once)
    into the daily counters, keep them as recent events, prune those users' recent
    events past the retention, and upsert the profiles ``states`` (user key → state) —
    one statement whatever the number of users. The users' profiles are locked by the
    caller.

    Aliases are as decided by ``identity.route``: links replace whatever was stored (one
    partition owns a device's events, so one batch at a time decides them); an
    anonymous alias is stored only where none or another anonymous one is; an alias
    stored as it is is not rewritten."""
    if not aliases and not events and not states:
        return
    params: dict[str, Any] = {"app_id": app_id}
    for name in ("users", "names", "days", "counts", "revenues"):
        params[name] = []
    for name in ("ids", "recent_users", "recent_names", "ts", "props"):
        params[name] = []
    horizon = now - timedelta(days=RECENT_EVENTS_DAYS)
    for user_key, applied in sorted(events.items()):
        for c in daily_counts(applied):
            params["users"].append(user_key)
            params["names"].append(c.name)
            params["days"].append(c.day)
            params["counts"].append(c.count)
            params["revenues"].append(c.revenue)
        for e in applied:
            if e.ts >= horizon:
                params["ids"].append(e.event_id)
                params["recent_users"].append(user_key)
                params["recent_names"].append(e.name)
                params["ts"].append(e.ts)
                params["props"].append(orjson.dumps(e.props).decode())
    params.update(keys=sorted(events), horizon=horizon)
    updated_at = datetime.now(UTC)
    linked = [
        {
            "app_id": app_id,
            "device_id": device,
            "user_key": alias.user_key,
            "linked_at": alias.linked_at,
            "updated_at": updated_at,
        }
        for device, alias in sorted(aliases.items())
    ]
    rows: list[dict[str, Any]] = []
    for user_key, state in sorted(states.items()):
        values = {f: getattr(state, f) for f in _PROFILE_FIELDS}
        values.update(app_id=app_id, user_key=user_key, updated_at=updated_at)
        rows.append(values)
    params.update(aliases=_json_rows(linked), rows=_json_rows(rows))
    await _fetch(session, _SAVE_USERS, params)


async def views_of(
    session: AsyncSession,
    *,
    app_id: str,
    states: Mapping[str, ProfileState],
    counters: bool,
    recent: bool,
) -> tuple[dict[str, set[str]], dict[str, ProfileView]]:
    """Each of the users' segments (user key → state; an empty set for a user in none)
    and their ``ProfileView`` (``libs.rules.loader.view_of`` for many users) — counters
    and recent events only when asked for — in one statement."""
    keys = sorted(states)
    segments: dict[str, set[str]] = {k: set() for k in keys}
    rows: dict[str, list[DailyCount]] = {k: [] for k in keys}
    events: dict[str, list[RecentEvent]] = {k: [] for k in keys}
    if keys:
        params = {"app_id": app_id, "keys": keys, "counters": counters, "recent": recent}
        for kind, user_key, name, day, count, revenue, ts, props in await _fetch(
            session, _VIEWS_OF, params
        ):
            if kind == 0:
                segments[user_key].add(name)
            elif kind == 1:
                rows[user_key].append(DailyCount(name, day, count, revenue))
            else:
                events[user_key].append(RecentEvent(name, ts, _json(props)))
    views = {
        k: ProfileView(
            state=states[k],
            counters=tuple(rows[k]),
            recent=tuple(events[k]),
            segments=segments[k],
        )
        for k in keys
    }
    return segments, views


async def write_memberships(
    session: AsyncSession,
    *,
    app_id: str,
    entered: Sequence[tuple[str, str]],
    left: Sequence[tuple[str, str]],
    at: datetime,
) -> None:
    """Store memberships ``entered`` (at ``at``) and delete those ``left``, each a
    ``(user_key, segment_id)`` pair; at most two statements. Idempotent."""
    if not entered and not left:
        return
    if entered:
        await _fetch(
            session,
            _ENTER,
            {
                "app_id": app_id,
                "segments": [s for _, s in entered],
                "users": [u for u, _ in entered],
                "at": at,
            },
        )
    if left:
        conn = await session.connection()
        await conn.execute(
            _LEAVE,
            {"app_id": app_id, "segments": [s for _, s in left], "users": [u for u, _ in left]},
        )
