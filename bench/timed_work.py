"""Timed work (``libs.runtime.timed``) over due rows in Postgres: throughput and wake-up lag.

A database of its own (``bench._infra.Database``: the machine's Postgres if it answers)
with a table ``bench_timers (id bigint primary key, due_at timestamptz)`` indexed on
``due_at`` — the shape of journey timers. The work item claims with
``SELECT id, due_at … WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED``
and its handler deletes the claimed rows (``DELETE … WHERE id = ANY($1)``), both on the
session's asyncpg connection (``postgres.fetch_raw``); the runner commits after each.

- ``throughput``: N rows (default 1,000,000) all due, then 1 and then 2 replicas — each
  a ``TimedRunner`` in a process of its own, started together — drain the table in
  batches of ``BATCH``; rows/s = N / wall time from the start signal until the last
  replica found nothing left. The table is refilled (and vacuumed) between runs.
- ``timer_lag``: one runner on the wall clock (``SystemClock``) while rows fall due at
  ``RATE`` per second for ``SECONDS`` (written beforehand, due in the future): for each
  row, the time from its ``due_at`` to its handler (before the commit). The runner sleeps
  until the next due row after each non-full batch (``next_due``).
- ``wake_lag``: one idle runner (poll interval 1 h); a row due now is committed and
  ``wake()`` called, ``WAKES`` times: the time from the call to the row's handler.

Tune with BENCH_TIMED_ROWS, BENCH_TIMED_BATCH, BENCH_TIMED_RATE, BENCH_TIMED_SECONDS,
BENCH_TIMED_WAKES. The client and Postgres share the machine's 2 cores.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from bench._infra import Database
from libs.runtime import postgres
from libs.runtime.clock import ManualClock, SystemClock
from libs.runtime.timed import TimedRunner, TimedWork

ROWS = int(os.environ.get("BENCH_TIMED_ROWS", "1000000"))
BATCH = int(os.environ.get("BENCH_TIMED_BATCH", "1000"))
RATE = int(os.environ.get("BENCH_TIMED_RATE", "5000"))
SECONDS = float(os.environ.get("BENCH_TIMED_SECONDS", "10"))
WAKES = int(os.environ.get("BENCH_TIMED_WAKES", "300"))
TARGET_ROWS_PER_S = 5_000  # the journeys' wake-up rate the primitive is to carry
T0 = datetime(2026, 12, 1, tzinfo=UTC)

CLAIM = (
    "SELECT id, due_at FROM bench_timers WHERE due_at <= $1 "
    "ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
DELETE = "DELETE FROM bench_timers WHERE id = ANY($1::bigint[])"
NEXT = "SELECT min(due_at) FROM bench_timers WHERE due_at > $1"


class Timers(TimedWork[Any]):
    """The bench's work item; ``lags`` collects (handled − due) seconds when set."""

    name = "bench.timers"

    def __init__(self, batch_size: int, *, poll_interval: timedelta = timedelta(seconds=1)):
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lags: list[float] | None = None
        self.handled_event: asyncio.Event | None = None
        self.expected = 0  # with ``lags``: ``all_handled`` is set once this many are
        self.all_handled = asyncio.Event()

    async def claim(self, session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Any]:
        return await postgres.fetch_raw(session, CLAIM, now, limit)

    def due_at(self, item: Any) -> datetime:
        return item["due_at"]  # type: ignore[no-any-return]

    async def handle(self, session: AsyncSession, items: Sequence[Any], *, now: datetime) -> None:
        if self.lags is not None:
            at = datetime.now(UTC)
            self.lags.extend((at - item["due_at"]).total_seconds() for item in items)
            if len(self.lags) >= self.expected:
                self.all_handled.set()
        await postgres.fetch_raw(session, DELETE, [item["id"] for item in items])
        if self.handled_event is not None:
            self.handled_event.set()

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        rows = await postgres.fetch_raw(session, NEXT, after)
        return rows[0][0]  # type: ignore[no-any-return]


