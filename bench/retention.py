"""The retention report over 10,000,000 events and 200,000 users on chDB (issue 4 target
< 2 s), through the same function the API calls (``services.admin.warehouse.retention``).

The history is generated inside ClickHouse (``INSERT … SELECT FROM numbers``): each user
has one ``$install`` on one of 90 days and 49 more events over the following ~100 days;
a third of the users log in part-way (their later events carry a user_id), so the
query-time identity resolution does real work. Tune with BENCH_RETENTION_EVENTS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from libs.runtime.clickhouse import AsyncClickHouse, get_client, migrate
from services.admin.warehouse import retention
from services.ingest.warehouse import MIGRATIONS

EVENTS = int(os.environ.get("BENCH_RETENTION_EVENTS", "10000000"))
PER_USER = 50
REPEATS = 3
TARGET_SECONDS = 2.0

GENERATE = """
INSERT INTO hodhod.events (app_id, event_id, name, user_key, device_id, user_id, ts,
                           received_at, source, platform, props, _partition, _offset)
SELECT 'bench', toString(number),
       if(k = 0, '$install', if(k % 10 = 9, '$purchase', '$open')),
       concat('d:dev', toString(u)), concat('dev', toString(u)),
       if(u % 3 = 0 AND k > 10, concat('user', toString(u)), NULL),
       t, t, 'sdk', if(u % 2 = 0, 'android', 'ios'), '{{}}', 0, number
FROM (
    SELECT number, intDiv(number, {per_user}) AS u, number % {per_user} AS k,
           toDateTime64('2026-06-01 00:00:00', 3, 'UTC')
             + toIntervalDay(u % 90 + if(k = 0, 0, (k * 7 + u) % 100))
             + toIntervalSecond((number * 7919) % 86400) AS t
    FROM numbers({events})
)
"""


async def run() -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(prefix="hodhod-bench-ret-"))
    client = get_client(f"chdb://{path}")
    try:
        migrate(client, MIGRATIONS, "hodhod")
        started = time.perf_counter()
        client.command(GENERATE.format(per_user=PER_USER, events=EVENTS))
        client.command("OPTIMIZE TABLE hodhod.events FINAL")
        loaded_s = time.perf_counter() - started
        print(f"  generated {EVENTS} events in {loaded_s:.1f} s", flush=True)
        ch = AsyncClickHouse(client, "hodhod")
        samples = []
        for mode in ["classic", "rolling"] * REPEATS:
            t0 = time.perf_counter()
            cohorts = await retention(
                ch,
                app_id="bench",
                start=date(2026, 6, 1),
                end=date(2026, 8, 29),
                weekly=False,
                days=(1, 3, 7, 14, 30, 90),
                rolling=mode == "rolling",
                tracker=None,
                channel=None,
                platform=None,
            )
            samples.append((mode, time.perf_counter() - t0))
            print(f"  retention {mode}: {samples[-1][1]:.2f} s, {len(cohorts)} cohorts", flush=True)
        users = sum(c["size"] for c in cohorts)
    finally:
        client.close()
        await asyncio.to_thread(shutil.rmtree, path, True)
    classic = statistics.median(s for m, s in samples if m == "classic")
    rolling = statistics.median(s for m, s in samples if m == "rolling")
    return {
        "parameters": {
            "events": EVENTS,
            "users": EVENTS // PER_USER,
            "cohorts": 90,
            "days": [1, 3, 7, 14, 30, 90],
            "engine": "chDB (in process)",
        },
        "figures": {
            "retention_classic_seconds": round(classic, 3),
            "retention_rolling_seconds": round(rolling, 3),
            "users_in_cohorts": users,
            "generate_seconds": round(loaded_s, 1),
        },
        "targets": [
            {
                "name": "retention_classic_seconds",
                "value": round(classic, 3),
                "maximum": TARGET_SECONDS,
                "met": classic < TARGET_SECONDS,
            },
            {
                "name": "retention_rolling_seconds",
                "value": round(rolling, 3),
                "maximum": TARGET_SECONDS,
                "met": rolling < TARGET_SECONDS,
            },
        ],
        "samples": samples,
    }
