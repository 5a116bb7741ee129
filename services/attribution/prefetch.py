"""Set-wise reads of the clicks index, the install ledger and the configuration the
matcher decides a batch by: one statement per kind of fact for the whole batch, each
answering exactly what the per-install query it replaces answered for every key.

Keyword-only, never commit. Keys are tuples led by the app id (every read is
tenant-scoped by it); answers are dicts keyed the same way. Reads that must not see
the batch's own installs take ``excluding``: their (app id, install event id) — the
caller overlays those rows as the batch itself decides them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.postgres import fetch_raw
from services.attribution import logic
from services.attribution.ledger import Key, UserInstall

# Newest clicks per advertising id or fingerprint handed to ``logic.match``.
MAX_CANDIDATES = 20
# The fraud counts' window: clicks per hour (click spamming), installs per hour (farms).
COUNT_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Touch:
    """An indexed click or impression (``kind``) as matching sees it."""

    click: logic.ClickFacts
    kind: str


class TrackerRow(NamedTuple):
    """What deciding an install needs of a tracker: its windows, how it counts and the
    hierarchy an attribution reports."""

    token: str
    windows: logic.Windows
    counting: str
    channel: str
    network: str | None
    campaign: str | None
    adgroup: str | None
    creative: str | None


def _columns(
    keys: Collection[tuple[Any, ...]], width: int, *, times: Collection[int] = ()
) -> list[Any]:
    """The parameters of ``keys`` for ``unnest``, one per tuple position: a text-array
    literal (``_texts``, for ``$n::text::text[]``), or at the ``times`` positions the
    list of datetimes (``$n::timestamptz[]``)."""
    columns = [list(c) for c in zip(*keys, strict=True)] if keys else [[]] * width
    return [c if i in times else _texts(c) for i, c in enumerate(columns)]


_NUL = "\x00"  # stands for None while joining: no value Postgres stores holds it


def _texts(values: list[str | None]) -> str:
    """``values`` as a Postgres text-array literal (``{"a",NULL,"b"}``): one string that
    asyncpg sends as it is, where a ``text[]`` parameter is encoded value by value, with
    two ABC ``isinstance`` checks each (~0.3 µs a value, ~10,000 values in a batch's
    reads). Values without quotes, backslashes or NULs — ids, keys, addresses, nearly all
    — are joined as they are; any other list is written value by value, escaped."""
    if not values:
        return "{}"
    nones = values.count(None)
    texts = cast(list[str], values) if not nones else [_NUL if v is None else v for v in values]
    joined = '","'.join(texts)
    clean = joined.count('"') == 2 * (len(values) - 1)  # the separators' quotes only
    if clean and "\\" not in joined and joined.count(_NUL) == nones:
        literal = '{"' + joined + '"}'
        return literal.replace(f'"{_NUL}"', "NULL") if nones else literal
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        )
        + "}"
    )


def _skip(apps: int, ids: int) -> str:
    """The condition, with the excluded keys' app ids and install event ids in
    parameters ``$apps`` and ``$ids``."""
    return (
        "(i.app_id, i.install_event_id) NOT IN (SELECT s.app_id, s.install_event_id FROM "
        f"unnest(${apps}::text::text[], ${ids}::text::text[]) AS s(app_id, install_event_id))"
    )


_CLICK_COLUMNS = "c.click_id, c.tracker_token, c.ts, c.adid, c.ip, c.user_agent, c.is_bot, c.kind"


def _touch(row: Any) -> Touch:
    """The touch a row with ``_CLICK_COLUMNS`` describes."""
    return Touch(
        logic.ClickFacts(
            row["click_id"],
            row["tracker_token"],
            row["ts"],
            row["adid"],
            row["ip"],
            row["user_agent"],
            row["is_bot"],
        ),
        row["kind"],
    )


_NAMED = (
    f"SELECT c.app_id, {_CLICK_COLUMNS} FROM attribution_clicks c "
    "JOIN unnest($1::text::text[], $2::text::text[]) AS k(app_id, click_id) "
    "ON c.app_id = k.app_id AND c.click_id = k.click_id"
)


async def clicks(session: AsyncSession, *, keys: Collection[Key]) -> dict[Key, Touch]:
    """The indexed clicks (or impressions) of these (app id, click id) keys; absent keys
    are not indexed (not seen yet, or another app's)."""
    if not keys:
        return {}
    apps, ids = _columns(keys, 2)
    rows = await fetch_raw(session, _NAMED, apps, ids)
    return {(r["app_id"], r["click_id"]): _touch(r) for r in rows}


def _recent(column: str, part: int) -> str:
    return (
        f"SELECT k.n, {part} AS part, {_CLICK_COLUMNS} FROM unnest("
        "$1::text::text[], $2::text::text[], $3::text::text[], $4::timestamptz[]) "
        "WITH ORDINALITY AS k(app_id, adid, fingerprint, until, n) "
        "CROSS JOIN LATERAL (SELECT * FROM attribution_clicks c "
        f"WHERE c.app_id = k.app_id AND c.{column} = k.{column} "
        "AND c.ts >= k.until - $5::bigint * interval '1 second' "
        "AND c.ts <= k.until ORDER BY c.ts DESC LIMIT $6::bigint) AS c"
    )


_RECENT = f"{_recent('adid', 0)} UNION ALL {_recent('fingerprint', 1)} ORDER BY n, part, ts DESC"

# (app id, advertising id, fingerprint key, until): a recent-clicks search.
Search = tuple[str, str | None, str | None, datetime]


async def recent_clicks(
    session: AsyncSession,
    *,
    searches: Collection[Search],
    lookback: timedelta,
    limit: int = MAX_CANDIDATES,
) -> dict[Search, list[Touch]]:
    """Per (app id, advertising id, fingerprint key, until): the newest ``limit`` clicks
    and impressions with the advertising id in [until - lookback, until], newest first,
    then the newest ``limit`` with the fingerprint (None skips a key) — the candidates
    ``logic.match`` chooses from. Searches finding none are absent."""
    if not searches:
        return {}
    ordered = list(searches)
    apps, adids, prints, until = _columns(ordered, 4, times=(3,))
    rows = await fetch_raw(
        session, _RECENT, apps, adids, prints, until, int(lookback.total_seconds()), limit
    )
    found: dict[Search, list[Touch]] = {}
    for row in rows:
        found.setdefault(ordered[row["n"] - 1], []).append(_touch(row))
    return found


_INSTALLS = (
    "SELECT i.* FROM attribution_installs i "
    "JOIN unnest($1::text::text[], $2::text::text[]) AS k(app_id, install_event_id) "
    "ON i.app_id = k.app_id AND i.install_event_id = k.install_event_id"
)


def _ledger_row(row: Any) -> dict[str, Any]:
    """A ledger row as a dict of every column; ``fraud_reasons`` (jsonb, handed over as
    text by the codec SQLAlchemy sets on its connections) decoded."""
    found = dict(row.items())
    reasons = found["fraud_reasons"]
    if isinstance(reasons, str | bytes):
        found["fraud_reasons"] = json.loads(reasons)
    return found


async def installs(session: AsyncSession, *, keys: Collection[Key]) -> dict[Key, dict[str, Any]]:
    """The ledger rows (every column, as a dict) of these (app id, install event id)
    keys; absent keys have none."""
    if not keys:
        return {}
    apps, ids = _columns(keys, 2)
    rows = await fetch_raw(session, _INSTALLS, apps, ids)
    return {(r["app_id"], r["install_event_id"]): _ledger_row(r) for r in rows}


_WAITING = (
    "SELECT i.* FROM attribution_installs i "
    "JOIN unnest($1::text::text[], $2::text::text[]) AS k(app_id, click_id) "
    "ON i.app_id = k.app_id AND i.ref_click_id = k.click_id "
    "WHERE i.method <> 'click_id' AND i.ref_click_id IS NOT NULL "
    "ORDER BY i.app_id, i.ref_click_id, i.install_event_id"
)


async def installs_waiting_for(
    session: AsyncSession, *, clicks: Collection[Key]
) -> dict[Key, list[dict[str, Any]]]:
    """Per (app id, click id): the ledger rows (dicts) of installs whose referrer named
    that click but that were attributed otherwise (organic, or a weaker method) because
    the click arrived after them."""
    if not clicks:
        return {}
    apps, ids = _columns(clicks, 2)
    found: dict[Key, list[dict[str, Any]]] = {}
    for row in await fetch_raw(session, _WAITING, apps, ids):
        found.setdefault((row["app_id"], row["ref_click_id"]), []).append(_ledger_row(row))
    return found


# Per key, a subquery (LATERAL below): index probes for each key, whatever the planner
# estimates of the keys and the ledger (a join may be planned as a scan of the ledger).
_ADID_FIRST = (
    "SELECT k.app_id, k.adid, (SELECT min(i.install_ts) FROM attribution_installs i "
    "WHERE i.app_id = k.app_id AND i.adid = k.adid AND i.adid IS NOT NULL "
    f"AND i.status <> 'rejected' AND {_skip(3, 4)}) AS first "
    "FROM unnest($1::text::text[], $2::text::text[]) AS k(app_id, adid)"
)


async def adids_first_seen(
    session: AsyncSession, *, adids: Collection[Key], excluding: Collection[Key]
) -> dict[Key, datetime]:
    """Per (app id, advertising id): the earliest counted (not rejected) install with
    it, leaving out the ``excluding`` installs. Absent: none."""
    if not adids:
        return {}
    apps, values = _columns(adids, 2)
    rows = await fetch_raw(session, _ADID_FIRST, apps, values, *_columns(excluding, 2))
    return {(r["app_id"], r["adid"]): r["first"] for r in rows if r["first"] is not None}


_USER_INSTALLS = (
    "SELECT k.app_id, k.user_key, i.install_event_id, i.install_ts, i.adid, i.tracker_token, "
    "i.hardware "
    "FROM unnest($1::text::text[], $2::text::text[]) AS k(app_id, user_key) "
    "CROSS JOIN LATERAL (SELECT * FROM attribution_installs i "
    "WHERE i.app_id = k.app_id AND i.user_key = k.user_key AND i.status <> 'rejected' "
    f"AND {_skip(3, 4)}) AS i ORDER BY i.install_ts, i.install_event_id"
)


async def user_installs(
    session: AsyncSession, *, users: Collection[Key], excluding: Collection[Key]
) -> dict[Key, list[UserInstall]]:
    """Per (app id, user key): the user's counted (not rejected) installs, oldest first
    (ties by install event id), leaving out the ``excluding`` installs."""
    if not users:
        return {}
    apps, keys = _columns(users, 2)
    found: dict[Key, list[UserInstall]] = defaultdict(list)
    for r in await fetch_raw(session, _USER_INSTALLS, apps, keys, *_columns(excluding, 2)):
        found[(r["app_id"], r["user_key"])].append(
            UserInstall(
                r["install_event_id"], r["install_ts"], r["adid"], r["tracker_token"], r["hardware"]
            )
        )
    return dict(found)


_TRACKERS = (
    "SELECT t.app_id, t.token, t.click_window_hours, t.fingerprint_window_hours, "
    "t.view_window_hours, t.counting, t.channel, t.network, t.campaign, t.adgroup, "
    "t.creative FROM trackers t "
    "JOIN unnest($1::text::text[], $2::text::text[]) AS k(app_id, token) "
    "ON t.app_id = k.app_id AND t.token = k.token"
)


async def trackers(session: AsyncSession, *, keys: Collection[Key]) -> dict[Key, TrackerRow]:
    """The trackers of these (app id, token) keys, with the windows their admin
    configured; absent keys are no tracker of the app."""
    if not keys:
        return {}
    apps, tokens = _columns(keys, 2)
    return {
        (r["app_id"], r["token"]): TrackerRow(
            r["token"],
            logic.Windows(
                click=timedelta(hours=r["click_window_hours"]),
                fingerprint=timedelta(hours=r["fingerprint_window_hours"]),
                view=timedelta(hours=r["view_window_hours"]),
            ),
            r["counting"],
            r["channel"],
            r["network"],
            r["campaign"],
            r["adgroup"],
            r["creative"],
        )
        for r in await fetch_raw(session, _TRACKERS, apps, tokens)
    }


_FRAUD_SETTINGS = "SELECT id, fraud, require_signature FROM apps WHERE id = ANY($1::text::text[])"


async def fraud_settings(
    session: AsyncSession, *, app_ids: Collection[str]
) -> dict[str, tuple[dict[str, Any], bool]]:
    """Per app: its stored fraud settings (admin's ``apps.fraud``) and whether it
    requires signed SDK requests; ``({}, False)`` for an unknown app."""
    found: dict[str, tuple[dict[str, Any], bool]] = dict.fromkeys(app_ids, ({}, False))
    if app_ids:
        for r in await fetch_raw(session, _FRAUD_SETTINGS, _texts(list(app_ids))):
            fraud = r["fraud"]
            if isinstance(fraud, str | bytes):  # jsonb as text: see ``_ledger_row``
                fraud = json.loads(fraud)
            found[r["id"]] = (dict(fraud or {}), bool(r["require_signature"]))
    return found


def _hour_count(column: str) -> str:
    return (
        "(SELECT count(*) FROM attribution_clicks c WHERE c.app_id = k.app_id "
        f"AND c.tracker_token = k.token AND c.{column} = k.{column} AND c.kind = 'click' "
        "AND c.ts > k.until - $6::bigint * interval '1 second' AND c.ts <= k.until)"
    )


_CLICKS_PER_HOUR = (
    f"SELECT k.n, greatest({_hour_count('ip')}, {_hour_count('adid')}) AS most FROM unnest("
    "$1::text::text[], $2::text::text[], $3::text::text[], $4::text::text[], $5::timestamptz[]) "
    "WITH ORDINALITY AS k(app_id, token, ip, adid, until, n)"
)

# (app id, tracker token, ip or None, advertising id or None, until)
ClickCount = tuple[str, str, str | None, str | None, datetime]


async def clicks_per_hour(
    session: AsyncSession, *, keys: Collection[ClickCount]
) -> dict[ClickCount, int]:
    """Per (app id, tracker, ip, advertising id, until): the most clicks on the tracker
    from this IP, or from this advertising id, in the hour (``COUNT_WINDOW``) up to and
    including ``until`` (None skips a key) — the click-spamming count."""
    if not keys:
        return {}
    ordered = list(keys)
    apps, tokens, ips, adids, until = _columns(ordered, 5, times=(4,))
    rows = await fetch_raw(
        session,
        _CLICKS_PER_HOUR,
        apps,
        tokens,
        ips,
        adids,
        until,
        int(COUNT_WINDOW.total_seconds()),
    )
    return {ordered[r["n"] - 1]: r["most"] for r in rows}


_INSTALLS_PER_IP = (
    "SELECT k.n, (SELECT count(*) FROM attribution_installs i "
    "WHERE i.app_id = k.app_id AND i.ip = k.ip AND i.status <> 'rejected' "
    "AND i.install_ts > k.until - $4::bigint * interval '1 second' "
    "AND i.install_ts <= k.until "
    f"AND {_skip(5, 6)}) AS installs FROM unnest($1::text::text[], $2::text::text[], "
    "$3::timestamptz[]) WITH ORDINALITY AS k(app_id, ip, until, n)"
)

IpHour = tuple[str, str, datetime]  # (app id, ip, until)


async def installs_per_ip(
    session: AsyncSession, *, keys: Collection[IpHour], excluding: Collection[Key]
) -> dict[IpHour, int]:
    """Per (app id, ip, until): counted (not rejected) installs from the IP in the hour
    up to and including ``until``, leaving out the ``excluding`` installs (the device-farm
    count, without the install judged)."""
    if not keys:
        return {}
    ordered = list(keys)
    apps, ips, until = _columns(ordered, 3, times=(2,))
    rows = await fetch_raw(
        session,
        _INSTALLS_PER_IP,
        apps,
        ips,
        until,
        int(COUNT_WINDOW.total_seconds()),
        *_columns(excluding, 2),
    )
    return {ordered[r["n"] - 1]: r["installs"] for r in rows}


_FIRST_VERIFIED = (
    "SELECT k.n, (SELECT min(v.verified_at) FROM attribution_verifications v "
    "WHERE v.app_id = k.app_id AND (v.user_id = k.user_key OR v.device_id = k.device_id)) "
    "AS verified_at FROM unnest($1::text::text[], $2::text::text[], $3::text::text[]) "
    "WITH ORDINALITY AS k(app_id, user_key, device_id, n)"
)

UserDevice = tuple[str, str, str]  # (app id, user key, device id)


async def first_verified(
    session: AsyncSession, *, keys: Collection[UserDevice]
) -> dict[UserDevice, datetime]:
    """Per (app id, user key, device id): when the user (by user id, or by the device a
    verification named) was first verified; absent when never."""
    if not keys:
        return {}
    ordered = list(keys)
    apps, users, devices = _columns(ordered, 3)
    rows = await fetch_raw(session, _FIRST_VERIFIED, apps, users, devices)
    return {ordered[r["n"] - 1]: r["verified_at"] for r in rows if r["verified_at"] is not None}


_LINKS = (
    "SELECT l.app_id, l.device_id, l.user_id FROM attribution_device_links l "
    "JOIN unnest($1::text::text[], $2::text::text[]) AS k(app_id, device_id) "
    "ON l.app_id = k.app_id AND l.device_id = k.device_id"
)


async def linked_users(session: AsyncSession, *, devices: Iterable[Key]) -> dict[Key, str]:
    """Per (app id, device id): the user the device belongs to (its latest link);
    absent when none is known."""
    keys = set(devices)
    if not keys:
        return {}
    apps, ids = _columns(keys, 2)
    rows = await fetch_raw(session, _LINKS, apps, ids)
    return {(r["app_id"], r["device_id"]): r["user_id"] for r in rows}
