"""Admin's ClickHouse reads about trackers: the per-tracker figures, the click-to-install
time distribution and the raw user lists. Every query is scoped by app.

Attributions are read by their latest statement: a verification or the expiry sweep
restates an attribution (same ``attribution_id``, later ``attributed_at``), possibly on
another day, so ``FINAL`` alone (keyed by day and id) would keep both rows."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import date
from typing import Any

from libs.runtime.clickhouse import AsyncClickHouse
from services.admin.warehouse import ATTRIBUTION, IDENTITY

# Methods that match a click, so the install has a click-to-install time.
CLICK_METHODS = ("click_id", "adid", "fingerprint")
# Narrows ``latest`` to the attributions the tracker (query parameter ``token``) is named
# in by any statement — a login can restate an install under the user's original tracker
# — and keeps those whose latest statement names it (``latest_attributions``' having).
OF_TRACKER = (
    "s.attribution_id IN (SELECT attribution_id FROM {db}.attributions "
    "WHERE app_id = {{app_id:String}} AND tracker_token = {{token:String}})"
)
LATEST_OF_TRACKER = "tracker_token = {token:String}"
# Narrows ``latest`` to the devices of the CTE ``removed``.
OF_REMOVED_DEVICES = "s.device_id IN (SELECT device_id FROM removed)"

# The advertising id each picked install reported (the attributions topic does not carry it).
_ADIDS = """
adids AS (
    SELECT event_id, any(JSONExtractString(payload, 'adid')) AS adid
    FROM {db}.installs
    WHERE app_id = {{app_id:String}} AND event_id IN (SELECT install_event_id FROM picked)
    GROUP BY event_id
)"""


def latest_attributions(db: str, where: str = "", having: str = "") -> str:
    """The CTE ``latest``: one row per attribution of the app, from its latest statement
    (latest ``attributed_at``; a replay of the same statement ties and the later insert
    wins). ``where`` narrows the statements read: a condition on their columns, spelt
    ``s.<column>``, with query parameters; every statement of an attribution has the same
    device and install, so narrowing by them keeps or drops whole attributions — not so
    the tracker or user, which a login may restate: narrow by attribution id, and filter
    on the latest values with ``having`` (the output names).

    ``click_ts`` comes from any statement that carries it, at microsecond precision like
    ``install_us``, so that a click-to-install time is exact. Restatements made before
    they carried it lack it, so readers fall back to the click's own row (``clicks``, by
    ``click_id``).
    """
    # Columns are qualified (s.): the output names shadow them otherwise.
    version = "(s.attributed_at, s._inserted_at)"
    return f"""
