"""The table of per-app provider credentials and its repo functions. Never commits.

Written by the dispatcher's admin endpoints (``credentials_api.py``); read by its
provider registry. ``sealed`` holds the envelope-encrypted secret
(``credentials.Sealer``); ``config`` and ``metadata`` hold nothing secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from services.dispatcher.credentials import Checked, Sealer


class ProviderCredential(Base):
    __tablename__ = "dispatcher_provider_credentials"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    config: Mapped[dict[str, Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    sealed: Mapped[str] = mapped_column(Text)
    # The master key the secret is sealed for (rotation: rows still on an old key).
    key_id: Mapped[str] = mapped_column(String(16))
    # Bumped on every change: the registry rebuilds a provider whose version moved.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    secret_rotated_at: Mapped[datetime]


async def get(
    session: AsyncSession, *, app_id: str, provider: str, for_update: bool = False
) -> ProviderCredential | None:
    return await session.get(ProviderCredential, (app_id, provider), with_for_update=for_update)


async def list_for_app(session: AsyncSession, *, app_id: str) -> list[ProviderCredential]:
    rows = await session.scalars(
        select(ProviderCredential)
        .where(ProviderCredential.app_id == app_id)
        .order_by(ProviderCredential.provider)
    )
    return list(rows)


async def versions(session: AsyncSession, *, app_id: str) -> dict[str, tuple[int, bool]]:
    """provider → (version, enabled) of the app's credentials: the registry's cheap
    check of whether anything changed."""
    rows = await session.execute(
        select(
            ProviderCredential.provider, ProviderCredential.version, ProviderCredential.enabled
        ).where(ProviderCredential.app_id == app_id)
    )
    return {p: (v, e) for p, v, e in rows}


async def put(
    session: AsyncSession, *, app_id: str, checked: Checked, sealer: Sealer, enabled: bool = True
) -> tuple[ProviderCredential, bool]:
    """Create or replace the app's credential for ``checked.provider``; (row, created)."""
    now = datetime.now(UTC)
    sealed = sealer.seal(checked.secret, app_id=app_id, provider=checked.provider)
    row = await get(session, app_id=app_id, provider=checked.provider, for_update=True)
    if row is None:
        row = ProviderCredential(
            app_id=app_id,
            provider=checked.provider,
            enabled=enabled,
            config=checked.config,
            metadata_=checked.metadata,
            sealed=sealed,
            key_id=sealer.key_id,
            version=1,
            created_at=now,
            updated_at=now,
            secret_rotated_at=now,
        )
        session.add(row)
        await session.flush()
        return row, True
    row.config, row.metadata_, row.enabled = checked.config, checked.metadata, enabled
    row.sealed, row.key_id = sealed, sealer.key_id
    row.version += 1
    row.updated_at = row.secret_rotated_at = now
    await session.flush()
    return row, False


async def update(
    session: AsyncSession,
    *,
    row: ProviderCredential,
    config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    enabled: bool | None = None,
    sealed: tuple[str, str] | None = None,
) -> ProviderCredential:
    """Change a row in place; ``sealed`` is (sealed secret, key id) of a rotation."""
    now = datetime.now(UTC)
    if config is not None:
        row.config = config
    if metadata is not None:
        row.metadata_ = metadata
    if enabled is not None:
        row.enabled = enabled
    if sealed is not None:
        row.sealed, row.key_id = sealed
        row.secret_rotated_at = now
    row.version += 1
    row.updated_at = now
    await session.flush()
    return row


async def delete(session: AsyncSession, *, row: ProviderCredential) -> None:
    await session.delete(row)
    await session.flush()
