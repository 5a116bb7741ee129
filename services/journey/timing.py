"""Local-time arithmetic of journeys: "10:00 on a weekday in the user's time zone", "the
birthday this year", "2 hours from now". Pure: every function takes ``now``.

Times are computed in the user's IANA zone (``DEFAULT_TIMEZONE`` when the profile has
none or an unknown one) and returned as UTC. A local time that does not exist (a DST
gap) is taken at the same wall time after the gap; one that exists twice, at its first
occurrence — zoneinfo's ``fold=0``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.journeys.definition import WEEKDAYS, UntilDate, UntilTime

DEFAULT_TIMEZONE = "Asia/Tehran"


def zone(name: str | None) -> ZoneInfo:
    """The zone ``name``, or the default one for a missing or unknown name."""
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def clock_time(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """``day`` at ``at`` in ``tz``, as UTC (a nonexistent wall time is normalised)."""
    local = datetime.combine(day, at, tzinfo=tz)
    return local.astimezone(UTC).astimezone(tz).astimezone(UTC)


def next_local_time(now: datetime, tz_name: str | None, until: UntilTime) -> datetime:
    """The first moment at or after ``now`` when the local clock shows ``until.time`` on
    one of ``until.weekdays``."""
    tz = zone(tz_name)
    at = clock_time(until.time)
    allowed = {WEEKDAYS.index(d) for d in until.weekdays}
    today = now.astimezone(tz).date()
    for offset in range(8):
        day = today + timedelta(days=offset)
        if day.weekday() not in allowed:
            continue
        moment = at_local(day, at, tz)
        if moment >= now:
            return moment
    raise AssertionError("some allowed weekday falls within 8 days")


def local_time_on_or_after(now: datetime, tz_name: str | None, value: str) -> datetime:
    """The first moment at or after ``now`` when the local clock shows ``value``."""
    return next_local_time(now, tz_name, UntilTime(time=value))


def profile_date(value: object) -> date | None:
    """A profile date: ``YYYY-MM-DD`` or an ISO time (its date); None if it is not one."""
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def yearly(day: date, year: int) -> date:
    """``day``'s month and day in ``year`` (29 February is 28 February in common years)."""
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def until_date(now: datetime, tz_name: str | None, until: UntilDate, value: object) -> datetime:
    """When a wait ``until_date`` ends: the date (± offset) at its local time; a yearly
    date is its next occurrence. A missing or past date is ``now`` (no wait)."""
    day = profile_date(value)
    if day is None:
        return now
    tz = zone(tz_name)
    at = clock_time(until.time)
    shift = until.offset.delta if until.offset is not None else timedelta(0)
    if until.before:
        shift = -shift
    if not until.yearly:
        moment = at_local(day, at, tz) + shift
        return max(moment, now)
    local_year = now.astimezone(tz).year
    for year in (local_year - 1, local_year, local_year + 1):
        moment = at_local(yearly(day, year), at, tz) + shift
        if moment >= now:
            return moment
    raise AssertionError("a yearly date recurs within a year")


def anniversary_moment(
    value: object, tz_name: str | None, at: str, offset_days: int, year: int
) -> datetime | None:
    """This profile date's occurrence in local ``year`` (shifted by ``offset_days``) at
    local ``at``, as UTC; None for a value that is not a date."""
    day = profile_date(value)
    if day is None:
        return None
    tz = zone(tz_name)
    return at_local(yearly(day, year) + timedelta(days=offset_days), clock_time(at), tz)


def date_moments_between(
    value: object,
    tz_name: str | None,
    at: str,
    offset_days: int,
    after: datetime,
    until: datetime,
    *,
    from_year_after: date | None = None,
) -> list[tuple[int, datetime]]:
    """(year, moment) of each occurrence of the yearly date in ``(after, until]``;
    ``from_year_after``: only years after that date's (a sign-up anniversary starts a
    year after signing up)."""
    tz = zone(tz_name)
    years = range(after.astimezone(tz).year - 1, until.astimezone(tz).year + 2)
    found = []
    for year in years:
        if from_year_after is not None and year <= from_year_after.year:
            continue
        moment = anniversary_moment(value, tz_name, at, offset_days, year)
        if moment is not None and after < moment <= until:
            found.append((year, moment))
    return found
