"""Journey's tables (runs, due work, limits, stats, identity and geofence state) and its
repo functions. Reads the ``journeys`` catalogue and its versions (written by admin),
``profiles`` and ``device_aliases`` (written by the segmenter).

Every function is keyword-only, never commits, and filters by ``app_id`` — except the
claims of due work, which take whatever is due across apps (the wake-up runner is one
for the platform) and return rows that carry their ``app_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    Index,
    Integer,
    String,
    and_,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tables import DeviceAlias, Journey, JourneyVersion, Membership, Profile
from services.journey.logic import History, Run


class JourneyRun(Base):
    """One user's run of one journey version. ``wake_at`` is its timer (claimed by the
    wake-up runner); ``held`` timers belong to a paused journey and are not claimed."""

    __tablename__ = "journey_runs"
    __table_args__ = (
        Index("ix_journey_runs_user", "app_id", "user_key"),
        Index("ix_journey_runs_journey", "app_id", "journey_id", "status"),
        Index(
            "ix_journey_runs_due",
            "wake_at",
            postgresql_where=text("wake_at IS NOT NULL AND NOT held"),
        ),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    user_key: Mapped[str] = mapped_column(String(200))
    # What started it: a segment change id, "event:<id or dedup value>", "date:<year>"…
    trigger_change_id: Mapped[str] = mapped_column(String(128))
    # waiting | completed | exited | converted
    status: Mapped[str] = mapped_column(String(16))
    node: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    wake_at: Mapped[datetime | None]
    held: Mapped[bool] = mapped_column(Boolean, server_default="false")
    waiting_for: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    visits: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    exit_reason: Mapped[str | None] = mapped_column(String(32))
    ended_at: Mapped[datetime | None]


class JourneyTask(Base):
    """Work a run left to do later: a send deferred by the journey's per-second limit
    (``kind`` send, ``payload`` the SendJob) or a webhook call with its retries (``kind``
    webhook). ``task_id`` is the effect id (``run:node:visit``): one row per effect."""

    __tablename__ = "journey_tasks"
    __table_args__ = (Index("ix_journey_tasks_due", "due_at"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_key: Mapped[str] = mapped_column(String(200))
    journey_id: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    due_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))


class JourneySchedule(Base):
    """A journey's own clock: a broadcast's next firing (and the member cursor of a
    firing in progress), or a date trigger's sweep (``covered_until``: moments up to it
    have been entered). Claimed like run timers."""

    __tablename__ = "journey_schedules"
    __table_args__ = (Index("ix_journey_schedules_due", "due_at"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # broadcast | date
    due_at: Mapped[datetime | None]
    covered_until: Mapped[datetime | None]
    # A firing in progress: its time and the last member entered (paging by user key).
    firing_at: Mapped[datetime | None]
    cursor: Mapped[str | None] = mapped_column(String(200))
    entered: Mapped[int] = mapped_column(BigInteger, server_default="0")
    firings: Mapped[int] = mapped_column(Integer, server_default="0")


class JourneySendCount(Base):
    """Messages a journey sent, per UTC day and in total (``day`` 0001-01-01): what its
    daily and total caps are checked against. ``next_slot``: the per-second limit's
    next free moment (on the total row)."""

    __tablename__ = "journey_send_counts"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sent: Mapped[int] = mapped_column(BigInteger, server_default="0")
    next_slot: Mapped[datetime | None]


class JourneyNodeStat(Base):
    """Per journey, node and variant: runs that entered the node and sends the caps
    skipped. Incremented in the transaction that moved the runs (exactly once)."""

    __tablename__ = "journey_node_stats"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), primary_key=True)
    entered: Mapped[int] = mapped_column(BigInteger, server_default="0")
    capped: Mapped[int] = mapped_column(BigInteger, server_default="0")


class JourneyDeviceLink(Base):
    """Which user a device's events belong to, as journey saw it on ``events`` (an event
    naming both): ahead of the segmenter's ``device_aliases`` when journey reads the
    login first. The newest ``linked_at`` wins."""

    __tablename__ = "journey_device_links"
    __table_args__ = (Index("ix_journey_device_links_user", "app_id", "user_key"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200))
    linked_at: Mapped[datetime]


class JourneySeenEvent(Base):
    """Events this service has applied: a redelivered batch applies none of them again
    (a replayed purchase must not resolve a wait its first delivery had moved past)."""

    __tablename__ = "journey_seen_events"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime]


class JourneyGeofenceState(Base):
    """Whether the user was last seen inside a geofence trigger's circle."""

    __tablename__ = "journey_geofence_states"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    inside: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)