latest AS (
    SELECT s.attribution_id AS attribution_id,
           argMax(s.user_key, {version}) AS user_key,
           argMax(s.device_id, {version}) AS device_id,
           argMax(s.install_ts, {version}) AS install_ts,
           argMax(s.method, {version}) AS method,
           argMax(s.kind, {version}) AS kind,
           argMax(s.status, {version}) AS status,
           argMax(s.tracker_token, {version}) AS tracker_token,
           argMax(s.click_id, {version}) AS click_id,
           argMax(s.payload, {version}) AS payload,
           argMax(JSONExtractString(s.payload, 'install_event_id'), {version})
               AS install_event_id,
           maxOrNull(parseDateTime64BestEffortOrNull(
               JSONExtractString(s.payload, 'click_ts'), 6, 'UTC')) AS click_ts,
           max(parseDateTime64BestEffort(
               JSONExtractString(s.payload, 'install_ts'), 6, 'UTC')) AS install_us
    FROM {db}.attributions AS s
    WHERE s.app_id = {{app_id:String}}{f" AND ({where.format(db=db)})" if where else ""}
    GROUP BY s.attribution_id{f" HAVING {having}" if having else ""}
)"""


async def tracker_report(
    ch: AsyncClickHouse, *, app_id: str, start: date, end: date
) -> dict[str, dict[str, Any]]:
    """Per tracker token, over installs (and clicks) dated in [start, end]: clicks,
    installs by kind and status, rejections by reason, and the revenue and uninstalls of
    the users it brought (by profile identity, from the user's latest attribution)."""
    db = ch.database
    params = {"app_id": app_id, "start": start, "end": end}
    clicks = await ch.query_rows(
        f"""
SELECT tracker_token AS tracker, countIf(kind = 'click') AS clicks,
       countIf(kind = 'impression') AS impressions
FROM {db}.clicks FINAL
WHERE app_id = {{app_id:String}} AND toDate(ts) BETWEEN {{start:Date}} AND {{end:Date}}
GROUP BY tracker""",
        params,
    )
    installs = await ch.query_rows(
        f"""
WITH {latest_attributions(db)}
SELECT tracker_token AS tracker, count() AS installs,
       countIf(kind = 'new_user' AND status != 'rejected') AS new_users,
       countIf(kind = 'reinstall' AND status != 'rejected') AS reinstalls,
       countIf(kind = 'new_device' AND status != 'rejected') AS new_devices,
       countIf(kind = 'reattribution' AND status != 'rejected') AS reattributions,
       countIf(status = 'verified') AS verified, countIf(status = 'pending') AS pending,
       countIf(status = 'unverified') AS unverified, countIf(status = 'rejected') AS rejected,
       groupArrayIf(JSONExtract(payload, 'fraud_reasons', 'Array(String)'),
                    status = 'rejected') AS reasons
FROM latest
WHERE tracker_token IS NOT NULL
  AND toDate(install_ts) BETWEEN {{start:Date}} AND {{end:Date}}
GROUP BY tracker""",
        params,
    )
    outcomes = await ch.query_rows(
        f"""
WITH {IDENTITY.format(db=db)},
{ATTRIBUTION.format(db=db)}
SELECT t.tracker AS tracker,
       sumIf(coalesce(e.revenue, 0), e.d BETWEEN {{start:Date}} AND {{end:Date}}) AS revenue,
       uniqExactIf(e.uk, e.name = '$uninstall'
                   AND e.d BETWEEN {{start:Date}} AND {{end:Date}}) AS uninstalls
FROM ev AS e INNER JOIN attr AS t ON t.uk = e.uk
WHERE t.tracker != ''
GROUP BY tracker""",
        params,
    )
    rows: dict[str, dict[str, Any]] = {}
    for row in clicks:
        entry = rows.setdefault(row["tracker"], {})
        entry["clicks"] = int(row["clicks"])
        entry["impressions"] = int(row["impressions"])
    for row in installs:
        entry = rows.setdefault(row["tracker"], {})
        for name in (
            "installs",
            "new_users",
            "reinstalls",
            "new_devices",
            "reattributions",
            "verified",
            "pending",
            "unverified",
            "rejected",
        ):
            entry[name] = int(row[name])
        by_reason: dict[str, int] = {}
        for reasons in row["reasons"]:
            for reason in reasons:
                by_reason[reason] = by_reason.get(reason, 0) + 1
        entry["rejected_by_reason"] = by_reason
    for row in outcomes:
        entry = rows.setdefault(row["tracker"], {})
        entry["revenue"] = float(row["revenue"])
        entry["uninstalls"] = int(row["uninstalls"])
    return rows


async def ctit_counts(
    ch: AsyncClickHouse,
    *,
    app_id: str,
    token: str,
    start: date,
    end: date,
    bounds: Sequence[int],
    status: str | None,
) -> dict[int | None, int]:
    """Of the tracker's click-matched installs (any status, rejected too, or only
    ``status``) dated in [start, end]: how many have a click-to-install time (install
    time − click time, to the microsecond; negative when the click came later) in each
    bucket, keyed by the bucket's upper bound in seconds (the smallest of ``bounds`` at
    least the CTIT, as ``logic.ctit_bound`` says), None beyond the last. Empty buckets
    are absent."""
    db = ch.database
    sql = f"""
WITH {latest_attributions(db, OF_TRACKER, LATEST_OF_TRACKER)},
picked AS (
    SELECT * FROM latest
    WHERE tracker_token = {{token:String}} AND method IN {{methods:Array(String)}}
      AND toDate(install_ts) BETWEEN {{start:Date}} AND {{end:Date}}
      AND ({{status:String}} = '' OR status = {{status:String}})
),
-- The click's own record, for statements that do not carry its time.
clicked AS (
    SELECT click_id, any(parseDateTime64BestEffort(JSONExtractString(payload, 'ts'), 6, 'UTC'))
           AS ts
    FROM {db}.clicks
    WHERE app_id = {{app_id:String}} AND tracker_token = {{token:String}}
      AND click_id IN (SELECT click_id FROM picked WHERE click_id IS NOT NULL)
    GROUP BY click_id
),
timed AS (
    SELECT p.install_us AS install_us,
           coalesce(p.click_ts, if(c.click_id = '', NULL, c.ts)) AS click_time
    FROM picked AS p LEFT JOIN clicked AS c ON c.click_id = p.click_id
)
SELECT arrayFirstIndex(b -> ctit <= b, {{bounds:Array(Int64)}}) AS bucket, count() AS n
FROM (
    SELECT toUnixTimestamp64Micro(install_us) - toUnixTimestamp64Micro(assumeNotNull(click_time))
           AS ctit
    FROM timed WHERE click_time IS NOT NULL
)
GROUP BY bucket"""
    rows = await ch.query_rows(
        sql,
        {
            "app_id": app_id,
            "token": token,
            "start": start,
            "end": end,
            "status": status or "",
            "methods": list(CLICK_METHODS),
            "bounds": [b * 1_000_000 for b in bounds],
        },
    )
    # arrayFirstIndex is 1-based and 0 when no bound holds the CTIT (+Inf).
    return {(bounds[r["bucket"] - 1] if r["bucket"] else None): int(r["n"]) for r in rows}


def installs_of(
    ch: AsyncClickHouse,
    *,
    app_id: str,
    token: str,
    kinds: Sequence[str],
    start: date,
    end: date,
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The tracker's installs of ``kinds`` dated in [start, end] that are not rejected,
    oldest first, streamed in blocks (see ``AsyncClickHouse.stream_rows``): the install's
    ``user_key`` by profile identity (a device that later logged in shows its user),
    ``device_id``, ``adid`` (as the install reported it; '' without one), ``install_ts``,
    ``kind`` and ``status`` of the latest statement."""
    db = ch.database
    sql = f"""
WITH {IDENTITY.format(db=db)},
{latest_attributions(db, OF_TRACKER, LATEST_OF_TRACKER)},
picked AS (
    SELECT * FROM latest
    WHERE tracker_token = {{token:String}} AND kind IN {{kinds:Array(String)}}
      AND status != 'rejected' AND toDate(install_ts) BETWEEN {{start:Date}} AND {{end:Date}}
),
{_ADIDS.format(db=db)}
SELECT coalesce(nullIf(al.uid, ''), p.user_key) AS user_key, p.device_id AS device_id,
       ad.adid AS adid, p.install_ts AS install_ts, p.kind AS kind, p.status AS status
FROM picked AS p
LEFT JOIN aliases AS al ON concat('d:', al.device_id) = p.user_key
LEFT JOIN adids AS ad ON ad.event_id = p.install_event_id
ORDER BY p.install_ts, p.attribution_id"""
    return ch.stream_rows(
        sql,
        {"app_id": app_id, "token": token, "kinds": list(kinds), "start": start, "end": end},
    )


def uninstalls_of(
    ch: AsyncClickHouse, *, app_id: str, token: str, start: date, end: date
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The ``$uninstall`` events dated in [start, end] that undo an install credited to
    the tracker, oldest first, streamed in blocks: an uninstall undoes its device's latest
    install at or before it (any tracker, or organic), which counts when that install's
    latest statement names the tracker and is not rejected. Rows: the uninstall's
    ``user_key`` by profile identity, ``device_id``, and the install's ``adid``,
    ``install_ts``, ``kind`` and ``status``, then ``uninstall_ts``."""
    db = ch.database
    sql = f"""
WITH {IDENTITY.format(db=db)},
removed AS (
    SELECT event_id, uk, assumeNotNull(device_id) AS device_id, ts
    FROM ev
    WHERE name = '$uninstall' AND device_id IS NOT NULL
      AND d BETWEEN {{start:Date}} AND {{end:Date}}
),
{latest_attributions(db, OF_REMOVED_DEVICES)},
picked AS (
    SELECT u.event_id AS event_id, u.uk AS uk, u.device_id AS device_id, u.ts AS uninstall_ts,
           i.attribution_id AS attribution_id, i.install_event_id AS install_event_id,
           i.install_ts AS install_ts, i.kind AS kind, i.status AS status,
           i.tracker_token AS tracker_token
    FROM removed AS u
    -- the device's latest counted install before the uninstall: a rejected (perhaps
    -- forged) later install must not hide it
    ASOF INNER JOIN (SELECT * FROM latest WHERE status != 'rejected') AS i
        ON i.device_id = u.device_id AND u.ts >= i.install_ts
),
{_ADIDS.format(db=db)}
SELECT p.uk AS user_key, p.device_id AS device_id, ad.adid AS adid,
       p.install_ts AS install_ts, p.kind AS kind, p.status AS status,
       p.uninstall_ts AS uninstall_ts
FROM picked AS p
LEFT JOIN adids AS ad ON ad.event_id = p.install_event_id
WHERE p.tracker_token = {{token:String}} AND p.status != 'rejected'
ORDER BY p.uninstall_ts, p.event_id"""
    return ch.stream_rows(sql, {"app_id": app_id, "token": token, "start": start, "end": end})
