"""Journey's tables: runs. Reads the ``journeys`` catalog (written by admin)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tables import Journey


class JourneyRun(Base):
    __tablename__ = "journey_runs"
    __table_args__ = (Index("ix_journey_runs_user", "app_id", "user_key"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32))
    user_key: Mapped[str] = mapped_column(String(200))
    trigger_change_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]


async def active_journeys(session: AsyncSession, *, app_id: str) -> list[Journey]:
    rows = await session.scalars(
        select(Journey).where(Journey.app_id == app_id, Journey.status == "active")
    )
    return list(rows)


async def journeys_run_for(session: AsyncSession, *, app_id: str, user_key: str) -> set[str]:
    """The journeys that have a run for ``user_key``."""
    rows = await session.scalars(
        select(JourneyRun.journey_id)
        .where(JourneyRun.app_id == app_id, JourneyRun.user_key == user_key)
        .distinct()
    )
    return set(rows)


async def start_run(
    session: AsyncSession,
    *,
    app_id: str,
    run_id: str,
    journey_id: str,
    user_key: str,
    change_id: str,
    at: datetime,
) -> None:
    """Insert the run; a replay of the same trigger leaves the existing row alone."""
    await session.execute(
        insert(JourneyRun)
        .values(
            app_id=app_id,
            run_id=run_id,
            journey_id=journey_id,
            user_key=user_key,
            trigger_change_id=change_id,
            status="completed",
            started_at=at,
        )
        .on_conflict_do_nothing()
    )
