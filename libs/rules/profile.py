"""What a segment rule is evaluated on: one user's profile (``ProfileState``, the shape of
a ``profiles`` row), its daily counters, recent events and segment memberships
(``ProfileView``). Plain frozen values, no I/O: the segmenter folds events into a
``ProfileState`` (``services.segmenter.logic``), ``libs.rules.loader`` reads a
``ProfileView`` from Postgres, ``libs.rules.evaluation`` answers rules on it.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ProfileState:
    """A profile as the segmenter keeps it: a ``profiles`` row without its keys
    (``libs.runtime.tables.Profile``; the segmenter is its one writer)."""

    user_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # name → [ISO time, op] of the attribute's latest write (op: set, once, inc, unset);
    # an unset attribute keeps its entry (a tombstone) so that an older write arriving
    # later cannot bring it back. See ``services.segmenter.logic.fold_attributes``.
    attribute_writes: dict[str, list[str]] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    platform: str | None = None
    app_version: str | None = None
    os_version: str | None = None
    device_model: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attribution: dict[str, Any] | None = None
    sessions: int = 0
    purchases: int = 0
    revenue: float = 0.0
    events: int = 0
    push_permission: bool | None = None
    # [{"device_id", "token", "provider", "valid", "updated_at"}]
    push_tokens: list[dict[str, Any]] = field(default_factory=list)
    phone: str | None = None
    email: str | None = None
    # [{"device_id", "token", "valid", "updated_at"}]
    web_push: list[dict[str, Any]] = field(default_factory=list)
    opt_outs: list[str] = field(default_factory=list)
    last_lat: float | None = None
    last_lon: float | None = None
    last_location_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DailyCount:
    """One row of ``segmenter_daily_counters`` for this user."""

    name: str
    day: date
    count: int
    revenue: float = 0.0


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One row of ``segmenter_recent_events`` (for ``where`` filters and sub-day windows)."""

    name: str
    ts: datetime
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileView:
    """What evaluation sees of one user: the profile, its counters and recent events, and
    the segments it is a member of."""

    state: ProfileState
    counters: tuple[DailyCount, ...] = ()
    recent: tuple[RecentEvent, ...] = ()
    segments: Set[str] = frozenset()


def as_view(profile: ProfileState | ProfileView) -> ProfileView:
    """``profile`` as a view (a bare state: no counters, recent events nor memberships)."""
    return profile if isinstance(profile, ProfileView) else ProfileView(profile)
