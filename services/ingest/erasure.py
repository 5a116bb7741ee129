"""Erasing a user's raw rows from ClickHouse (admin's ``DELETE /admin/v1/users/{key}``,
announced as ``ConfigChanged(entity="user", action="deleted")``). The warehouse writer,
the only ClickHouse writer, runs it after the inserts of the batch that carries it.

Whose rows are the user's, for a user id K:

- rows naming K: events and verifications with ``user_id = K``, and every row keyed by
  profile key K (events, attributions, segment changes, send jobs, deliveries);
- the anonymous rows of every device K's events name (events without a user id, the
  device's installs and its anonymous attributions), up to the first event of another
  user on that device after K's last one — a shared phone's later owner keeps theirs;
- rows keyed by the anonymous key ``d:<device>`` of those devices (segment changes,
  send jobs, deliveries of the device before login), and the clicks the erased
  attributions were matched to (their IP, user agent and advertising id).

For an anonymous key ``d:D``, the device is D and every row without a user id is in.
The erasure record itself stays in ``config_changes`` (the audit of the erasure). The
segmenter announces the erased user's segment exits, caused by the erasure id: the
writer does not store those (``erasure_causes``) — or deletes them, should one reach
the warehouse before its erasure record does.

Lightweight ``DELETE FROM`` (ClickHouse 23.3+, chDB): rows disappear from reads at once
and from disk at the next merge. Idempotent: a second run finds nothing (or the rows
of a user who came back since, which a redelivery within the same batch can only
meet). Blocking on ClickHouse; raises the driver's errors (the runner retries).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from libs.runtime.clickhouse import AsyncClickHouse
from libs.schemas.base import ANONYMOUS_PREFIX

# "Until the end of time": the cut of a device no other user took over.
NO_CUT = datetime(2200, 1, 1, tzinfo=UTC)


def window(device_column: str, ts_column: str) -> str:
    """SQL: the row's device is one of ``{devices}`` and its time is before that
    device's cut (``{cuts}``, aligned)."""
    device = f"ifNull({device_column}, '')"
    return (
        f"(indexOf({{devices:Array(String)}}, {device}) > 0 AND {ts_column} < "
        f"arrayElement({{cuts:Array(DateTime64(3, 'UTC'))}}, "
        f"indexOf({{devices:Array(String)}}, {device})))"
    )


# table → the rows of the erased user (besides ``app_id``)
PREDICATES: dict[str, str] = {
    "events": (
        "user_id = {user:String} OR user_key = {user:String} "
        f"OR (user_id IS NULL AND {window('device_id', 'ts')})"
    ),
    "installs": window("device_id", "ts"),
    "verifications": "user_id = {user:String}",
    "attributions": (
        "user_key = {user:String} OR "
        f"(user_key = concat('{ANONYMOUS_PREFIX}', device_id) "
        f"AND {window('device_id', 'install_ts')})"
    ),
    "segment_changes": "user_key IN {keys:Array(String)}",
    "send_jobs": "user_key IN {keys:Array(String)}",
    "deliveries": "user_key IN {keys:Array(String)}",
}


async def devices_of(ch: AsyncClickHouse, *, app_id: str, user_key: str) -> dict[str, datetime]:
    """Device → cut: the devices whose anonymous rows before the cut are the user's."""
    if user_key.startswith(ANONYMOUS_PREFIX):
        return {user_key.removeprefix(ANONYMOUS_PREFIX): NO_CUT}
    db = ch.database
    rows = await ch.query_rows(
        f"""
WITH mine AS (
    SELECT assumeNotNull(device_id) AS device, max(ts) AS last_mine
    FROM {db}.events
    WHERE app_id = {{app_id:String}} AND user_id = {{user:String}} AND device_id IS NOT NULL
    GROUP BY device
)
SELECT m.device AS device,
       countIf(e.ts > m.last_mine) AS handed,
       minIf(e.ts, e.ts > m.last_mine) AS cut
FROM mine AS m
LEFT JOIN (
    SELECT assumeNotNull(device_id) AS device, ts
    FROM {db}.events
    WHERE app_id = {{app_id:String}} AND device_id IN (SELECT device FROM mine)
      AND user_id IS NOT NULL AND user_id != {{user:String}}
) AS e ON e.device = m.device
GROUP BY m.device""",
        {"app_id": app_id, "user": user_key},
    )
    return {row["device"]: row["cut"] if int(row["handed"]) else NO_CUT for row in rows}


async def erase_user(ch: AsyncClickHouse, *, app_id: str, user_key: str) -> dict[str, Any]:
    """Delete the user's rows from every raw table (this module's docstring says which);
    returns the devices and cuts it used. Blocks until ClickHouse has applied them."""
    devices = await devices_of(ch, app_id=app_id, user_key=user_key)
    params: dict[str, Any] = {
        "app_id": app_id,
        "user": user_key,
        "devices": list(devices),
        "cuts": list(devices.values()),
        "keys": [user_key, *(ANONYMOUS_PREFIX + d for d in devices)],
    }
    db = ch.database
    clicks = await ch.query_rows(
        f"SELECT DISTINCT assumeNotNull(click_id) AS click_id FROM {db}.attributions "
        f"WHERE app_id = {{app_id:String}} AND click_id IS NOT NULL "
        f"AND ({PREDICATES['attributions']})",
        params,
    )
    for table, predicate in PREDICATES.items():
        await ch.command(
            f"DELETE FROM {db}.{table} WHERE app_id = {{app_id:String}} AND ({predicate})",
            params,
        )
    if clicks:
        await ch.command(
            f"DELETE FROM {db}.clicks WHERE app_id = {{app_id:String}} "
            "AND click_id IN {clicks:Array(String)}",
            {"app_id": app_id, "clicks": [row["click_id"] for row in clicks]},
        )
    return devices


async def erasure_causes(ch: AsyncClickHouse, *, app_ids: list[str], ids: list[str]) -> set[str]:
    """Those of ``ids`` that are erasures already in the warehouse."""
    if not ids:
        return set()
    rows = await ch.query_rows(
        f"SELECT DISTINCT change_id FROM {ch.database}.config_changes "
        "WHERE app_id IN {app_ids:Array(String)} AND change_id IN {ids:Array(String)} "
        "AND entity = 'user' AND action = 'deleted'",
        {"app_ids": sorted(set(app_ids)), "ids": sorted(set(ids))},
    )
    return {row["change_id"] for row in rows}