TOTAL_DAY = date(1, 1, 1)

# --- runs ---------------------------------------------------------------------------------


def _values(run: Run) -> dict[str, Any]:
    return {
        "status": run.status,
        "node": run.node,
        "wake_at": run.wake_at,
        "waiting_for": run.waiting_for,
        "variant": run.variant,
        "visits": dict(run.visits),
        "exit_reason": run.exit_reason,
        "ended_at": run.ended_at,
        "user_key": run.user_key,
    }


_INSERT_RUNS = text(
    "INSERT INTO journey_runs (app_id, run_id, journey_id, version, user_key,"
    " trigger_change_id, status, node, started_at, wake_at, held, waiting_for, variant,"
    " trigger, visits, exit_reason, ended_at)"
    " SELECT app_id, run_id, journey_id, version, user_key, trigger_change_id, status, node,"
    " started_at, wake_at, false, waiting_for, variant, trigger, visits, exit_reason, ended_at"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(app_id text, run_id text,"
    " journey_id text, version int, user_key text, trigger_change_id text, status text,"
    " node text, started_at timestamptz, wake_at timestamptz, waiting_for text, variant text,"
    " trigger jsonb, visits jsonb, exit_reason text, ended_at timestamptz)"
    " ON CONFLICT DO NOTHING RETURNING run_id"
)


async def insert_runs(session: AsyncSession, *, runs: Sequence[tuple[Run, str]]) -> set[str]:
    """Insert new runs (one statement); returns the ids actually inserted (a cause that
    already started its run inserts nothing: a replay)."""
    if not runs:
        return set()
    rows = [
        {
            "app_id": run.app_id,
            "run_id": run.run_id,
            "journey_id": run.journey_id,
            "version": run.version,
            "trigger_change_id": cause[:128],
            "started_at": run.entered_at,
            "trigger": dict(run.trigger),
            **_values(run),
        }
        for run, cause in sorted(runs, key=lambda item: item[0].run_id)
    ]
    result = await session.execute(_INSERT_RUNS, {"rows": orjson.dumps(rows).decode()})
    return set(result.scalars())


_SAVE_RUNS = text(
    "UPDATE journey_runs AS r SET status = v.status, node = v.node, wake_at = v.wake_at,"
    " waiting_for = v.waiting_for, variant = v.variant, visits = v.visits,"
    " exit_reason = v.exit_reason, ended_at = v.ended_at, user_key = v.user_key"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(app_id text, run_id text,"
    " status text, node text, wake_at timestamptz, waiting_for text, variant text,"
    " visits jsonb, exit_reason text, ended_at timestamptz, user_key text)"
    " WHERE r.app_id = v.app_id AND r.run_id = v.run_id"
)


async def save_runs(session: AsyncSession, *, runs: Iterable[Run]) -> None:
    """Write the runs' moving parts back (the rows must exist), in one statement."""
    rows = [
        {"app_id": run.app_id, "run_id": run.run_id, **_values(run)}
        for run in sorted(runs, key=lambda r: (r.app_id, r.run_id))
    ]
    if rows:
        await session.execute(_SAVE_RUNS, {"rows": orjson.dumps(rows).decode()})


async def open_runs_of(
    session: AsyncSession, *, app_id: str, user_keys: Sequence[str]
) -> list[Run]:
    """The users' runs that have not ended, locked (in run id order, so concurrent
    batches never wait on each other in a cycle) until the transaction ends."""
    if not user_keys:
        return []
    rows = await session.execute(
        select(*_RUN_COLUMNS)
        .where(
            JourneyRun.app_id == app_id,
            JourneyRun.user_key.in_(sorted(set(user_keys))),
            JourneyRun.status == "waiting",
        )
        .order_by(JourneyRun.run_id)
        .with_for_update()
    )
    return [_run_of(r) for r in rows]


async def histories(
    session: AsyncSession, *, app_id: str, journey_ids: Sequence[str], user_keys: Sequence[str]
) -> dict[tuple[str, str], History]:
    """Per (journey, user): runs not ended and the latest entry (for the entry rules)."""
    if not journey_ids or not user_keys:
        return {}
    rows = await session.execute(
        select(
            JourneyRun.journey_id,
            JourneyRun.user_key,
            func.count().filter(JourneyRun.status == "waiting"),
            func.max(JourneyRun.started_at),
        )
        .where(
            JourneyRun.app_id == app_id,
            JourneyRun.journey_id.in_(set(journey_ids)),
            JourneyRun.user_key.in_(set(user_keys)),
        )
        .group_by(JourneyRun.journey_id, JourneyRun.user_key)
    )
    return {(j, u): History(active=n, last_entered_at=last) for j, u, n, last in rows}


async def lock_entries(
    session: AsyncSession, *, app_id: str, pairs: Iterable[tuple[str, str]]
) -> None:
    """Serialise entries of one user into one journey across consumers and replicas
    (the entry rules read, then insert): transaction advisory locks, in sorted order."""
    for journey_id, user_key in sorted(set(pairs)):
        await session.execute(
            select(
                func.pg_advisory_xact_lock(
                    func.hashtextextended(f"journey:{app_id}:{journey_id}:{user_key}", 0)
                )
            )
        )


async def journeys_run_for(session: AsyncSession, *, app_id: str, user_key: str) -> set[str]:
    """The journeys that have a run for ``user_key``."""
    rows = await session.scalars(
        select(JourneyRun.journey_id)
        .where(JourneyRun.app_id == app_id, JourneyRun.user_key == user_key)
        .distinct()
    )
    return set(rows)


_RUN_COLUMNS = (
    JourneyRun.app_id,
    JourneyRun.run_id,
    JourneyRun.journey_id,
    JourneyRun.version,
    JourneyRun.user_key,
    JourneyRun.status,
    JourneyRun.node,
    JourneyRun.started_at,
    JourneyRun.wake_at,
    JourneyRun.waiting_for,
    JourneyRun.variant,
    JourneyRun.trigger,
    JourneyRun.visits,
    JourneyRun.exit_reason,
    JourneyRun.ended_at,
)


async def claim_due_runs(
    session: AsyncSession, *, now: datetime, limit: int, app_id: str | None = None
) -> list[Run]:
    """Lock up to ``limit`` runs whose timer is due, oldest first, skipping runs another
    transaction holds (another replica's claim, or an event being applied to them). Read
    as plain rows (no ORM identity map: this is the hot path). ``app_id`` scopes the
    claim to one app (a worker dedicated to a tenant; tests); None claims for all."""
    stmt = select(*_RUN_COLUMNS).where(JourneyRun.wake_at <= now, ~JourneyRun.held)
    if app_id is not None:
        stmt = stmt.where(JourneyRun.app_id == app_id)
    rows = await session.execute(
        stmt.order_by(JourneyRun.wake_at).limit(limit).with_for_update(skip_locked=True)
    )
    return [_run_of(r) for r in rows]


def _run_of(r: Any) -> Run:
    return Run(
        app_id=r.app_id,
        run_id=r.run_id,
        journey_id=r.journey_id,
        version=r.version,
        user_key=r.user_key,
        status=r.status,
        node=r.node,
        entered_at=r.started_at,
        wake_at=r.wake_at,
        waiting_for=r.waiting_for,
        variant=r.variant,
        trigger=r.trigger or {},
        visits=r.visits or {},
        exit_reason=r.exit_reason,
        ended_at=r.ended_at,
    )


async def rekey_runs(session: AsyncSession, *, app_id: str, source: str, target: str) -> int:
    """Move a device's anonymous runs that have not ended to its user (a login)."""
    result = await session.execute(
        update(JourneyRun)
        .where(
            JourneyRun.app_id == app_id,
            JourneyRun.user_key == source,
            JourneyRun.status == "waiting",
        )
        .values(user_key=target)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def hold_runs(session: AsyncSession, *, app_id: str, journey_id: str, held: bool) -> int:
    """Hold (a paused journey) or release its runs' timers."""
    result = await session.execute(
        update(JourneyRun)
        .where(
            JourneyRun.app_id == app_id,
            JourneyRun.journey_id == journey_id,
            JourneyRun.status == "waiting",
            JourneyRun.held.is_(not held),
        )
        .values(held=held)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def end_runs(
    session: AsyncSession, *, app_id: str, journey_id: str, reason: str, now: datetime
) -> int:
    """End every run of the journey that has not ended (archive, cancel)."""
    result = await session.execute(
        update(JourneyRun)
        .where(
            JourneyRun.app_id == app_id,
            JourneyRun.journey_id == journey_id,
            JourneyRun.status == "waiting",
        )
        .values(status="exited", exit_reason=reason, wake_at=None, waiting_for=None, ended_at=now)
    )
    await session.execute(
        delete(JourneyTask).where(
            JourneyTask.app_id == app_id, JourneyTask.journey_id == journey_id
        )
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def erase_user(session: AsyncSession, *, app_id: str, user_key: str) -> int:
    """Forget a user: their runs (timers with them), pending tasks, geofence states and
    the device links naming them. Idempotent."""
    result = await session.execute(
        delete(JourneyRun).where(JourneyRun.app_id == app_id, JourneyRun.user_key == user_key)
    )
    for table in (JourneyTask, JourneyGeofenceState, JourneyDeviceLink):
        await session.execute(
            delete(table).where(table.app_id == app_id, table.user_key == user_key)
        )
    return result.rowcount or 0  # type: ignore[attr-defined]


_FIRST_SEEN = text(
    "INSERT INTO journey_seen_events (app_id, event_id, seen_at)"
    " SELECT :app_id, e, :now FROM unnest(CAST(:ids AS text[])) AS e"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


async def first_seen_events(
    session: AsyncSession, *, app_id: str, event_ids: Sequence[str], now: datetime
) -> set[str]:
    """Record the events as applied; returns those not recorded before. One cached
    statement over an array, however many events."""
    if not event_ids:
        return set()
    result = await session.execute(
        _FIRST_SEEN, {"app_id": app_id, "ids": sorted(set(event_ids)), "now": now}
    )
    return set(result.scalars())


# --- identity -----------------------------------------------------------------------------


async def link_devices(
    session: AsyncSession, *, app_id: str, links: Mapping[str, tuple[str, datetime]]
) -> None:
    """Record device → user links seen on ``events``; an older link moves nothing."""
    if not links:
        return
    rows = [
        {"app_id": app_id, "device_id": d, "user_key": u, "linked_at": at}
        for d, (u, at) in sorted(links.items())
    ]
    stmt = insert(JourneyDeviceLink).values(rows)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["app_id", "device_id"],
            set_={"user_key": stmt.excluded.user_key, "linked_at": stmt.excluded.linked_at},
            where=JourneyDeviceLink.linked_at <= stmt.excluded.linked_at,
        )
    )


async def users_of_devices(
    session: AsyncSession, *, app_id: str, device_ids: Sequence[str]
) -> dict[str, str]:
    """device → user key: journey's own links first, then the segmenter's aliases."""
    if not device_ids:
        return {}
    wanted = sorted(set(device_ids))
    found: dict[str, str] = {}
    aliases = await session.execute(
        select(DeviceAlias.device_id, DeviceAlias.user_key).where(
            DeviceAlias.app_id == app_id, DeviceAlias.device_id.in_(wanted)
        )
    )
    found.update({d: u for d, u in aliases})
    links = await session.execute(
        select(JourneyDeviceLink.device_id, JourneyDeviceLink.user_key).where(
            JourneyDeviceLink.app_id == app_id, JourneyDeviceLink.device_id.in_(wanted)
        )
    )
    found.update({d: u for d, u in links})
    return found


# --- configuration ------------------------------------------------------------------------


async def active_journeys(session: AsyncSession, *, app_id: str) -> list[Journey]:
    rows = await session.scalars(
        select(Journey).where(Journey.app_id == app_id, Journey.status == "active")
    )
    return list(rows)


async def journey_row(session: AsyncSession, *, app_id: str, journey_id: str) -> Journey | None:
    return await session.scalar(
        select(Journey).where(Journey.app_id == app_id, Journey.id == journey_id)
    )


async def journey_statuses(
    session: AsyncSession, *, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(app, journey) → status, for the journeys of a batch of runs."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.execute(
        select(Journey.app_id, Journey.id, Journey.status).where(
            tuple_(Journey.app_id, Journey.id).in_(wanted)
        )
    )
    return {(a, j): s for a, j, s in rows}


async def versions(
    session: AsyncSession, *, keys: Iterable[tuple[str, str, int]]
) -> dict[tuple[str, str, int], JourneyVersion]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.scalars(
        select(JourneyVersion).where(
            tuple_(JourneyVersion.app_id, JourneyVersion.journey_id, JourneyVersion.version).in_(
                wanted
            )
        )
    )
    return {(r.app_id, r.journey_id, r.version): r for r in rows}


async def profiles(
    session: AsyncSession, *, app_id: str, user_keys: Sequence[str]
) -> dict[str, Profile]:
    if not user_keys:
        return {}
    rows = await session.scalars(
        select(Profile).where(
            Profile.app_id == app_id, Profile.user_key.in_(sorted(set(user_keys)))
        )
    )
    return {p.user_key: p for p in rows}


# --- limits and stats ---------------------------------------------------------------------


async def sends_so_far(
    session: AsyncSession, *, app_id: str, journey_id: str, day: date
) -> tuple[int, int, datetime | None]:
    """(sent today, sent in total, next free per-second slot), locking the counters."""
    for d in (TOTAL_DAY, day):
        await session.execute(
            insert(JourneySendCount)
            .values(app_id=app_id, journey_id=journey_id, day=d, sent=0)
            .on_conflict_do_nothing()
        )
    rows = await session.execute(
        select(JourneySendCount.day, JourneySendCount.sent, JourneySendCount.next_slot)
        .where(
            JourneySendCount.app_id == app_id,
            JourneySendCount.journey_id == journey_id,
            JourneySendCount.day.in_([TOTAL_DAY, day]),
        )
        .order_by(JourneySendCount.day)
        .with_for_update()
    )
    found = {d: (n, slot) for d, n, slot in rows}
    return found[day][0], found[TOTAL_DAY][0], found[TOTAL_DAY][1]


async def count_sends(
    session: AsyncSession,
    *,
    app_id: str,
    journey_id: str,
    day: date,
    sent: int,
    next_slot: datetime | None,
) -> None:
    await session.execute(
        update(JourneySendCount)
        .where(
            JourneySendCount.app_id == app_id,
            JourneySendCount.journey_id == journey_id,
            JourneySendCount.day == day,
        )
        .values(sent=JourneySendCount.sent + sent)
    )
    await session.execute(
        update(JourneySendCount)
        .where(
            JourneySendCount.app_id == app_id,
            JourneySendCount.journey_id == journey_id,
            JourneySendCount.day == TOTAL_DAY,
        )
        .values(sent=JourneySendCount.sent + sent, next_slot=next_slot)
    )


async def add_node_stats(
    session: AsyncSession, *, counts: Mapping[tuple[str, str, str, str], tuple[int, int]]
) -> None:
    """Add (entered, capped) per (app, journey, node, variant), in key order."""
    if not counts:
        return
    rows = [
        {"app_id": a, "journey_id": j, "node_id": n, "variant": v, "entered": e, "capped": c}
        for (a, j, n, v), (e, c) in sorted(counts.items())
    ]
    stmt = insert(JourneyNodeStat).values(rows)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["app_id", "journey_id", "node_id", "variant"],
            set_={
                "entered": JourneyNodeStat.entered + stmt.excluded.entered,
                "capped": JourneyNodeStat.capped + stmt.excluded.capped,
            },
        )
    )


async def node_stats(
    session: AsyncSession, *, app_id: str, journey_id: str
) -> list[tuple[str, str, int, int]]:
    rows = await session.execute(
        select(
            JourneyNodeStat.node_id,
            JourneyNodeStat.variant,
            JourneyNodeStat.entered,
            JourneyNodeStat.capped,
        ).where(JourneyNodeStat.app_id == app_id, JourneyNodeStat.journey_id == journey_id)
    )
    return [(n, v, e, c) for n, v, e, c in rows]


async def run_counts(
    session: AsyncSession, *, app_id: str, journey_id: str
) -> list[tuple[str | None, str | None, str, str | None, int]]:
    """(node, variant, status, exit reason, runs) over the journey's runs."""
    rows = await session.execute(
        select(
            JourneyRun.node,
            JourneyRun.variant,
            JourneyRun.status,
            JourneyRun.exit_reason,
            func.count(),
        )
        .where(JourneyRun.app_id == app_id, JourneyRun.journey_id == journey_id)
        .group_by(JourneyRun.node, JourneyRun.variant, JourneyRun.status, JourneyRun.exit_reason)
    )
    return [(n, v, s, r, c) for n, v, s, r, c in rows]


# --- tasks and schedules ------------------------------------------------------------------


async def add_tasks(session: AsyncSession, *, tasks: Sequence[Mapping[str, Any]]) -> None:
    """Insert tasks (a replayed effect id is left alone)."""
    if tasks:
        await session.execute(insert(JourneyTask).values(list(tasks)).on_conflict_do_nothing())


async def claim_due_tasks(
    session: AsyncSession, *, now: datetime, limit: int, app_id: str | None = None
) -> list[JourneyTask]:
    stmt = select(JourneyTask).where(JourneyTask.due_at <= now)
    if app_id is not None:
        stmt = stmt.where(JourneyTask.app_id == app_id)
    rows = await session.scalars(
        stmt.order_by(JourneyTask.due_at).limit(limit).with_for_update(skip_locked=True)
    )
    return list(rows)


async def finish_task(session: AsyncSession, *, task: JourneyTask) -> None:
    await session.delete(task)


async def claim_due_schedules(
    session: AsyncSession, *, now: datetime, limit: int, app_id: str | None = None
) -> list[JourneySchedule]:
    stmt = select(JourneySchedule).where(JourneySchedule.due_at <= now)
    if app_id is not None:
        stmt = stmt.where(JourneySchedule.app_id == app_id)
    rows = await session.scalars(
        stmt.order_by(JourneySchedule.due_at).limit(limit).with_for_update(skip_locked=True)
    )
    return list(rows)


async def upsert_schedule(
    session: AsyncSession,
    *,
    app_id: str,
    journey_id: str,
    kind: str,
    due_at: datetime | None,
    covered_until: datetime | None,
) -> None:
    """Create the journey's schedule row, or set when it is next due (a firing in
    progress keeps its cursor)."""
    stmt = insert(JourneySchedule).values(
        app_id=app_id,
        journey_id=journey_id,
        kind=kind,
        due_at=due_at,
        covered_until=covered_until,
        entered=0,
        firings=0,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["app_id", "journey_id"],
            set_={
                "kind": kind,
                "due_at": stmt.excluded.due_at,
                "covered_until": func.coalesce(
                    stmt.excluded.covered_until, JourneySchedule.covered_until
                ),
            },
        )
    )


async def stop_schedule(session: AsyncSession, *, app_id: str, journey_id: str) -> None:
    await session.execute(
        update(JourneySchedule)
        .where(JourneySchedule.app_id == app_id, JourneySchedule.journey_id == journey_id)
        .values(due_at=None)
    )


async def schedule_of(
    session: AsyncSession, *, app_id: str, journey_id: str
) -> JourneySchedule | None:
    return await session.scalar(
        select(JourneySchedule).where(
            JourneySchedule.app_id == app_id, JourneySchedule.journey_id == journey_id
        )
    )


# --- geofences ----------------------------------------------------------------------------


async def geofence_states(
    session: AsyncSession, *, app_id: str, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], bool]:
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    rows = await session.execute(
        select(
            JourneyGeofenceState.journey_id,
            JourneyGeofenceState.user_key,
            JourneyGeofenceState.inside,
        )
        .where(
            JourneyGeofenceState.app_id == app_id,
            tuple_(JourneyGeofenceState.journey_id, JourneyGeofenceState.user_key).in_(wanted),
        )
        .with_for_update()
    )
    return {(j, u): inside for j, u, inside in rows}


