"""A 5-condition segment rule over 1,000,000 profiles in Postgres (issue target < 3 s).

Fills a fresh database (the machine's Postgres if it answers, else embedded) with N
generated users (``bench._segments_infra``: realistic profiles and ~12 daily-counter rows
each over 90 days) by binary COPY, VACUUM ANALYZEs, then times the rule
``RULES["s_buyers_tehran"]`` — city eq Tehran, ≥ 3 ``$open`` within 30 days, revenue > 0
within 14 days, last_seen within 7 days, reachable by push — compiled by
``libs.rules.sql``:

- ``count``: ``SELECT count(*) … WHERE app_id = … AND <rule>`` (admin's match count), in
  a transaction with JIT off as the scheduler and admin run it (``sql.without_jit``);
  ``count_default_jit`` is the same with the server's JIT settings;
- ``diff``: the scheduler's membership comparison — ``matching_users`` (the user keys),
  the segment's stored members (``store.members``; seeded with the rule's answer an hour
  earlier) and their symmetric difference in Python;
- ``preview``: admin's ``preview`` (count, reach per channel in the same scan, a sample
  of 20 most recently seen);
- ``rfm_thresholds``: the app's RFM quintiles (one scan of the profiles; what the
  consumer now caches per app).

The first ``count`` after loading is reported as "cold" (Postgres' buffers do not hold
the tables; the OS page cache is not dropped — the machine is shared); the rest are the
median of REPEATS. ``EXPLAIN (ANALYZE, BUFFERS)`` of the count is stored with the result.
Tune with BENCH_SEG_BULK_USERS / BENCH_SEG_BULK_REPEATS. To iterate without reloading,
BENCH_SEG_BULK_DATABASE=<name> uses (and keeps) that database on the machine's Postgres,
loading it only when it does not hold the N users yet; "cold" then is only the first
count of the run (the figures to report come from a fresh database).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bench._segments_infra import RULES, Database, load_users, seed_memberships
from libs.rules.language import parse_rule
from libs.rules.semantics import NO_CONTEXT
from libs.rules.sql import compile_rule, matching_users, rfm_thresholds, without_jit
from libs.runtime import postgres
from libs.runtime.tables import Membership, Profile
from services.admin.store import preview
from services.segmenter import store

USERS = int(os.environ.get("BENCH_SEG_BULK_USERS", "1000000"))
REPEATS = int(os.environ.get("BENCH_SEG_BULK_REPEATS", "5"))
KEEP = os.environ.get("BENCH_SEG_BULK_DATABASE") or None
TARGET_SECONDS = 3.0
APP = "bench"
SEGMENT = "s_buyers_tehran"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def count_statement() -> Select[Any]:
    node = parse_rule(RULES[SEGMENT])
    return select(func.count()).where(
        Profile.app_id == APP, compile_rule(node, app_id=APP, now=NOW, context=NO_CONTEXT)
    )


async def explain(session: AsyncSession, stmt: Select[Any]) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of ``stmt`` with its bound parameters."""
    connection = await session.connection()
    compiled = stmt.compile(dialect=connection.dialect)
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    raw = (await connection.get_raw_connection()).driver_connection
    assert raw is not None
    plan = await raw.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", *params)
    return "\n".join(r[0] for r in plan)


