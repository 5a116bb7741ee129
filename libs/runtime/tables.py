"""ORM classes of the tables that more than one service touches.

Each table has exactly one writer, named in its docstring; the others only read. A
service's private tables live in its own ``store.py``. Every query filters by ``app_id``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from libs.runtime.postgres import Base


class Tracker(Base):
    """A tracker link. Written by admin; read by tracker and attribution."""

    __tablename__ = "trackers"

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    store_url: Mapped[str] = mapped_column(String(2048))
    network: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    adgroup: Mapped[str | None] = mapped_column(String(200))
    creative: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Attribution windows: click-through, fingerprint, view-through.
    click_window_hours: Mapped[int] = mapped_column(Integer, server_default="168")
    fingerprint_window_hours: Mapped[int] = mapped_column(Integer, server_default="24")
    view_window_hours: Mapped[int] = mapped_column(Integer, server_default="24")
    # on_install | on_verification (count only once the app's backend verified the user)
    counting: Mapped[str] = mapped_column(String(16), server_default="on_install")
    cost_model: Mapped[str | None] = mapped_column(String(16))  # cpi | total
    cost_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 4))
    cost_currency: Mapped[str | None] = mapped_column(String(3))
    # Install postbacks ({event} is "install"), and the templates of the chosen in-app
    # events unless ``event_postback_urls`` gives an event its own.
    postback_urls: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Names of the in-app events posted back, as the app sends them ("$purchase").
    postback_events: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # {event name: [URL template, ...]} for chosen events that have their own endpoints.
    event_postback_urls: Mapped[dict[str, list[str]]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    # Domains a click's ?redirect= may point to (no open redirect).
    redirect_domains: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))


class Segment(Base):
    """A rule-based segment. Written by admin; read by segmenter."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    rule: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Journey(Base):
    """An automated journey (or a broadcast: a one-node scheduled journey). Written by
    admin; read by journey. ``trigger`` and ``definition`` are the current version's
    (``libs.journeys``); every version ever activated is kept in ``journey_versions``.
    Status: draft → active ⇄ paused → archived (or cancelled, for a broadcast)."""

    __tablename__ = "journeys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[dict[str, Any]]
    definition: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="active")
    # The version new runs enter; a running user stays on the version they entered.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    # journey | broadcast
    kind: Mapped[str] = mapped_column(String(16), server_default="journey")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JourneyVersion(Base):
    """One immutable version of a journey's trigger and definition. Written by admin
    (a new row on every change of either); read by journey."""

    __tablename__ = "journey_versions"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[dict[str, Any]]
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Template(Base):
    """A message template with a variant per locale. Written by admin; read by the
    dispatcher (rendering) and journey (validation, dry runs)."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The channel it is written for; None: any channel (the content fits them all).
    channel: Mapped[str | None] = mapped_column(String(16))
    # Consent category of what it sends ("promotions"); None: general marketing.
    category: Mapped[str | None] = mapped_column(String(64))
    # {locale: {"title", "body", "url", "data", "subject", ...}}: MessageContent per
    # locale ("fa-IR", "en"); ``default_locale`` is used when the user's has none.
    variants: Mapped[dict[str, Any]]
    default_locale: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Bumped on every edit; a receipt's render can be traced to the version it used.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Profile(Base):
    """One user of one app. Written by segmenter; read by admin and dispatcher."""

    __tablename__ = "profiles"
    __table_args__ = (Index("ix_profiles_app_user_id", "app_id", "user_id"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    attributes: Mapped[dict[str, Any]]
    # name → [ISO time, op] of each attribute's latest write (services/segmenter/logic.py)
    attribute_writes: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    first_seen: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    platform: Mapped[str | None] = mapped_column(String(16))
    app_version: Mapped[str | None] = mapped_column(String(256))
    os_version: Mapped[str | None] = mapped_column(String(256))
    device_model: Mapped[str | None] = mapped_column(String(256))
    locale: Mapped[str | None] = mapped_column(String(256))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attribution: Mapped[dict[str, Any] | None]
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    purchases: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    push_permission: Mapped[bool | None] = mapped_column(Boolean)
    # [{"device_id", "token", "provider": "fcm"|"apns", "valid": bool, "updated_at"}]
    push_tokens: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    phone: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(256))
    # [{"device_id", "token", "valid": bool, "updated_at"}]
    web_push: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    # channels the user opted out of: push, sms, email, web_push, in_app
    opt_outs: Mapped[list[str]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    last_lat: Mapped[float | None] = mapped_column(Float)
    last_lon: Mapped[float | None] = mapped_column(Float)
    last_location_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class DeviceAlias(Base):
    """Which profile a device belongs to (``d:<device_id>`` until a user logs in on it).
    Written by segmenter; read by admin (profile lookup by device)."""

    __tablename__ = "device_aliases"
    __table_args__ = (Index("ix_device_aliases_user", "app_id", "user_key"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime]
    # The newest event time that linked the device to its user: an older event naming
    # another user does not move the device (None: anonymous, or linked before 0011).
    linked_at: Mapped[datetime | None]


# Segmenter's evaluation inputs and output. Written by segmenter only; admin reads them
# through the segment SQL compiler (``libs.rules.sql``) for previews and exports.


class DailyCounter(Base):
    """Per (user, event name, UTC day): how many first-seen events and their revenue.
    Kept for all time (one row per user, name and active day). Written by segmenter."""

    __tablename__ = "segmenter_daily_counters"

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    revenue: Mapped[float] = mapped_column(Float)


class RecentEventRow(Base):
    """The user's events of the last ``RECENT_EVENTS_DAYS`` days with their props.
    Written by segmenter."""

    __tablename__ = "segmenter_recent_events"
    __table_args__ = (Index("ix_segmenter_recent_events_user", "app_id", "user_key", "name", "ts"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(128))
    ts: Mapped[datetime]
    props: Mapped[dict[str, Any]]


class Membership(Base):
    """A user's membership of a segment, since ``entered_at``. Written by segmenter (the
    real-time consumer and the scheduler); read by admin."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_user", "app_id", "user_key"),)

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    entered_at: Mapped[datetime]
