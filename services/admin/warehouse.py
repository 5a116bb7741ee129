"""Admin's ClickHouse reads for analytics (tracker reports: ``tracker_reports.py``).
Every query is scoped by app and uses FINAL so that replayed rows (ReplacingMergeTree)
are counted once, unless a replay cannot change its result."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import orjson

from libs.runtime.clickhouse import AsyncClickHouse


async def deliveries_of(
    ch: AsyncClickHouse, *, app_id: str, user_key: str, limit: int = 100
) -> list[dict[str, Any]]:
    return await ch.query_rows(
        f"SELECT receipt_id, job_id, channel, status, provider, provider_message_id, error, "
        f"journey_id, ts FROM {ch.database}.deliveries FINAL "
        "WHERE app_id = {app_id:String} AND user_key = {user_key:String} "
        "ORDER BY ts DESC LIMIT {limit:UInt32}",
        {"app_id": app_id, "user_key": user_key, "limit": limit},
    )


# Every report counts users by profile identity: an event carries its user_id, else the
# latest user_id any event of its device carried (the device logged in later), else the
# anonymous key d:<device_id>. Resolved at query time, like PostHog's person overrides.
# Admin's profile edits and journeys' attribute writes (sources 'admin', 'journey') are
# not something the user did: left out.
IDENTITY = """
aliases AS (
    SELECT device_id, argMax(user_id, ts) AS uid
    FROM {db}.events FINAL
    WHERE app_id = {{app_id:String}} AND user_id IS NOT NULL AND device_id IS NOT NULL
    GROUP BY device_id
),
ev AS (
    SELECT coalesce(e.user_id, nullIf(a.uid, ''), concat('d:', e.device_id)) AS uk,
           e.event_id AS event_id, e.device_id AS device_id,
           e.name AS name, e.ts AS ts, toDate(e.ts) AS d, e.platform AS platform,
           e.timezone AS timezone, e.props AS props, e.revenue AS revenue
    FROM {db}.events AS e FINAL
    LEFT JOIN aliases AS a ON a.device_id = e.device_id
    WHERE e.app_id = {{app_id:String}} AND e.source NOT IN ('admin', 'journey')
),
activity AS (
    SELECT DISTINCT uk, d FROM ev WHERE name NOT IN ('$install', '$uninstall')
)"""

ATTRIBUTION = """
attr AS (
    SELECT coalesce(nullIf(al.uid, ''), t.user_key) AS uk,
           argMax(ifNull(t.tracker_token, ''), t.attributed_at) AS tracker,
           argMax(JSONExtractString(t.payload, 'channel'), t.attributed_at) AS channel
    FROM {db}.attributions AS t FINAL
    LEFT JOIN aliases AS al ON concat('d:', al.device_id) = t.user_key
    WHERE t.app_id = {{app_id:String}}
    GROUP BY uk
)"""


async def retention(
    ch: AsyncClickHouse,
    *,
    app_id: str,
    start: date,
    end: date,
    weekly: bool,
    days: tuple[int, ...],
    rolling: bool,
    tracker: str | None,
    channel: str | None,
    platform: str | None,
) -> list[dict[str, Any]]:
    """Cohorts of users whose first ``$install`` falls in [start, end] (UTC dates), with
    the users active on day N (classic) or on day N or later (rolling); day 0 is the
    install date. Filters apply to the cohort: tracker/channel of the user's latest
    attribution, platform of the first install."""
    # Duplicated rows (replays not yet merged) cannot change a minimum or a set, so this
    # report skips FINAL; one pass groups every event by resolved user (1.3 s for 10M
    # events and 200k users on chDB, where the join of distinct (user, day) rows took 8).
    if rolling:
        checks = [f"countIf(arrayExists(x -> x >= day0 + {n}, days)) AS r{n}" for n in days]
    else:
        checks = [f"countIf(has(days, day0 + {n})) AS r{n}" for n in days]
    cohort_of = "toMonday(day0)" if weekly else "day0"
    db = ch.database
    # Filters cost a join or a column each: only the ones asked for are in the query.
    by_source = bool(tracker or channel)
    attribution = f",\n{ATTRIBUTION.format(db=db)}" if by_source else ""
    join = "LEFT JOIN attr AS t ON t.uk = p.uk" if by_source else ""
    platform_column = (
        "argMinIf(e.platform, e.ts, e.name = '$install') AS platform," if platform else ""
    )
    filters = "".join(
        [
            " AND t.tracker = {tracker:String}" if tracker else "",
            " AND t.channel = {channel:String}" if channel else "",
            " AND p.platform = {platform:String}" if platform else "",
        ]
    )
    sql = f"""
