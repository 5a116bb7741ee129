"""Attribution's tables: the clicks index and the install ledger (postbacks:
``postback_store.py``). Repo functions never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Index,
    String,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base
from libs.runtime.tables import Tracker
from libs.schemas.base import ANONYMOUS_PREFIX


class Click(Base):
    __tablename__ = "attribution_clicks"
    __table_args__ = (
        Index("ix_attribution_clicks_expires_at", "expires_at"),
        Index("ix_attribution_clicks_adid", "app_id", "adid", "ts"),
        Index("ix_attribution_clicks_fingerprint", "app_id", "fingerprint", "ts"),
        Index("ix_attribution_clicks_ip", "app_id", "tracker_token", "ip", "ts"),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    click_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tracker_token: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime]
    ip: Mapped[str | None] = mapped_column(String(64))
    adid: Mapped[str | None] = mapped_column(String(128))
    is_bot: Mapped[bool]
    expires_at: Mapped[datetime]
    user_agent: Mapped[str | None] = mapped_column(String(2048))
    # logic.fingerprint_key of (ip, user agent): matched against installs' fingerprints.
    fingerprint: Mapped[str | None] = mapped_column(String(600))
    kind: Mapped[str] = mapped_column(String(16), server_default="click")  # or impression


class Install(Base):
    """One row per install event: what it was attributed to, and the click it asked for."""

    __tablename__ = "attribution_installs"
    __table_args__ = (
        Index("ix_attribution_installs_device", "app_id", "device_id"),
        Index("ix_attribution_installs_user", "app_id", "user_key"),
        Index("ix_attribution_installs_ip", "app_id", "ip", "install_ts"),
        # Partial: installs with an advertising id, the few pending verification, and
        # those whose referrer named a click they did not get (the late-click upgrade's).
        # Queries spell the predicates out literally so every plan can use them.
        Index(
            "ix_attribution_installs_with_adid",
            "app_id",
            "adid",
            postgresql_where=text("adid IS NOT NULL"),
        ),
        Index(
            "ix_attribution_installs_pending",
            "app_id",
            "install_ts",
            postgresql_where=text("status = 'pending'"),
        ),
        # The verification sweep's claim across apps, oldest first (sweep.py).
        Index(
            "ix_attribution_installs_pending_due",
            "install_ts",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_attribution_installs_waiting",
            "app_id",
            "ref_click_id",
            postgresql_where=text("method <> 'click_id' AND ref_click_id IS NOT NULL"),
        ),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    install_event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    user_key: Mapped[str] = mapped_column(String(200))
    install_ts: Mapped[datetime]
    ref_click_id: Mapped[str | None] = mapped_column(String(128))
    attribution_id: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    tracker_token: Mapped[str | None] = mapped_column(String(32))
    click_id: Mapped[str | None] = mapped_column(String(128))
    attributed_at: Mapped[datetime]
    adid: Mapped[str | None] = mapped_column(String(128))
    # Kept for fraud review and for re-judging the install when a late click upgrades it.
    ip: Mapped[str | None] = mapped_column(String(64))
    install_begin_ts: Mapped[datetime | None]
    fraud_reasons: Mapped[list[str]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )


class Verification(Base):
    """The earliest verification of each user (the app's backend confirmed them)."""

    __tablename__ = "attribution_verifications"
    __table_args__ = (Index("ix_attribution_verifications_device", "app_id", "device_id"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    device_id: Mapped[str | None] = mapped_column(String(128))
    verified_at: Mapped[datetime]


class Erasure(Base):
    """Erasures carried out by attribution (``erasure.erase``): a redelivered erasure
    record does nothing, so it cannot erase what the user did after it. Keeps no user key."""

    __tablename__ = "attribution_erasures"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erasure_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    erased_at: Mapped[datetime]


class DeviceLink(Base):
    """The user a device belongs to, as the latest ``$identify`` or verification naming
    both said (a shared phone moves to its newest user)."""

    __tablename__ = "attribution_device_links"
    __table_args__ = (Index("ix_attribution_device_links_user", "app_id", "user_id"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    linked_at: Mapped[datetime]


async def record_verification(
    session: AsyncSession, *, app_id: str, user_id: str, device_id: str | None, at: datetime
) -> None:
    """Keep the earliest verification of the user (a replay or a later one changes
    nothing but may fill in a device id)."""
    stmt = insert(Verification).values(
        app_id=app_id, user_id=user_id, device_id=device_id, verified_at=at
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Verification.app_id, Verification.user_id],
            set_={
                "verified_at": func.least(Verification.verified_at, stmt.excluded.verified_at),
                "device_id": func.coalesce(Verification.device_id, stmt.excluded.device_id),
            },
        )
    )


async def verified_at(
    session: AsyncSession, *, app_id: str, user_key: str, device_id: str
) -> datetime | None:
    """When the install's user (by user id, or by the device a verification named) was
    first verified, or None."""
    return await session.scalar(
        select(func.min(Verification.verified_at)).where(
            Verification.app_id == app_id,
            or_(Verification.user_id == user_key, Verification.device_id == device_id),
        )
    )


# Inline, not a parameter: the partial index on pending installs serves generic plans too.
_PENDING = literal_column("'pending'")


async def pending_installs(
    session: AsyncSession, *, app_id: str, user_id: str | None = None, device_id: str | None = None
) -> list[Install]:
    """Installs of this user or device waiting for a verification. Locked, newest
    decisions win."""
    query = select(Install).where(
        Install.app_id == app_id,
        Install.status == _PENDING,
        or_(Install.user_key == user_id, Install.device_id == device_id),
    )
    # A fixed order: concurrent lockers of the same rows queue instead of deadlocking.
    return list(await session.scalars(query.order_by(Install.install_event_id).with_for_update()))


async def claim_overdue(session: AsyncSession, *, before: datetime, limit: int) -> list[Install]:
    """At most ``limit`` pending installs, of any app, installed before ``before``, oldest
    first, locked ``FOR UPDATE SKIP LOCKED`` (rows another transaction holds — a
    verification being applied, another replica's sweep — are skipped, not waited for).
    The sweep's claim: like a tenant list, the one query not scoped by an app."""
    query = (
        select(Install)
        .where(Install.status == _PENDING, Install.install_ts < before)
        .order_by(Install.install_ts)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(query))


async def earliest_pending(session: AsyncSession, *, since: datetime) -> datetime | None:
    """The install time of the oldest pending install, of any app, installed at or after
    ``since`` (the sweep's next due time)."""
    return await session.scalar(
        select(func.min(Install.install_ts)).where(
            Install.status == _PENDING, Install.install_ts >= since
        )
    )


async def find_click(session: AsyncSession, *, app_id: str, click_id: str) -> Click | None:
    """The indexed click, or None (not seen yet, or another app's)."""
    return await session.scalar(
        select(Click).where(Click.app_id == app_id, Click.click_id == click_id)
    )


async def find_install(
    session: AsyncSession, *, app_id: str, install_event_id: str
) -> Install | None:
    return await session.scalar(
        select(Install).where(
            Install.app_id == app_id, Install.install_event_id == install_event_id
        )
    )


async def tracker(session: AsyncSession, *, app_id: str, token: str) -> Tracker | None:
    return await session.scalar(
        select(Tracker).where(Tracker.app_id == app_id, Tracker.token == token)
    )


async def link_device(
    session: AsyncSession, *, app_id: str, device_id: str, user_id: str, at: datetime
) -> None:
    """Record that ``device_id`` belongs to ``user_id`` as of ``at``; an older statement
    never replaces a newer one (out-of-order events are harmless)."""
    stmt = insert(DeviceLink).values(
        app_id=app_id, device_id=device_id, user_id=user_id, linked_at=at
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[DeviceLink.app_id, DeviceLink.device_id],
            set_={"user_id": stmt.excluded.user_id, "linked_at": stmt.excluded.linked_at},
            where=DeviceLink.linked_at <= stmt.excluded.linked_at,
        )
    )


async def anonymous_installs(
    session: AsyncSession, *, app_id: str, device_id: str
) -> list[Install]:
    """The device's installs still recorded under its anonymous key ``d:<device_id>``."""
    rows = await session.scalars(
        select(Install).where(
            Install.app_id == app_id,
            Install.device_id == device_id,
            Install.user_key == ANONYMOUS_PREFIX + device_id,
        )
    )
    return list(rows)


async def user_installs(session: AsyncSession, *, app_id: str, user_key: str) -> list[Install]:
    """Every install recorded for the user, oldest first (ties by install event id)."""
    rows = await session.scalars(
        select(Install)
        .where(Install.app_id == app_id, Install.user_key == user_key)
        .order_by(Install.install_ts, Install.install_event_id)
    )
    return list(rows)


def click_lock(app_id: str, click_id: str) -> tuple[str, str, str]:
    """The advisory-lock key (``postgres.lock_all``) serialising the two paths that meet
    on one click id — an install naming it and the click itself arriving — across
    replicas, so neither misses the other."""
    return ("click", app_id, click_id)


def device_lock(app_id: str, device_id: str) -> tuple[str, str, str]:
    """The advisory-lock key holding the device's installs and link."""
    return (app_id, "attribution-device", device_id)


def _insert_json(table: Any, conflict: str) -> Any:
    """``INSERT INTO table (every column) SELECT … FROM jsonb_populate_recordset(…)``: one
    statement with one parameter — a JSON array of row objects, typed by the table — for
    any number of rows (cheaper to send than one array per column)."""
    names = ", ".join(c.name for c in table.columns)
    return text(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM "
        f"jsonb_populate_recordset(CAST(NULL AS {table.name}), CAST(:rows AS jsonb)) {conflict}"
    )


def _rows(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {"rows": orjson.dumps(rows).decode()}


_INSERT_CLICKS = _insert_json(Click.__table__, "ON CONFLICT DO NOTHING")
_UPSERT_INSTALLS = _insert_json(
    Install.__table__,
    "ON CONFLICT (app_id, install_event_id) DO UPDATE SET "
    + ", ".join(
        f"{c.name} = EXCLUDED.{c.name}" for c in Install.__table__.columns if not c.primary_key
    ),
)


async def record_clicks(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Insert clicks (dicts with every column) in one statement; a replayed click id
    changes nothing."""
    if rows:
        await session.execute(_INSERT_CLICKS, _rows(rows))


async def save_installs(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert the ledger rows of install events (dicts with every column, keyed by app
    and install event id) in one statement. At most one row per key: the caller keeps
    the last decision of an install decided twice."""
    if rows:
        await session.execute(_UPSERT_INSTALLS, _rows(rows))
