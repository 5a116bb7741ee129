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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, literal, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base, lock
from libs.runtime.tables import (
    DailyCounter,
    DeviceAlias,
    Membership,
    Profile,
    RecentEventRow,
    Segment,
)
from libs.schemas import Event
from libs.schemas.base import ANONYMOUS_PREFIX
from libs.schemas.rules import RECENT_EVENTS_DAYS
from services.segmenter.identity import Alias
from services.segmenter.logic import (
    DailyCount,
    ProfileState,
    ProfileView,
    RecentEvent,
    daily_counts,
)


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


async def first_sightings(session: AsyncSession, *, app_id: str, event_ids: list[str]) -> set[str]:
    """Record ``event_ids`` as seen; returns those not seen before (to be applied)."""
    if not event_ids:
        return set()
    now = datetime.now(UTC)
    result = await session.scalars(
        insert(SeenEvent)
        .values([{"app_id": app_id, "event_id": e, "seen_at": now} for e in event_ids])
        .on_conflict_do_nothing()
        .returning(SeenEvent.event_id)
    )
    return set(result)


async def lock_profiles(session: AsyncSession, *, app_id: str, user_keys: Sequence[str]) -> None:
    """Take the profiles' advisory locks (held until the transaction ends; re-entrant).
    Blocks. Callers that lock several profiles lock them all at once, in sorted
    ``(app_id, user_key)`` order across the transaction, so that replicas never wait on
    each other in a cycle."""
    for user_key in sorted(set(user_keys)):
        await lock(session, "profile", app_id, user_key)


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
    if row is None:
        return None
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
    rows = await session.execute(
        select(DeviceAlias.device_id, DeviceAlias.user_key, DeviceAlias.linked_at).where(
            DeviceAlias.app_id == app_id, DeviceAlias.device_id.in_(wanted)
        )
    )
    return {device: Alias(key, linked_at) for device, key, linked_at in rows}


async def save_aliases(session: AsyncSession, *, app_id: str, aliases: Mapping[str, Alias]) -> None:
    """Store ``aliases`` (device id → alias) as decided by ``identity.route``. Links
    replace whatever was stored (one partition owns a device's events, so one batch at
    a time decides them); an anonymous alias is stored only where none or another
    anonymous one is."""
    if not aliases:
        return
    now = datetime.now(UTC)
    stmt = insert(DeviceAlias).values(
        [
            {
                "app_id": app_id,
                "device_id": device,
                "user_key": alias.user_key,
                "linked_at": alias.linked_at,
                "updated_at": now,
            }
            for device, alias in sorted(aliases.items())
        ]
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[DeviceAlias.app_id, DeviceAlias.device_id],
            set_={
                "user_key": stmt.excluded.user_key,
                "linked_at": stmt.excluded.linked_at,
                "updated_at": now,
            },
            # An anonymous alias is only ever a first one: it never replaces a link
            # (which a replica handling the device's events may have just stored).
            where=or_(
                not_(stmt.excluded.user_key.startswith(ANONYMOUS_PREFIX)),
                DeviceAlias.user_key.startswith(ANONYMOUS_PREFIX),
            ),
        )
    )


async def devices_of(session: AsyncSession, *, app_id: str, user_key: str) -> list[str]:
    """The devices whose alias names ``user_key``, sorted."""
    rows = await session.scalars(
        select(DeviceAlias.device_id)
        .where(DeviceAlias.app_id == app_id, DeviceAlias.user_key == user_key)
        .order_by(DeviceAlias.device_id)
    )
    return list(rows)


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


async def active_segments(session: AsyncSession, *, app_id: str) -> list[Segment]:
    rows = await session.scalars(
        select(Segment).where(Segment.app_id == app_id, Segment.status == "active")
    )
    return list(rows)


async def memberships(session: AsyncSession, *, app_id: str, user_key: str) -> set[str]:
    rows = await session.scalars(
        select(Membership.segment_id).where(
            Membership.app_id == app_id, Membership.user_key == user_key
        )
    )
    return set(rows)


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


async def enter(
    session: AsyncSession, *, app_id: str, segment_id: str, user_key: str, at: datetime
) -> None:
    await session.execute(
        insert(Membership)
        .values(app_id=app_id, segment_id=segment_id, user_key=user_key, entered_at=at)
        .on_conflict_do_nothing()
    )


async def leave(session: AsyncSession, *, app_id: str, segment_id: str, user_key: str) -> None:
    await session.execute(
        delete(Membership).where(
            Membership.app_id == app_id,
            Membership.segment_id == segment_id,
            Membership.user_key == user_key,
        )
    )


async def add_events(
    session: AsyncSession, *, app_id: str, user_key: str, events: Sequence[Event], now: datetime
) -> None:
    """Count ``events`` (first sightings only: the caller filters by ``first_sightings`` in
    the same transaction, which makes this exactly-once) into the daily counters, keep
    them as recent events, and prune this user's recent events past the retention."""
    increments = daily_counts(events)
    if increments:
        stmt = insert(DailyCounter).values(
            [
                {
                    "app_id": app_id,
                    "user_key": user_key,
                    "name": c.name,
                    "day": c.day,
                    "count": c.count,
                    "revenue": c.revenue,
                }
                for c in increments
            ]
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
    horizon = now - timedelta(days=RECENT_EVENTS_DAYS)
    recent = [e for e in events if e.ts >= horizon]
    if recent:
        await session.execute(
            insert(RecentEventRow)
            .values(
                [
                    {
                        "app_id": app_id,
                        "event_id": e.event_id,
                        "user_key": user_key,
                        "name": e.name,
                        "ts": e.ts,
                        "props": e.props,
                    }
                    for e in recent
                ]
            )
            .on_conflict_do_nothing()
        )
    await session.execute(
        delete(RecentEventRow).where(
            RecentEventRow.app_id == app_id,
            RecentEventRow.user_key == user_key,
            RecentEventRow.ts < horizon,
        )
    )


async def load_view(
    session: AsyncSession,
    *,
    app_id: str,
    user_key: str,
    state: ProfileState,
    counters: bool,
    recent: bool,
    segments: set[str],
) -> ProfileView:
    """The user's ``ProfileView``; counters and recent events only when asked for (the
    app's rules need them)."""
    rows: tuple[DailyCount, ...] = ()
    events: tuple[RecentEvent, ...] = ()
    if counters:
        result = await session.execute(
            select(
                DailyCounter.name, DailyCounter.day, DailyCounter.count, DailyCounter.revenue
            ).where(DailyCounter.app_id == app_id, DailyCounter.user_key == user_key)
        )
        rows = tuple(DailyCount(*row) for row in result)
    if recent:
        found = await session.execute(
            select(RecentEventRow.name, RecentEventRow.ts, RecentEventRow.props).where(
                RecentEventRow.app_id == app_id, RecentEventRow.user_key == user_key
            )
        )
        events = tuple(RecentEvent(*row) for row in found)
    return ProfileView(state=state, counters=rows, recent=events, segments=segments)
