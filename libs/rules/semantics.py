"""What both evaluators of the segment rule language compute alike, from the rule and the
clock alone: cut-off instants, whole-day windows, which strings are dates, the RFM
context, the reachability and geofence constants.

The in-memory evaluator (``libs.rules.evaluation``) and the SQL compiler
(``libs.rules.sql``) both call these, so they cannot drift apart. Pure: no I/O, no
clock (``now`` is a parameter).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from libs.rules.language import Window

# ``{"reachable": "in_app"}``: seen within this long.
IN_APP_WINDOW = timedelta(days=30)
EARTH_RADIUS_M = 6_371_008.8
DEG = math.pi / 180.0

# The only strings that compare as dates, in both evaluators (Postgres:
# ``hodhod_iso_timestamp`` in migration 0002): ISO dates and date-times, optional zone.
ISO_DATE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])?)?"  # Postgres takes offsets up to 15:59
)


@dataclass(frozen=True, slots=True)
class RfmThresholds:
    """Four ascending quintile cut points of each measure (empty: nobody to measure)."""

    recency_days: tuple[float, ...] = ()
    frequency: tuple[float, ...] = ()
    monetary: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """App-level inputs of evaluation, the same for every user of the app."""

    rfm: RfmThresholds | None = None


NO_CONTEXT = Context()


def ago(now: datetime, delta: timedelta) -> datetime | None:
    """``now - delta``, or None when that is before the first representable instant
    (then nothing is before it and everything is after it)."""
    try:
        return now - delta
    except OverflowError:
        return None


def day_range(window: Window, now: datetime) -> tuple[date | None, date | None]:
    """The inclusive UTC day bounds of a whole-day window (None: unbounded)."""
    if window.between is not None:
        return window.between
    if window.within is None:
        return None, None
    start = ago(now, window.within)
    return (start.astimezone(UTC).date() if start is not None else None), None


def recency_cuts(now: datetime, thresholds: RfmThresholds) -> list[datetime | None]:
    return [ago(now, timedelta(days=min(t, 36_500.0))) for t in thresholds.recency_days]


def as_date(value: str) -> datetime | None:
    """An ISO date or date-time (``ISO_DATE``); a value without a zone is taken as UTC."""
    if ISO_DATE.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