async def timed(step: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = await step()
    return time.perf_counter() - started, value


async def measure(url: str) -> dict[str, Any]:
    engine = postgres.create_engine(url, pool_size=2)
    sessions = postgres.session_factory(engine)
    node = parse_rule(RULES[SEGMENT])
    try:
        # The segment's stored members: the rule's answer an hour before NOW.
        async with sessions() as session, session.begin():
            await session.execute(
                delete(Membership).where(Membership.app_id == APP, Membership.segment_id == SEGMENT)
            )
            members = await seed_memberships(
                session,
                app_id=APP,
                segments={SEGMENT: node},
                at=NOW - timedelta(hours=1),
                context=NO_CONTEXT,
            )
        # ``bulk`` runs as the scheduler and admin do (JIT off for the transaction);
        # ``plain`` with the server's default JIT settings, for comparison.
        async with sessions() as bulk, sessions() as plain:
            await without_jit(bulk)
            stmt = count_statement()
            cold, matched = await timed(lambda: bulk.scalar(stmt))
            print(f"  count (cold): {cold:.2f} s, {matched} users", flush=True)
            differing = 0

            async def diff() -> int:
                matching = set(await bulk.scalars(matching_users(node, app_id=APP, now=NOW)))
                stored = await store.members(bulk, app_id=APP, segment_id=SEGMENT)
                return len(matching ^ stored)

            steps: dict[str, Callable[[], Awaitable[Any]]] = {
                "count": lambda: bulk.scalar(stmt),
                "count_default_jit": lambda: plain.scalar(stmt),
                "diff": diff,
                "preview": lambda: preview(bulk, app_id=APP, node=node, now=NOW, sample=20),
                "rfm_thresholds": lambda: rfm_thresholds(bulk, app_id=APP, now=NOW),
            }
            samples: dict[str, list[float]] = {name: [] for name in steps}
            for rep in range(REPEATS):
                for name, step in steps.items():
                    seconds, value = await timed(step)
                    samples[name].append(seconds)
                    if name == "diff":
                        differing = value
                print(
                    f"  rep {rep}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in samples.items()),
                    flush=True,
                )
            plan = await explain(bulk, stmt)
            plan_jit = await explain(plain, stmt)
    finally:
        await engine.dispose()
    return {
        "cold": cold,
        "matched": matched,
        "members_seeded": members,
        "differing": differing,
        "samples": samples,
        "plan": plan,
        "plan_default_jit": plan_jit,
    }


async def holds_users(url: str) -> bool:
    """Whether the database holds exactly the benchmark's users (else it is emptied)."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM profiles WHERE app_id = $1", APP) == USERS:
            return True
        await conn.execute("DELETE FROM segmenter_daily_counters WHERE app_id = $1", APP)
        await conn.execute("DELETE FROM profiles WHERE app_id = $1", APP)
        return False
    finally:
        await conn.close()


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-segbulk-"))
    db = await Database.create(tmp, name=KEEP)
    try:
        loaded: dict[str, Any] = {"reused_database": KEEP}
        if KEEP is None or not await holds_users(db.url):
            loaded = await load_users(db.url, APP, USERS, NOW)
        print(f"  loaded: {loaded}", flush=True)
        outcome = await measure(db.url)
    finally:
        if KEEP is None or db.embedded is not None:
            await db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {k: round(statistics.median(v), 3) for k, v in outcome["samples"].items()}
    print("\n".join(f"  | {line}" for line in outcome["plan"].splitlines()[:40]), flush=True)
    count_s = medians["count"]
    return {
        "parameters": {
            "profiles": USERS,
            "rule": RULES[SEGMENT],
            "now": NOW.isoformat(),
            "repeats": REPEATS,
            "statistic": "median (cold = the first count after loading)",
            "postgres": db.server,
            "load": loaded,
            "note": (
                "2 cores shared with other workers; Postgres shared_buffers as configured"
                " on the machine; the OS page cache was not dropped for the cold run"
            ),
        },
        "figures": {
            "count_seconds": count_s,
            "count_cold_seconds": round(outcome["cold"], 3),
            "count_default_jit_seconds": medians["count_default_jit"],
            "diff_seconds": medians["diff"],
            "preview_seconds": medians["preview"],
            "rfm_thresholds_seconds": medians["rfm_thresholds"],
            "matching_users": outcome["matched"],
            "stored_members": outcome["members_seeded"],
            "differing_users": outcome["differing"],
        },
        "targets": [
            {
                "name": "count_seconds",
                "value": count_s,
                "maximum": TARGET_SECONDS,
                "met": count_s < TARGET_SECONDS,
            },
            {
                "name": "diff_seconds",
                "value": medians["diff"],
                "maximum": TARGET_SECONDS,
                "met": medians["diff"] < TARGET_SECONDS,
            },
        ],
        "samples": {k: [round(s, 3) for s in v] for k, v in outcome["samples"].items()},
        "plan": outcome["plan"].splitlines(),
        "plan_default_jit": outcome["plan_default_jit"].splitlines(),
    }
