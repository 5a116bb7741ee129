"""Attribution's tables: the clicks index and the install ledger (postbacks:
``postback_store.py``). Repo functions never commit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, String, func, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base, lock
from libs.runtime.tables import Tracker
from libs.runtime.tenancy import App
from libs.schemas.base import ANONYMOUS_PREFIX
from services.attribution.logic import Windows
from services.attribution.outcomes import History


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
        Index("ix_attribution_installs_ref_click", "app_id", "ref_click_id"),
        Index("ix_attribution_installs_device", "app_id", "device_id"),
        Index("ix_attribution_installs_adid", "app_id", "adid"),
        Index("ix_attribution_installs_user", "app_id", "user_key"),
        Index("ix_attribution_installs_status", "app_id", "status"),
        Index("ix_attribution_installs_ip", "app_id", "ip", "install_ts"),
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


class DeviceLink(Base):
    """The user a device belongs to, as the latest ``$identify`` or verification naming
    both said (a shared phone moves to its newest user)."""

    __tablename__ = "attribution_device_links"

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


async def pending_installs(
    session: AsyncSession,
    *,
    app_id: str,
    user_id: str | None = None,
    device_id: str | None = None,
    older_than: datetime | None = None,
) -> list[Install]:
    """Installs waiting for a verification: of this user or device, or (sweep) all those
    installed before ``older_than``. Locked, newest decisions win."""
    query = select(Install).where(Install.app_id == app_id, Install.status == "pending")
    if older_than is not None:
        query = query.where(Install.install_ts < older_than)
    else:
        query = query.where(or_(Install.user_key == user_id, Install.device_id == device_id))
    # A fixed order: concurrent lockers of the same rows queue instead of deadlocking.
    return list(await session.scalars(query.order_by(Install.install_event_id).with_for_update()))


async def apps_with_pending(session: AsyncSession) -> list[str]:
    """Apps that have installs waiting for verification (the sweep's tenant list)."""
    return list(
        await session.scalars(select(Install.app_id).where(Install.status == "pending").distinct())
    )


async def record_clicks(session: AsyncSession, *, rows: list[dict[str, Any]]) -> None:
    """Insert clicks; a replayed click id changes nothing."""
    if rows:
        await session.execute(insert(Click).values(rows).on_conflict_do_nothing())


async def lock_device(session: AsyncSession, *, app_id: str, device_id: str) -> None:
    """Hold the device's installs and link until the transaction ends (re-entrant)."""
    await lock(session, app_id, "attribution-device", device_id)


async def lock_click(session: AsyncSession, *, app_id: str, click_id: str) -> None:
    """Serialise the two paths that meet on one click id — an install naming it and the
    click itself arriving — across replicas, so neither misses the other."""
    await lock(session, "click", app_id, click_id)


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


MAX_CANDIDATES = 20


async def clicks_by(
    session: AsyncSession,
    *,
    app_id: str,
    adid: str | None,
    fingerprint: str | None,
    since: datetime,
    until: datetime,
) -> list[Click]:
    """Recent clicks (newest first, at most MAX_CANDIDATES per key) with the install's
    advertising id or fingerprint, in [since, until] — the candidates ``logic.match``
    chooses from."""
    found: list[Click] = []
    for column, value in ((Click.adid, adid), (Click.fingerprint, fingerprint)):
        if value is None:
            continue
        found.extend(
            await session.scalars(
                select(Click)
                .where(
                    Click.app_id == app_id, column == value, Click.ts >= since, Click.ts <= until
                )
                .order_by(Click.ts.desc())
                .limit(MAX_CANDIDATES)
            )
        )
    return found


async def history(
    session: AsyncSession,
    *,
    app_id: str,
    install_event_id: str,
    adid: str | None,
    user_key: str,
    before: datetime,
) -> History:
    """What earlier installs of the app say about this device and user. Rejected (fraud)
    installs say nothing: they were never counted, so they do not make a later honest
    install of the device a reinstall."""
    adid_seen = False
    if adid is not None:
        adid_seen = bool(
            await session.scalar(
                select(Install.install_event_id)
                .where(
                    Install.app_id == app_id,
                    Install.adid == adid,
                    Install.install_event_id != install_event_id,
                    Install.install_ts <= before,
                    Install.status != "rejected",
                )
                .limit(1)
            )
        )
    earlier: list[Install] = []
    if not user_key.startswith("d:"):
        earlier = list(
            await session.scalars(
                select(Install)
                .where(
                    Install.app_id == app_id,
                    Install.user_key == user_key,
                    Install.install_event_id != install_event_id,
                    Install.install_ts <= before,
                    Install.status != "rejected",
                )
                .order_by(Install.install_ts)
            )
        )
    original = next((i.tracker_token for i in earlier if i.status != "rejected"), None)
    return History(
        adid_seen=adid_seen,
        user_seen=bool(earlier),
        user_adids=frozenset(i.adid for i in earlier if i.adid),
        last_active=max((i.install_ts for i in earlier), default=None),
        original_tracker=original,
    )


async def installs_waiting_for(
    session: AsyncSession, *, app_id: str, click_id: str
) -> list[Install]:
    """Installs whose referrer named ``click_id`` but that were attributed otherwise
    (organic, or a weaker method) because the click arrived after them."""
    rows = await session.scalars(
        select(Install).where(
            Install.app_id == app_id, Install.ref_click_id == click_id, Install.method != "click_id"
        )
    )
    return list(rows)


async def save_install(session: AsyncSession, *, values: dict[str, Any]) -> None:
    """Upsert the ledger row of one install event (keyed by app and install event id)."""
    stmt = insert(Install).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Install.app_id, Install.install_event_id],
            set_={k: stmt.excluded[k] for k in values if k not in ("app_id", "install_event_id")},
        )
    )


