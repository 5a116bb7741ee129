"""What the journey benchmarks share: a journey with many waiting runs written straight
into a private database, journey worker processes built from the service's own parts,
RSS sampling, and percentiles."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from libs.runtime.tenancy import provision_app

# The wake-up journey: wait, then one push. The wait-for-event journey: wait for
# ``checkout`` (a day), then one push.
WAKE_DEFINITION = {
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "push"},
        {"id": "push", "type": "send", "channel": "push", "content": {"body": "Come back"}},
    ],
    "entry": {"reentry": "always", "max_concurrent": 1},
}
EVENT_DEFINITION = {
    "start": "w",
    "nodes": [
        {
            "id": "w",
            "type": "wait_for_event",
            "event": "checkout",
            "timeout": {"days": 1},
            "on_event": "push",
            "on_timeout": "done",
        },
        {"id": "push", "type": "send", "channel": "push", "content": {"body": "Thanks"}},
        {"id": "done", "type": "exit"},
    ],
    "entry": {"reentry": "always", "max_concurrent": 1},
}


def raw_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def seed_runs(
    database_url: str,
    *,
    definition: dict[str, Any],
    node: str,
    waiting_for: str | None,
    total: int,
    due: int,
    t0: datetime,
    rate: float,
    later: datetime,
) -> tuple[str, str]:
    """A new app, an active journey and ``total`` waiting runs (user ``u<i>``) at ``node``:
    the first ``due`` wake at ``t0 + i / rate``, the rest at ``later``. One statement
    (``generate_series``), then ANALYZE. Returns (app id, journey id)."""
    keys = await provision_app(database_url, name="bench-journeys")
    journey_id = "jrn_bench"
    connection = await asyncpg.connect(raw_url(database_url))
    try:
        body = orjson.dumps(definition).decode()
        await connection.execute(
            "INSERT INTO journeys (id, app_id, name, trigger, definition, status, version, kind,"
            " created_at, updated_at) VALUES ($1, $2, 'bench', $3::jsonb, $4::jsonb, 'active', 1,"
            " 'journey', now(), now())",
            journey_id,
            keys.app_id,
            '{"type": "segment_entered", "segment": "seg_bench"}',
            body,
        )
        await connection.execute(
            "INSERT INTO journey_versions (app_id, journey_id, version, trigger, definition,"
            " created_at) VALUES ($1, $2, 1, $3::jsonb, $4::jsonb, now())",
            keys.app_id,
            journey_id,
            '{"type": "segment_entered", "segment": "seg_bench"}',
            body,
        )
        await connection.execute(
            "INSERT INTO journey_runs (app_id, run_id, journey_id, version, user_key,"
            " trigger_change_id, status, node, started_at, wake_at, held, waiting_for, trigger,"
            " visits)"
            " SELECT $1, 'r' || i, $2, 1, 'u' || i, 'bench', 'waiting', $3::text, now(),"
            " CASE WHEN i < $4::int"
            " THEN $5::timestamptz + make_interval(secs => i / $6::float8)"
            " ELSE $7::timestamptz END,"
            " false, $8::text, '{}'::jsonb, jsonb_build_object($3::text, 1)"
            " FROM generate_series(0, $9::int - 1) AS i",
            keys.app_id,
            journey_id,
            node,
            due,
            t0,
            rate,
            later,
            waiting_for,
            total,
        )
        await connection.execute("ANALYZE journey_runs")
    finally:
        await connection.close()
    return keys.app_id, journey_id


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def worker_process(
    role: str, bootstrap: str, database_url: str, batch: int, start_at: float = 0.0
) -> None:
    """A journey process (spawned): ``timers`` runs the run timers on a ``TimedRunner``,
    ``events`` the ``journey.events`` consumer — built from the service's own parts with
    the platform's default settings. Starts its runner at ``start_at`` (epoch seconds:
    the benchmark's due window, so that start-up is not measured); runs until SIGTERM."""
    asyncio.run(_worker(role, bootstrap, database_url, batch, start_at))


async def _worker(
    role: str, bootstrap: str, database_url: str, batch: int, start_at: float
) -> None:
    import time

    from libs.runtime.pipeline import ConsumerRunner
    from libs.runtime.resources import open_resources
    from libs.runtime.service import timed_runner, tune_gc
    from libs.runtime.settings import PlatformSettings
    from services.journey.apply import Engine
    from services.journey.events import EventHandler
    from services.journey.wakeups import RunTimers

    settings = PlatformSettings(
        kafka_bootstrap=bootstrap, database_url=database_url, database_pool_size=4
    )
    async with open_resources(settings, with_clickhouse=False, client_id=f"bench-{role}") as r:
        engine = Engine()
        runner: Any
        if role == "timers":
            runner = timed_runner(RunTimers(engine, r.producer, batch_size=batch), r)
        else:
            runner = ConsumerRunner(
                group="journey.events",
                topics=("events",),
                handler=EventHandler(r.sessions, r.producer, r.clock, engine),
                settings=settings,
                dlq_producer=r.producer,
            )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        tune_gc()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await runner.run()
