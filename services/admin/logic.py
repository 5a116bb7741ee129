"""Report rules that need no SQL: parameter checks, date windows, local-time bucketing,
click-to-install time buckets, CSV rendering. Pure: the caller passes dates, rows and
time zones in."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.runtime.errors import InvalidInput

MAX_RANGE_DAYS = 400
DEFAULT_RETENTION_DAYS = (1, 3, 7, 14, 30, 90)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DEFAULT_TIMEZONE = "Asia/Tehran"


def date_range(start: date, end: date) -> tuple[date, date]:
    """Checks a report's ``from``/``to`` (inclusive, UTC dates)."""
    if end < start:
        raise InvalidInput("must not be before from", field="to")
    if (end - start).days > MAX_RANGE_DAYS:
        raise InvalidInput(f"a report spans at most {MAX_RANGE_DAYS} days", field="to")
    return start, end


def retention_days(raw: str | None) -> tuple[int, ...]:
    """``days=1,3,7`` → (1, 3, 7); sorted, unique, each 0..365."""
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput("must be comma-separated day numbers", field="days") from None
    if not days or len(days) > 30 or days[0] < 0 or days[-1] > 365:
        raise InvalidInput("1 to 30 day numbers between 0 and 365", field="days")
    return tuple(days)


def zone(name: str | None, default: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """The IANA zone ``name``, or ``default`` when it is missing or unknown."""
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def heatmap(rows: Iterable[tuple[str | None, datetime, int]], default_tz: str) -> list[list[int]]:
    """7 × 24 counts, Monday first, in each user's local time.

    ``rows`` are (time zone, UTC bucket start, sessions in that bucket); buckets must not
    straddle a local hour (quarter hours suffice for every zone). Each start is converted
    in its own zone, so daylight-saving changes land in the right local hour.
    """
    grid = [[0] * 24 for _ in WEEKDAYS]
    zones: dict[str | None, ZoneInfo] = {}
    for tz_name, hour_start, count in rows:
        tz = zones.get(tz_name)
        if tz is None:
            tz = zones[tz_name] = zone(tz_name, default_tz)
        start = hour_start if hour_start.tzinfo else hour_start.replace(tzinfo=UTC)
        local = start.astimezone(tz)
        grid[local.weekday()][local.hour] += count
    return grid


def active_hours(
    sessions: Iterable[tuple[str | None, datetime]], default_tz: str, top: int = 3
) -> list[dict[str, int]]:
    """The ``top`` local hours of day with the most sessions, most first (ties: earlier)."""
    counts = [0] * 24
    for tz_name, ts in sessions:
        start = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        counts[start.astimezone(zone(tz_name, default_tz)).hour] += 1
    ranked = sorted(range(24), key=lambda h: (-counts[h], h))
    return [{"hour": h, "sessions": counts[h]} for h in ranked[:top] if counts[h]]


def tracker_cost(tracker: Any, figures: Mapping[str, Any]) -> float | None:
    """The spend on a tracker over the report: CPI × counted new users (verified ones when
    the tracker counts on verification), or the total cost; None without a cost."""
    if tracker is None or tracker.cost_model is None or tracker.cost_amount is None:
        return None
    amount = float(tracker.cost_amount)
    if tracker.cost_model == "total":
        return amount
    counted = (
        figures.get("verified", 0)
        if tracker.counting == "on_verification"
        else (figures.get("new_users", 0))
    )
    return amount * counted


def roi(revenue: float, cost: float | None) -> float | None:
    """(revenue − cost) / cost, or None when there is no cost to divide by."""
    if not cost:
        return None
    return round((revenue - cost) / cost, 4)


def periods(start: date, end: date, interval: str) -> list[tuple[date, date]]:
    """Consecutive [first, last] day spans covering ``start``..``end`` by day, ISO week
    (Monday start) or calendar month; the first and last spans are clipped to the range."""
    spans = []
    cursor = start
    while cursor <= end:
        if interval == "day":
            last = cursor
        elif interval == "week":
            last = cursor + timedelta(days=6 - cursor.weekday())
        else:
            next_month = (cursor.replace(day=28) + timedelta(days=4)).replace(day=1)
            last = next_month - timedelta(days=1)
        last = min(last, end)
        spans.append((cursor, last))
        cursor = last + timedelta(days=1)
    return spans


# A cell starting with one of these is a formula to a spreadsheet (CSV injection):
# device ids, user keys and attribute values come from SDKs and must stay text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet: text that a spreadsheet would run as a
    formula gets a leading apostrophe (OWASP's advice); numbers and other values are
    unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    """``-5``, ``+1.5``, ``+Inf``: a spreadsheet reads these as numbers, not formulas."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_lines(rows: Iterable[Sequence[Any]]) -> str:
    """Rows of values as CSV lines, each ending in ``\\n``; None is an empty field; text
    that would be a spreadsheet formula is neutralised (:func:`csv_cell`)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def to_csv(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, header: bool = True
) -> str:
    """Rows as CSV, with a header line unless ``header`` is false (the chunks after the
    first of a streamed export); nested values (dicts) are flattened as ``name.key``."""
    flat_columns: list[str] = []
    for column in columns:
        sample = rows[0].get(column) if rows else None
        if isinstance(sample, Mapping):
            flat_columns.extend(f"{column}.{key}" for key in sample)
        else:
            flat_columns.append(column)
    lines: list[list[Any]] = [flat_columns] if header else []
    for row in rows:
        values = []
        for column in flat_columns:
            head, _, key = column.partition(".")
            value = row.get(head)
            values.append(value.get(key) if key and isinstance(value, Mapping) else value)
        lines.append(values)
    return csv_lines(lines)


# Click-to-install time (CTIT) buckets, upper bounds in seconds, log-spaced so that both
# the seconds-scale spike of click injection and the flat long tail of click spamming
# show. As Prometheus's ``le``: a bucket counts the installs whose CTIT is at most its
# bound, so counts are cumulative and the last bucket (+Inf, ``le_seconds: null``) is the
# total. The first, ``le_seconds: 0``, holds the clicks at or after their install — an
# honest CTIT is positive, so these are injected (or clock-forged) clicks; being
# cumulative, every later bucket includes them too.
CTIT_BOUNDS = (
    0,
    10,
    30,
    60,
    5 * 60,
    15 * 60,
    30 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    3 * 86400,
    7 * 86400,
    30 * 86400,
)
INF = "+Inf"


def ctit_bound(ctit: timedelta) -> int | None:
    """The bound of the bucket that first holds ``ctit``: the smallest bound at least
    ``ctit`` (a CTIT equal to a bound is in that bucket), None (+Inf) past the last."""
    for bound in CTIT_BOUNDS:
        if ctit <= timedelta(seconds=bound):
            return bound
    return None


def ctit_buckets(counts: Mapping[int | None, int]) -> list[dict[str, int | None]]:
    """Cumulative CTIT buckets, ``[{"le_seconds", "count"}]`` in ``CTIT_BOUNDS`` order
    then +Inf (``le_seconds`` None), from per-bucket counts keyed by :func:`ctit_bound`
    (missing keys count 0). Raises ValueError for a key that is not a bound."""
    unknown = set(counts) - {*CTIT_BOUNDS, None}
    if unknown:
        raise ValueError(f"not CTIT bucket bounds: {sorted(unknown)!r}")
    out: list[dict[str, int | None]] = []
    total = 0
    for bound in (*CTIT_BOUNDS, None):
        total += counts.get(bound, 0)
        out.append({"le_seconds": bound, "count": total})
    return out


def ctit_csv_rows(buckets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The buckets for CSV: the +Inf bound spelt ``+Inf`` as in Prometheus."""
    return [
        {"le_seconds": INF if b["le_seconds"] is None else b["le_seconds"], "count": b["count"]}
        for b in buckets
    ]


# Raw user lists per tracker: which attribution kinds each list holds (``uninstalled`` is
# not a kind: it follows installs to their ``$uninstall``), and the CSV columns.
USER_LIST_KINDS: dict[str, tuple[str, ...]] = {
    "installed": ("new_user", "new_device", "reattribution"),
    "reinstalled": ("reinstall",),
}
USER_LIST_COLUMNS = ("user_key", "user_id", "device_id", "adid", "install_ts", "kind", "status")


def user_list_columns(kind: str) -> tuple[str, ...]:
    """The CSV header of the ``kind`` list: ``uninstalled`` adds ``uninstall_ts``."""
    return (*USER_LIST_COLUMNS, "uninstall_ts") if kind == "uninstalled" else USER_LIST_COLUMNS


def user_list_row(row: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    """One user-list row as CSV values in ``columns`` order. ``user_id`` is the user key
    when that is the app's user id (not an anonymous ``d:<device_id>``), else empty;
    times are UTC ISO-8601 with milliseconds and a ``Z``; missing or empty values (an
    install without advertising id) are empty fields."""
    user_key = row.get("user_key") or ""
    values = {**row, "user_id": "" if user_key.startswith("d:") else user_key}
    out: list[Any] = []
    for column in columns:
        value = values.get(column)
        if isinstance(value, datetime):
            value = iso_utc(value)
        out.append("" if value is None else value)
    return out


def iso_utc(ts: datetime) -> str:
    """``ts`` in UTC as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (a naive ``ts`` is taken as UTC)."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def merge_settings(stored: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` with ``changes`` applied: a key set to None is removed (its default
    applies again), others replace the stored value. Returns a new dict."""
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# Install postbacks are the tracker's ``postback_urls``; an ``$install`` event is not
# an in-app event to post back a second time.
NOT_POSTBACK_EVENTS = frozenset({"$install"})


def unchosen_postback_events(events: Iterable[str], event_urls: Mapping[str, Any]) -> list[str]:
    """Event names given their own postback URLs without being among the tracker's
    ``postback_events``, sorted: such URLs would never be called, so the tracker is
    refused rather than saved with them."""
    return sorted(set(event_urls) - set(events))
