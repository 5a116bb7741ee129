"""Ingest's Postgres: the replay memory of signed SDK requests (its own table), and the
apps' signing settings (admin's tables, read through a short per-process cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Index, String, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tenancy import CACHE_TTL_S, App, SdkSecret


class SeenSignature(Base):
    """A signature ingest accepted: the same signature again is a replay. Kept for
    ``2 * skew`` — after that its timestamp is stale anyway."""

    __tablename__ = "ingest_signatures"
    __table_args__ = (Index("ix_ingest_signatures_seen_at", "app_id", "seen_at"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime]


@dataclass(frozen=True, slots=True)
class Signing:
    """An app's signing settings: whether SDK requests must be signed, and the active
    secrets (several during a rotation)."""

    required: bool
    secrets: tuple[str, ...]


NOT_REQUIRED = Signing(False, ())


class SigningSettings:
    """Each app's :class:`Signing`, cached per process for ``CACHE_TTL_S`` seconds: a
    change in admin (signing turned on, a secret revoked) takes effect within that time.
    One query per app per period; never raises for an unknown app (not required)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, tuple[float, Signing]] = {}

    async def of(self, app_id: str) -> Signing:
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached is not None and cached[0] >= now:
            return cached[1]
        async with self._sessions() as session:
            required = await session.scalar(select(App.require_signature).where(App.id == app_id))
            secrets = (
                await session.scalars(
                    select(SdkSecret.secret)
                    .where(SdkSecret.app_id == app_id, SdkSecret.revoked_at.is_(None))
                    .order_by(SdkSecret.created_at.desc())
                )
            ).all()
        signing = Signing(bool(required), tuple(secrets)) if required else NOT_REQUIRED
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[app_id] = (now + CACHE_TTL_S, signing)
        return signing


async def claim_signature(
    session: AsyncSession, *, app_id: str, signature: str, now: datetime, keep: timedelta
) -> bool:
    """Record a signature before its request's records are published; False when it was
    recorded already (a replay, or the same request arriving twice at once). Also forgets
    the app's signatures older than ``keep`` (indexed by app and time), so the table
    holds about ``keep`` worth of requests. Does not commit."""
    claimed = await session.scalar(
        insert(SeenSignature)
        .values(app_id=app_id, signature=signature, seen_at=now)
        .on_conflict_do_nothing()
        .returning(SeenSignature.signature)
    )
    await session.execute(
        delete(SeenSignature).where(
            SeenSignature.app_id == app_id, SeenSignature.seen_at < now - keep
        )
    )
    return claimed is not None


async def release_signature(session: AsyncSession, *, app_id: str, signature: str) -> None:
    """Forget a claimed signature whose request failed to publish, so that the SDK's retry
    of the same request is not taken for a replay. Does not commit."""
    await session.execute(
        delete(SeenSignature).where(
            SeenSignature.app_id == app_id, SeenSignature.signature == signature
        )
    )
