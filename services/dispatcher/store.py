"""Dispatcher's tables: the send ledger (one row per job id) and the log outbox.
Reads profiles (written by segmenter) for personalisation. Never commits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tables import Profile


class SendLedger(Base):
    __tablename__ = "dispatcher_send_ledger"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(256))
    error: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Outbox(Base):
    __tablename__ = "dispatcher_outbox"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


async def claim(
    session: AsyncSession, *, app_id: str, job_id: str, user_key: str, channel: str
) -> bool:
    """Insert the ledger row of ``job_id``; False when the job was handled before."""
    now = datetime.now(UTC)
    claimed = await session.scalar(
        insert(SendLedger)
        .values(
            app_id=app_id,
            job_id=job_id,
            user_key=user_key,
            channel=channel,
            status="processing",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(SendLedger.job_id)
    )
    return claimed is not None


async def finish(
    session: AsyncSession,
    *,
    app_id: str,
    job_id: str,
    status: str,
    provider: str | None,
    provider_message_id: str | None,
    error: str | None,
) -> None:
    row = await session.get(SendLedger, (app_id, job_id))
    if row is None:
        raise LookupError(f"no ledger row for job {job_id}")
    row.status = status
    row.provider = provider
    row.provider_message_id = provider_message_id
    row.error = error
    row.updated_at = datetime.now(UTC)


async def record_outbox(
    session: AsyncSession,
    *,
    app_id: str,
    job_id: str,
    user_key: str,
    channel: str,
    title: str | None,
    body: str,
    url: str | None,
    data: dict[str, str],
    message_id: str,
) -> None:
    await session.execute(
        insert(Outbox)
        .values(
            app_id=app_id,
            job_id=job_id,
            user_key=user_key,
            channel=channel,
            title=title,
            body=body,
            url=url,
            data=data,
            message_id=message_id,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing()
    )


async def profile_context(session: AsyncSession, *, app_id: str, user_key: str) -> dict[str, Any]:
    """The profile fields templates may use; empty for a user with no profile yet."""
    row = await session.get(Profile, (app_id, user_key))
    if row is None:
        return {"user_key": user_key, "attributes": {}}
    return {
        "user_key": user_key,
        "user_id": row.user_id,
        "attributes": dict(row.attributes),
        "platform": row.platform,
        "locale": row.locale,
        "timezone": row.timezone,
    }
