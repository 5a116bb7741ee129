"""Segmenter's tables: profiles (in ``libs.runtime.tables``, read by others), processed
events and segment memberships. Repo functions never commit."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base, lock
from libs.runtime.tables import DeviceAlias, Profile, Segment
from services.segmenter.logic import ProfileState


class SeenEvent(Base):
    """Event ids already folded into a profile: replays change nothing."""

    __tablename__ = "segmenter_seen_events"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime]


class Membership(Base):
    __tablename__ = "segment_memberships"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    entered_at: Mapped[datetime]


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


async def load_profile(session: AsyncSession, *, app_id: str, user_key: str) -> ProfileState | None:
    """The profile, locked for this transaction (one writer per user at a time), or None.

    The advisory lock also covers a profile that does not exist yet, so two replicas
    that both see it missing cannot both create it and lose one another's update.
    """
    await lock(session, "profile", app_id, user_key)
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


async def set_alias(session: AsyncSession, *, app_id: str, device_id: str, user_key: str) -> None:
    """Point ``device_id`` at ``user_key`` (the latest identity seen on the device wins)."""
    now = datetime.now(UTC)
    stmt = insert(DeviceAlias).values(
        app_id=app_id, device_id=device_id, user_key=user_key, updated_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[DeviceAlias.app_id, DeviceAlias.device_id],
            set_={"user_key": stmt.excluded.user_key, "updated_at": now},
            where=DeviceAlias.user_key != stmt.excluded.user_key,
        )
    )


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