async def set_geofence_states(
    session: AsyncSession,
    *,
    app_id: str,
    states: Mapping[tuple[str, str], tuple[bool, datetime, float, float]],
) -> None:
    if not states:
        return
    rows = [
        {
            "app_id": app_id,
            "journey_id": j,
            "user_key": u,
            "inside": i,
            "at": at,
            "lat": la,
            "lon": lo,
        }
        for (j, u), (i, at, la, lo) in sorted(states.items())
    ]
    stmt = insert(JourneyGeofenceState).values(rows)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["app_id", "journey_id", "user_key"],
            set_={
                "inside": stmt.excluded.inside,
                "at": stmt.excluded.at,
                "lat": stmt.excluded.lat,
                "lon": stmt.excluded.lon,
            },
            where=JourneyGeofenceState.at <= stmt.excluded.at,
        )
    )


# --- broadcasts and date sweeps -------------------------------------------------------------


async def members_page(
    session: AsyncSession, *, app_id: str, segment_id: str, after: str | None, limit: int
) -> list[tuple[str, str | None]]:
    """(user key, time zone) of the segment's members after ``after``, by user key."""
    stmt = (
        select(Membership.user_key, Profile.timezone)
        .outerjoin(
            Profile,
            and_(Profile.app_id == Membership.app_id, Profile.user_key == Membership.user_key),
        )
        .where(Membership.app_id == app_id, Membership.segment_id == segment_id)
        .order_by(Membership.user_key)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Membership.user_key > after)
    rows = await session.execute(stmt)
    return [(u, tz) for u, tz in rows]


async def date_candidates(
    session: AsyncSession,
    *,
    app_id: str,
    attribute: str,
    month_days: Sequence[str],
    after: str | None,
    limit: int,
) -> list[tuple[str, str | None, Any]]:
    """(user key, time zone, date value) of profiles whose date ``attribute`` (or
    ``first_seen``) falls on one of ``month_days`` (``MM-DD``), by user key."""
    if attribute == "first_seen":
        value: Any = Profile.first_seen
        month_day: Any = func.to_char(func.timezone("UTC", Profile.first_seen), "MM-DD")
    else:
        value = Profile.attributes[attribute].astext
        month_day = func.substr(value, 6, 5)
    stmt = (
        select(Profile.user_key, Profile.timezone, value)
        .where(Profile.app_id == app_id, month_day.in_(sorted(set(month_days))))
        .order_by(Profile.user_key)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Profile.user_key > after)
    rows = await session.execute(stmt)
    return [(u, tz, v) for u, tz, v in rows]