WITH aliases AS (
    SELECT device_id, argMax(user_id, ts) AS uid
    FROM {db}.events
    WHERE app_id = {{app_id:String}} AND user_id IS NOT NULL AND device_id IS NOT NULL
    GROUP BY device_id
){attribution},
per_user AS (
    SELECT coalesce(e.user_id, nullIf(a.uid, ''), concat('d:', e.device_id)) AS uk,
           minIf(toDate(e.ts), e.name = '$install') AS day0,
           {platform_column}
           groupUniqArrayIf(toDate(e.ts), e.name NOT IN ('$install', '$uninstall')) AS days,
           countIf(e.name = '$install') AS installs
    FROM {db}.events AS e
    LEFT JOIN aliases AS a ON a.device_id = e.device_id
    WHERE e.app_id = {{app_id:String}} AND e.source NOT IN ('admin', 'journey')
    GROUP BY uk
    HAVING installs > 0 AND day0 BETWEEN {{start:Date}} AND {{end:Date}}
)
SELECT {cohort_of} AS cohort, count() AS size,
{", ".join(checks)}
FROM per_user AS p {join}
WHERE 1{filters}
GROUP BY cohort ORDER BY cohort"""
    rows = await ch.query_rows(
        sql,
        {
            "app_id": app_id,
            "start": start,
            "end": end,
            "tracker": tracker or "",
            "channel": channel or "",
            "platform": platform or "",
        },
    )
    return [
        {
            "cohort": row["cohort"].isoformat(),
            "size": int(row["size"]),
            "retained": {str(n): int(row[f"r{n}"]) for n in days},
        }
        for row in rows
    ]


async def active_users(
    ch: AsyncClickHouse, *, app_id: str, spans: list[tuple[date, date]]
) -> list[dict[str, Any]]:
    """Per span: ``dau`` = mean daily active users over its days, ``wau`` = users active
    in the 7 days ending on its last day, ``mau`` = in the 30 days ending on it;
    stickiness = dau / mau. Activity excludes ``$install`` and ``$uninstall``."""
    start, end = spans[0][0], spans[-1][1]
    sql = f"""
WITH {IDENTITY.format(db=ch.database)}
SELECT d, uk FROM activity
WHERE d BETWEEN {{start:Date}} - 29 AND {{end:Date}}"""
    rows = await ch.query_rows(sql, {"app_id": app_id, "start": start, "end": end})
    by_day: dict[date, set[str]] = {}
    for row in rows:
        by_day.setdefault(row["d"], set()).add(row["uk"])

    def unique(first: date, last: date) -> int:
        users: set[str] = set()
        day = first
        while day <= last:
            users |= by_day.get(day, set())
            day += timedelta(days=1)
        return len(users)

    out = []
    for first, last in spans:
        n_days = (last - first).days + 1
        daily = [len(by_day.get(first + timedelta(days=i), ())) for i in range(n_days)]
        dau = round(sum(daily) / n_days, 4)
        mau = unique(last - timedelta(days=29), last)
        out.append(
            {
                "period": first.isoformat(),
                "dau": dau,
                "wau": unique(last - timedelta(days=6), last),
                "mau": mau,
                "stickiness": round(dau / mau, 4) if mau else 0.0,
            }
        )
    return out


async def session_hours(
    ch: AsyncClickHouse, *, app_id: str, start: date, end: date
) -> list[tuple[str | None, datetime, int]]:
    """(time zone, UTC quarter-hour start, sessions) of ``$open`` events in [start, end].

    Quarter hours, not hours: zones such as Asia/Tehran (+03:30) and Asia/Kathmandu
    (+05:45) split a UTC hour between two local hours.
    """
    sql = f"""
SELECT timezone, toStartOfFifteenMinutes(ts) AS hour, count() AS n
FROM {ch.database}.events FINAL
WHERE app_id = {{app_id:String}} AND name = '$open'
  AND toDate(ts) BETWEEN {{start:Date}} AND {{end:Date}}
GROUP BY timezone, hour"""
    rows = await ch.query_rows(sql, {"app_id": app_id, "start": start, "end": end})
    return [(row["timezone"], row["hour"], int(row["n"])) for row in rows]


async def event_report(
    ch: AsyncClickHouse,
    *,
    app_id: str,
    start: date,
    end: date,
    interval: str,
    name: str | None,
    prop: str | None,
    value: str | None,
) -> list[dict[str, Any]]:
    """Counts, unique users and revenue per event name and period (day, ISO week from
    Monday, or month), optionally for one name and one ``props`` equality filter."""
    bucket = {"day": "d", "week": "toMonday(d)", "month": "toStartOfMonth(d)"}[interval]
    sql = f"""
WITH {IDENTITY.format(db=ch.database)}
SELECT {bucket} AS period, name, count() AS count, uniqExact(uk) AS users,
       sum(coalesce(revenue, 0)) AS revenue
FROM ev
WHERE d BETWEEN {{start:Date}} AND {{end:Date}}
  AND ({{name:String}} = '' OR name = {{name:String}})
  AND ({{prop:String}} = '' OR JSONExtractRaw(props, {{prop:String}}) IN
       (concat('"', {{value:String}}, '"'), {{value:String}}))