async def fill(url: str, n: int, *, first_due: datetime, step: timedelta) -> None:
    """``n`` rows due from ``first_due`` every ``step``, in id order; vacuumed."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_timers (id bigint PRIMARY KEY, "
            "due_at timestamptz NOT NULL)"
        )
        await conn.execute("CREATE INDEX IF NOT EXISTS bench_timers_due ON bench_timers (due_at)")
        await conn.execute("TRUNCATE bench_timers")
        await conn.execute(
            "INSERT INTO bench_timers SELECT g, $1::timestamptz + (g - 1) * $2::interval "
            "FROM generate_series(1, $3::bigint) AS g",
            first_due,
            step,
            n,
        )
        await conn.execute("VACUUM ANALYZE bench_timers")
    finally:
        await conn.close()


def _replica(url: str, batch: int, go: Any, done: Any) -> None:
    """A replica process: a runner draining every due row, then its count to ``done``."""

    async def main() -> int:
        engine = postgres.create_engine(url, pool_size=2)
        # Nothing is due yet on this clock: the first round only connects and prepares.
        clock = ManualClock(T0 - timedelta(days=60))
        runner = TimedRunner(Timers(batch), sessions=postgres.session_factory(engine), clock=clock)
        try:
            await runner.run_once()
            go.wait()
            clock.set(T0)
            # run() loops at once after a full batch, as here; a round that finds
            # nothing means the table is empty or the other replica holds the rest.
            while await runner.run_once():
                pass
            return runner.handled
        finally:
            await engine.dispose()

    done.put(asyncio.run(main()))


async def throughput(url: str, replicas: int) -> dict[str, Any]:
    # All due on the replicas' clock (T0), oldest first by id.
    await fill(url, ROWS, first_due=T0 - timedelta(days=30), step=timedelta(milliseconds=1))
    context = multiprocessing.get_context("spawn")
    go, done = context.Event(), context.Queue()
    processes = [
        context.Process(target=_replica, args=(url, BATCH, go, done)) for _ in range(replicas)
    ]
    for process in processes:
        process.start()
    await asyncio.sleep(3)  # every replica connected and waiting (spawn imports take ~1 s)
    started = time.perf_counter()
    go.set()
    counts = [await asyncio.to_thread(done.get, True, 600) for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        await asyncio.to_thread(process.join, 30)
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval("SELECT count(*) FROM bench_timers")
    finally:
        await conn.close()
    return {
        "replicas": replicas,
        "seconds": round(seconds, 2),
        "rows_per_s": round(sum(counts) / seconds),
        "handled_per_replica": counts,
        "left": left,
    }


async def timer_lag(url: str) -> dict[str, Any]:
    count = int(RATE * SECONDS)
    first = datetime.now(UTC) + timedelta(seconds=3)
    await fill(url, count, first_due=first, step=timedelta(seconds=1 / RATE))
    engine = postgres.create_engine(url, pool_size=2)
    work = Timers(BATCH)
    work.lags, work.expected = [], count
    runner = TimedRunner(work, sessions=postgres.session_factory(engine), clock=SystemClock())
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(work.all_handled.wait(), SECONDS + 60)
    finally:
        runner.stop()
        await task
        await engine.dispose()
    return _percentiles(work.lags, handled=runner.handled, expected=count)


async def wake_lag(url: str) -> dict[str, Any]:
    await fill(url, 0, first_due=T0, step=timedelta(0))
    engine = postgres.create_engine(url, pool_size=2)
    sessions = postgres.session_factory(engine)
    work = Timers(BATCH, poll_interval=timedelta(hours=1))
    work.handled_event = asyncio.Event()
    runner = TimedRunner(work, sessions=sessions, clock=SystemClock())
    task = asyncio.create_task(runner.run())
    conn = await asyncpg.connect(url)
    lags: list[float] = []
    try:
        await runner.ready.wait()
        for i in range(WAKES):
            await asyncio.sleep(0.01)  # the runner is asleep again
            work.handled_event.clear()
            await conn.execute(
                "INSERT INTO bench_timers VALUES ($1, now())", i + 1
            )  # committed, as a consumer's write would be
            woke = time.perf_counter()
            runner.wake()
            await asyncio.wait_for(work.handled_event.wait(), 10)
            lags.append(time.perf_counter() - woke)
    finally:
        runner.stop()
        await task
        await conn.close()
        await engine.dispose()
    return _percentiles(lags, handled=runner.handled, expected=WAKES)


def _percentiles(lags: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(lags)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, **extra}
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        **extra,
    }


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-timed-"))
    db = await Database.create(tmp)
    try:
        one = await throughput(db.url, 1)
        print(f"  1 replica: {one}", flush=True)
        two = await throughput(db.url, 2)
        print(f"  2 replicas: {two}", flush=True)
        timers = await timer_lag(db.url)
        print(f"  timer lag: {timers}", flush=True)
        wakes = await wake_lag(db.url)
        print(f"  wake lag: {wakes}", flush=True)
    finally:
        await db.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "parameters": {
            "rows": ROWS,
            "batch": BATCH,
            "timer_rate_per_s": RATE,
            "timer_seconds": SECONDS,
            "wakes": WAKES,
            "handler": "DELETE of the claimed rows; commit per batch",
            "note": "2 cores shared by the replicas, Postgres and other workers",
        },
        "figures": {
            "rows_per_s_1_replica": one["rows_per_s"],
            "rows_per_s_2_replicas": two["rows_per_s"],
            "seconds_1_replica": one["seconds"],
            "seconds_2_replicas": two["seconds"],
            "handled_per_replica_2": two["handled_per_replica"],
            "rows_left": one["left"] + two["left"],
            "timer_lag_p50_ms": timers["p50_ms"],
            "timer_lag_p99_ms": timers["p99_ms"],
            "timer_lag_max_ms": timers["max_ms"],
            "timers_handled": f"{timers['handled']}/{timers['expected']}",
            "wake_lag_p50_ms": wakes["p50_ms"],
            "wake_lag_p99_ms": wakes["p99_ms"],
            "wake_lag_max_ms": wakes["max_ms"],
        },
        "targets": [
            {
                "name": "rows_per_s_1_replica",
                "value": one["rows_per_s"],
                "minimum": TARGET_ROWS_PER_S,
                "met": one["rows_per_s"] >= TARGET_ROWS_PER_S,
            },
            {
                "name": "rows_per_s_2_replicas",
                "value": two["rows_per_s"],
                "minimum": TARGET_ROWS_PER_S,
                "met": two["rows_per_s"] >= TARGET_ROWS_PER_S,
            },
        ],
    }
