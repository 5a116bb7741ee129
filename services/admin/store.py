"""Admin writes the configuration catalog (``libs.runtime.tables``) and reads profiles
and memberships for the per-user view. Every query is scoped by ``app_id``; repo
functions never commit (the request's ``SessionDep`` does)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.tables import Journey, Profile, Segment, Tracker
from libs.runtime.tenancy import SdkSecret

TOKEN_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
TOKEN_LENGTH = 10


def new_token() -> str:
    """10 characters from a 57-letter alphabet: 58 bits, short enough for a bio link."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


async def create_tracker(session: AsyncSession, *, app_id: str, values: dict[str, Any]) -> Tracker:
    now = datetime.now(UTC)
    tracker = Tracker(
        token=new_token(), app_id=app_id, status="active", created_at=now, updated_at=now, **values
    )
    session.add(tracker)
    await session.flush()
    return tracker


async def update_tracker(
    session: AsyncSession, *, tracker: Tracker, values: dict[str, Any]
) -> None:
    """Apply ``values`` to a tracker already loaded for its app (scoped by the caller)."""
    for name, value in values.items():
        setattr(tracker, name, value)
    tracker.updated_at = datetime.now(UTC)
    await session.flush()


async def list_trackers(session: AsyncSession, *, app_id: str) -> list[Tracker]:
    rows = await session.scalars(
        select(Tracker).where(Tracker.app_id == app_id).order_by(Tracker.created_at)
    )
    return list(rows)


async def get_tracker(session: AsyncSession, *, app_id: str, token: str) -> Tracker | None:
    return await session.scalar(
        select(Tracker).where(Tracker.app_id == app_id, Tracker.token == token)
    )


async def create_segment(
    session: AsyncSession, *, app_id: str, name: str, rule: dict[str, Any]
) -> Segment:
    now = datetime.now(UTC)
    segment = Segment(
        id=new_id("seg"),
        app_id=app_id,
        name=name,
        rule=rule,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    await session.flush()
    return segment


async def get_segment(session: AsyncSession, *, app_id: str, segment_id: str) -> Segment | None:
    return await session.scalar(
        select(Segment).where(Segment.app_id == app_id, Segment.id == segment_id)
    )


async def list_segments(session: AsyncSession, *, app_id: str) -> list[Segment]:
    rows = await session.scalars(
        select(Segment).where(Segment.app_id == app_id).order_by(Segment.created_at)
    )
    return list(rows)


async def create_journey(
    session: AsyncSession,
    *,
    app_id: str,
    name: str,
    trigger: dict[str, Any],
    definition: dict[str, Any],
) -> Journey:
    now = datetime.now(UTC)
    journey = Journey(
        id=new_id("jrn"),
        app_id=app_id,
        name=name,
        trigger=trigger,
        definition=definition,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    await session.flush()
    return journey


async def get_journey(session: AsyncSession, *, app_id: str, journey_id: str) -> Journey | None:
    return await session.scalar(
        select(Journey).where(Journey.app_id == app_id, Journey.id == journey_id)
    )


async def get_profile(session: AsyncSession, *, app_id: str, user_key: str) -> Profile | None:
    return await session.scalar(
        select(Profile).where(Profile.app_id == app_id, Profile.user_key == user_key)
    )


async def segment_ids_of(session: AsyncSession, *, app_id: str, user_key: str) -> list[str]:
    # segment_memberships belongs to segmenter; admin reads it by name, not by class,
    # because services never import each other.
    rows = await session.execute(
        text(
            "SELECT segment_id FROM segment_memberships "
            "WHERE app_id = :app_id AND user_key = :user_key ORDER BY segment_id"
        ),
        {"app_id": app_id, "user_key": user_key},
    )
    return [r[0] for r in rows]


SECRET_BYTES = 32


async def sdk_secrets(session: AsyncSession, *, app_id: str) -> list[SdkSecret]:
    """The app's SDK secrets, newest first, revoked ones included."""
    rows = await session.scalars(
        select(SdkSecret).where(SdkSecret.app_id == app_id).order_by(SdkSecret.created_at.desc())
    )
    return list(rows)


async def create_sdk_secret(session: AsyncSession, *, app_id: str) -> tuple[SdkSecret, str]:
    """A new active secret (256 random bits, URL-safe text) and its value — the only time
    the value leaves the database. Does not commit."""
    value = secrets.token_urlsafe(SECRET_BYTES)
    row = SdkSecret(
        id=new_id("sec"), app_id=app_id, secret=value, created_at=datetime.now(UTC), revoked_at=None
    )
    session.add(row)
    await session.flush()
    return row, value


async def revoke_sdk_secret(session: AsyncSession, *, secret: SdkSecret) -> None:
    secret.revoked_at = datetime.now(UTC)
    await session.flush()
