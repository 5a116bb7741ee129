"""The postbacks consumer's tables — every call made to a network, and the in-app events
waiting for their install — and its reads of the install ledger and the trackers.
Repo functions never commit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Identity,
    Index,
    Integer,
    String,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tables import Tracker
from services.attribution.store import Install


class PostbackAttempt(Base):
    """Every call made to a network's postback URL, and how it went. ``url`` is the
    template (what identifies "this postback" across replays); ``event_id`` is None for
    an install's postback, else the in-app event's id (``attribution_id`` and ``status``
    are then those of the install it was credited to)."""

    __tablename__ = "attribution_postbacks"
    __table_args__ = (
        Index("ix_attribution_postbacks_attribution", "app_id", "attribution_id", "status"),
        Index("ix_attribution_postbacks_event", "app_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64))
    attribution_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(4096))
    attempt: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(1024))
    delivered: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]
    event_id: Mapped[str | None] = mapped_column(String(128))


class PostbackHold(Base):
    """A chosen in-app event waiting for its install to be attributed (not recorded
    yet, or pending verification); deleted once posted back, dropped, or expired."""

    __tablename__ = "attribution_postback_holds"
    __table_args__ = (
        Index("ix_attribution_postback_holds_device", "app_id", "device_id"),
        Index("ix_attribution_postback_holds_user", "app_id", "user_id"),
        Index("ix_attribution_postback_holds_held_at", "app_id", "held_at"),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    adid: Mapped[str | None] = mapped_column(String(128))
    ts: Mapped[datetime]
    revenue: Mapped[float | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    held_at: Mapped[datetime]


async def delivered_postbacks(
    session: AsyncSession, *, app_id: str, attribution_id: str, status: str
) -> set[str]:
    """Install postback templates already delivered for this attribution in this status
    (a replay skips them)."""
    rows = await session.scalars(
        select(PostbackAttempt.url).where(
            PostbackAttempt.app_id == app_id,
            PostbackAttempt.attribution_id == attribution_id,
            PostbackAttempt.status == status,
            PostbackAttempt.event_id.is_(None),
            PostbackAttempt.delivered.is_(True),
        )
    )
    return set(rows)


async def delivered_event_postbacks(
    session: AsyncSession, *, app_id: str, event_ids: Collection[str]
) -> set[tuple[str, str]]:
    """``(event_id, template)`` of the given events' postbacks already delivered (a
    replayed event skips them)."""
    if not event_ids:
        return set()
    rows = await session.execute(
        select(PostbackAttempt.event_id, PostbackAttempt.url).where(
            PostbackAttempt.app_id == app_id,
            PostbackAttempt.event_id.in_(event_ids),
            PostbackAttempt.delivered.is_(True),
        )
    )
    return {(event_id, url) for event_id, url in rows if event_id is not None}


async def record_postback(session: AsyncSession, **values: Any) -> None:
    """Add one attempt (the caller's transaction makes it durable)."""
    session.add(PostbackAttempt(**values))


async def event_trackers(session: AsyncSession, *, app_id: str) -> list[Tracker]:
    """The app's trackers that post back at least one in-app event."""
    rows = await session.scalars(
        select(Tracker).where(
            Tracker.app_id == app_id, func.jsonb_array_length(Tracker.postback_events) > 0
        )
    )
    return list(rows)


async def installs_of(
    session: AsyncSession, *, app_id: str, device_id: str | None, user_id: str | None
) -> list[Install]:
    """The ledger's installs of the device; when it has none (or there is no device),
    those of the user (``user_key`` = ``user_id``, which a login restates the device's
    installs to)."""
    if device_id is not None:
        rows = list(
            await session.scalars(
                select(Install).where(Install.app_id == app_id, Install.device_id == device_id)
            )
        )
        if rows or user_id is None:
            return rows
    if user_id is None:
        return []
    return list(
        await session.scalars(
            select(Install).where(Install.app_id == app_id, Install.user_key == user_id)
        )
    )


async def hold(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Hold events for their install; a replayed event is held once."""
    if rows:
        await session.execute(insert(PostbackHold).values(list(rows)).on_conflict_do_nothing())


async def held_for(
    session: AsyncSession, *, app_id: str, device_id: str, user_key: str
) -> list[PostbackHold]:
    """The held events of the device, or of the user (``user_key`` matched against the
    events' ``user_id``), oldest first."""
    rows = await session.scalars(
        select(PostbackHold)
        .where(
            PostbackHold.app_id == app_id,
            or_(PostbackHold.device_id == device_id, PostbackHold.user_id == user_key),
        )
        .order_by(PostbackHold.ts, PostbackHold.event_id)
    )
    return list(rows)


async def release(session: AsyncSession, *, app_id: str, event_ids: Collection[str]) -> None:
    """Forget held events (posted back or dropped)."""
    if event_ids:
        await session.execute(
            delete(PostbackHold).where(
                PostbackHold.app_id == app_id, PostbackHold.event_id.in_(event_ids)
            )
        )


async def expire_holds(session: AsyncSession, *, app_id: str, before: datetime) -> None:
    """Drop the app's events held since before ``before``: their install was never
    attributed in time."""
    await session.execute(
        delete(PostbackHold).where(PostbackHold.app_id == app_id, PostbackHold.held_at < before)
    )