async def tracker_windows(
    session: AsyncSession, *, app_id: str, tokens: set[str]
) -> dict[str, Windows]:
    """Each tracker's attribution windows, as its admin configured them."""
    if not tokens:
        return {}
    rows = await session.scalars(
        select(Tracker).where(Tracker.app_id == app_id, Tracker.token.in_(tokens))
    )
    return {
        t.token: Windows(
            click=timedelta(hours=t.click_window_hours),
            fingerprint=timedelta(hours=t.fingerprint_window_hours),
            view=timedelta(hours=t.view_window_hours),
        )
        for t in rows
    }


async def tracker(session: AsyncSession, *, app_id: str, token: str) -> Tracker | None:
    return await session.scalar(
        select(Tracker).where(Tracker.app_id == app_id, Tracker.token == token)
    )


async def app_fraud_settings(session: AsyncSession, *, app_id: str) -> tuple[dict[str, Any], bool]:
    """The app's stored fraud settings (admin's ``apps.fraud``) and whether it requires
    signed SDK requests; ``({}, False)`` for an unknown app."""
    row = (
        await session.execute(select(App.fraud, App.require_signature).where(App.id == app_id))
    ).first()
    return (dict(row.fraud or {}), bool(row.require_signature)) if row else ({}, False)


async def clicks_in_hour(
    session: AsyncSession,
    *,
    app_id: str,
    tracker_token: str,
    ip: str | None,
    adid: str | None,
    until: datetime,
) -> int:
    """The most clicks on ``tracker_token`` from this IP, or from this advertising id, in
    the hour up to and including ``until`` (None skips a key) — the click-spamming count."""
    most = 0
    for column, value in ((Click.ip, ip), (Click.adid, adid)):
        if value is None:
            continue
        n = await session.scalar(
            select(func.count()).where(
                Click.app_id == app_id,
                Click.tracker_token == tracker_token,
                column == value,
                Click.kind == "click",
                Click.ts > until - timedelta(hours=1),
                Click.ts <= until,
            )
        )
        most = max(most, n or 0)
    return most


async def installs_from_ip(
    session: AsyncSession, *, app_id: str, ip: str, install_event_id: str, until: datetime
) -> int:
    """Counted (not rejected) installs from ``ip`` in the hour up to and including
    ``until``, plus the one judged (``install_event_id``), recorded or not."""
    others = await session.scalar(
        select(func.count()).where(
            Install.app_id == app_id,
            Install.ip == ip,
            Install.install_event_id != install_event_id,
            # Rejected ones do not count: forged copies anyone can send with the public SDK
            # key must not push honest installs from a shared address over the limit.
            Install.status != "rejected",
            Install.install_ts > until - timedelta(hours=1),
            Install.install_ts <= until,
        )
    )
    return (others or 0) + 1


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


async def linked_user(session: AsyncSession, *, app_id: str, device_id: str) -> str | None:
    return await session.scalar(
        select(DeviceLink.user_id).where(
            DeviceLink.app_id == app_id, DeviceLink.device_id == device_id
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