GROUP BY period, name ORDER BY period, name"""
    rows = await ch.query_rows(
        sql,
        {
            "app_id": app_id,
            "start": start,
            "end": end,
            "name": name or "",
            "prop": prop or "",
            "value": value or "",
        },
    )
    return [
        {
            "period": row["period"].isoformat(),
            "name": row["name"],
            "count": int(row["count"]),
            "users": int(row["users"]),
            "revenue": float(row["revenue"]),
        }
        for row in rows
    ]


async def churn(
    ch: AsyncClickHouse, *, app_id: str, start: date, end: date, inactive_days: int
) -> dict[str, Any]:
    """Of the users active in [start, end] (the population), those whose last activity up
    to ``end`` is at least ``inactive_days`` days before ``end`` have churned; also per
    install week of the population, and the users who sent ``$uninstall`` in the range."""
    sql = f"""
WITH {IDENTITY.format(db=ch.database)},
last_seen AS (
    SELECT uk, max(d) AS last_day, countIf(d BETWEEN {{start:Date}} AND {{end:Date}}) AS hits
    FROM activity WHERE d <= {{end:Date}} GROUP BY uk
),
population AS (SELECT uk, last_day FROM last_seen WHERE hits > 0),
installed AS (SELECT uk, toMonday(min(d)) AS week FROM ev WHERE name = '$install' GROUP BY uk),
removed AS (
    SELECT DISTINCT uk FROM ev
    WHERE name = '$uninstall' AND d BETWEEN {{start:Date}} AND {{end:Date}}
)
SELECT p.uk AS uk, dateDiff('day', p.last_day, {{end:Date}}) >= {{n:UInt32}} AS churned,
       i.week AS week, p.uk IN (SELECT uk FROM removed) AS uninstalled
FROM population AS p LEFT JOIN installed AS i ON i.uk = p.uk"""
    rows = await ch.query_rows(
        sql, {"app_id": app_id, "start": start, "end": end, "n": inactive_days}
    )
    uninstalled_sql = f"""
WITH {IDENTITY.format(db=ch.database)}
SELECT uniqExact(uk) AS n FROM ev
WHERE name = '$uninstall' AND d BETWEEN {{start:Date}} AND {{end:Date}}"""
    uninstalls = int(
        (await ch.query_rows(uninstalled_sql, {"app_id": app_id, "start": start, "end": end}))[0][
            "n"
        ]
    )
    cohorts: dict[str, dict[str, int]] = {}
    for row in rows:
        week = row["week"].isoformat() if row["week"] and row["week"].year > 1970 else None
        if week is None:
            continue
        c = cohorts.setdefault(week, {"size": 0, "churned": 0})
        c["size"] += 1
        c["churned"] += int(bool(row["churned"]))
    population = len(rows)
    churned = sum(1 for row in rows if row["churned"])
    return {
        "active": population,
        "churned": churned,
        "churn_rate": round(churned / population, 4) if population else 0.0,
        "uninstalls": uninstalls,
        "uninstall_rate": round(uninstalls / population, 4) if population else 0.0,
        "cohorts": [{"cohort": k, **v} for k, v in sorted(cohorts.items())],
    }


async def timeline(
    ch: AsyncClickHouse, *, app_id: str, user_key: str, limit: int = 200
) -> dict[str, Any]:
    """The user's latest events (including those their devices sent before login),
    their attributions and message receipts, and local session hours by count."""
    params = {"app_id": app_id, "user_key": user_key, "limit": limit}
    events = await ch.query_rows(
        f"""
WITH {IDENTITY.format(db=ch.database)}
SELECT ts, name, platform, timezone, props, revenue FROM ev
WHERE uk = {{user_key:String}} ORDER BY ts DESC LIMIT {{limit:UInt32}}""",
        params,
    )
    attributions = await ch.query_rows(
        f"""
WITH {IDENTITY.format(db=ch.database)},
{ATTRIBUTION.format(db=ch.database)}
SELECT tracker, channel FROM attr WHERE uk = {{user_key:String}}""",
        params,
    )
    devices = await ch.query_rows(
        f"""
WITH {IDENTITY.format(db=ch.database)}
SELECT DISTINCT e.device_id AS device_id FROM {ch.database}.events AS e FINAL
LEFT JOIN aliases AS a ON a.device_id = e.device_id
WHERE e.app_id = {{app_id:String}} AND e.device_id IS NOT NULL
  AND coalesce(e.user_id, nullIf(a.uid, ''), concat('d:', e.device_id)) = {{user_key:String}}""",
        params,
    )
    keys = [user_key, *(f"d:{row['device_id']}" for row in devices)]
    deliveries = await ch.query_rows(
        f"""
SELECT job_id, channel, status, provider, error, journey_id, ts
FROM {ch.database}.deliveries FINAL
WHERE app_id = {{app_id:String}} AND user_key IN {{keys:Array(String)}}
ORDER BY ts DESC LIMIT {{limit:UInt32}}""",
        {**params, "keys": keys},
    )
    for event in events:
        event["props"] = orjson.loads(event["props"]) if event["props"] else {}
    return {
        "events": events,
        "attribution": attributions[0] if attributions else None,
        "deliveries": deliveries,
    }
