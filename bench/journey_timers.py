"""Journey wake-ups: 1,000,000 waiting runs in Postgres; RATE wake-ups a second fall due
for SECONDS; two journey processes share the timers (issue targets: 5,000 wake-ups/s,
wake-up lag p99 < 1 s, journey RSS flat, no wake-up handled twice, none lost).

A private Tansu broker and a fresh database. The runs are written by one statement:
RUNS runs of a "wait, then push" journey, the first RATE × SECONDS due at an even pace
from ``t0`` (a few seconds after the workers start), the rest in ten days. WORKERS
journey processes (spawned, each its own core when there is one) run the service's
``RunTimers`` on the kit's ``TimedRunner`` with the platform's default settings and the
system clock; each claim takes up to BATCH runs ``FOR UPDATE SKIP LOCKED``.

This process reads ``send-jobs`` from the start. A wake-up's lag runs from its run's due
time to the broker's timestamp of its SendJob (claimed, advanced, written, published).
Every job id must arrive exactly once; afterwards no due run may still wait. RSS of each
worker is sampled every second.

Tune with BENCH_JOURNEY_RUNS / _RATE / _SECONDS / _WORKERS / _BATCH.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._infra import Database
from bench._journey_infra import (
    WAKE_DEFINITION,
    percentile,
    raw_url,
    rss_kib,
    seed_runs,
    worker_process,
)
from libs.runtime import localinfra
from libs.runtime.kafka import ensure_topics, platform_topics

RUNS = int(os.environ.get("BENCH_JOURNEY_RUNS", 1_000_000))
RATE = float(os.environ.get("BENCH_JOURNEY_RATE", 5_000))
SECONDS = float(os.environ.get("BENCH_JOURNEY_SECONDS", 60))
WORKERS = int(os.environ.get("BENCH_JOURNEY_WORKERS", 2))
BATCH = int(os.environ.get("BENCH_JOURNEY_BATCH", 1000))
# Seeding runs at ~10,000 rows/s on a busy 2-core machine; the due window starts after it
# and the workers' start-up.
LEAD_S = 30.0 + RUNS / 8_000
# Long enough for every due wake-up to be handled however far behind the workers fall:
# lateness is measured as lag, never mistaken for a loss.
DRAIN_S = max(120.0, SECONDS * 5)


async def read_jobs(
    bootstrap: str, due: int, t0: datetime, deadline: float, rss: dict[int, list[tuple[int, int]]]
) -> tuple[dict[str, float], int]:
    """job id → lag (s) of every SendJob until ``due`` distinct ones arrived or the
    deadline passed; and how many arrived more than once. Samples each worker's RSS
    every second with the jobs received so far."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    lags: dict[str, float] = {}
    repeats = 0
    next_sample = time.monotonic()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition("send-jobs", p) for p in consumer.partitions_for_topic("send-jobs") or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while len(lags) < due and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                for record in records:
                    job = orjson.loads(record.value or b"{}")
                    index = int(job["user_key"][1:])
                    due_at = t0.timestamp() + index / RATE
                    if job["job_id"] in lags:
                        repeats += 1
                        continue
                    lags[job["job_id"]] = record.timestamp / 1000 - due_at
            if time.monotonic() >= next_sample:
                for pid, samples in rss.items():
                    samples.append((len(lags), rss_kib(pid)))
                next_sample += 1.0
        return lags, repeats
    finally:
        await consumer.stop()


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-journey-"))
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    db = await Database.create(tmp)
    workers: list[Any] = []
    due = int(RATE * SECONDS)
    try:
        await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
        seeded = time.perf_counter()
        t0 = datetime.now(UTC) + timedelta(seconds=LEAD_S)
        await seed_runs(
            db.url,
            definition=WAKE_DEFINITION,
            node="wait",
            waiting_for=None,
            total=RUNS,
            due=due,
            t0=t0,
            rate=RATE,
            later=t0 + timedelta(days=10),
        )
        seed_s = time.perf_counter() - seeded
        if datetime.now(UTC) > t0 - timedelta(seconds=5):
            raise RuntimeError("seeding took longer than planned; raise LEAD_S")
        print(
            f"  seeded {RUNS} runs in {seed_s:.1f} s; {due} due from {t0.isoformat()}", flush=True
        )
        context = multiprocessing.get_context("spawn")
        for i in range(WORKERS):
            process = context.Process(
                target=worker_process,
                args=("timers", broker.bootstrap, db.url, BATCH, t0.timestamp() - 2),
                name=f"bench-journey-{i}",
            )
            process.start()
            workers.append(process)
        rss: dict[int, list[tuple[int, int]]] = {p.pid: [] for p in workers if p.pid is not None}
        deadline = time.monotonic() + (t0 - datetime.now(UTC)).total_seconds() + SECONDS + DRAIN_S
        lags, repeats = await read_jobs(broker.bootstrap, due, t0, deadline, rss)
        connection = await asyncpg.connect(raw_url(db.url))
        try:
            left = await connection.fetchval(
                "SELECT count(*) FROM journey_runs WHERE status = 'waiting' AND wake_at <= now()"
            )
            completed = await connection.fetchval(
                "SELECT count(*) FROM journey_runs WHERE status = 'completed'"
            )
            waiting = await connection.fetchval(
                "SELECT count(*) FROM journey_runs WHERE status = 'waiting'"
            )
        finally:
            await connection.close()
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.join(30)
        await db.drop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    values = list(lags.values())
    # Handled a second: the due wake-ups over the time from the first due moment to the
    # last job's arrival (the due window if the workers kept up, longer if they fell behind).
    span = SECONDS + max(0.0, max(values, default=0.0))
    achieved = len(values) / span if values else 0.0
    # Flat: from the sample where a tenth of the wake-ups were handled (warmed up) to
    # the end, how much each worker's RSS grew.
    growth: dict[str, dict[str, float]] = {}
    rss_growth = 0.0
    for pid, samples in rss.items():
        warm = [kib for received, kib in samples if received >= due // 10] or [0]
        growth[str(pid)] = {
            "warm_mib": round(warm[0] / 1024, 1),
            "end_mib": round(warm[-1] / 1024, 1),
            "peak_mib": round(max(warm) / 1024, 1),
        }
        rss_growth = max(rss_growth, (max(warm) - warm[0]) / 1024)
    p99 = percentile(values, 99)
    figures = {
        "runs waiting in Postgres": RUNS,
        "due wake-ups": due,
        "wake-ups a second (offered)": RATE,
        "journey processes": WORKERS,
        "claim batch": BATCH,
        "jobs received (distinct)": len(values),
        "jobs received twice": repeats,
        "due runs still waiting after the drain": left,
        "runs completed": completed,
        "runs still waiting (not due)": waiting,
        "wake-ups a second (handled: due count / (window + last lag))": round(achieved),
        "lag p50 ms": round(percentile(values, 50) * 1000, 1),
        "lag p95 ms": round(percentile(values, 95) * 1000, 1),
        "lag p99 ms": round(p99 * 1000, 1),
        "lag max ms": round(max(values, default=float("nan")) * 1000, 1),
        "worker RSS (MiB)": growth,
        "worker RSS growth after warm-up (MiB)": round(rss_growth, 1),
        "seed seconds": round(seed_s, 1),
    }
    targets = [
        {
            "name": "wake-ups a second handled",
            "value": round(achieved),
            "minimum": RATE,
            "met": achieved >= RATE * 0.98,
        },
        {
            "name": "wake-up lag p99 (ms)",
            "value": round(p99 * 1000, 1),
            "maximum": 1000,
            "met": p99 < 1.0,
        },
        {
            "name": "wake-ups lost",
            "value": due - len(values),
            "maximum": 1,
            "met": len(values) == due and left == 0,
        },
        {"name": "wake-ups handled twice", "value": repeats, "maximum": 1, "met": repeats == 0},
        {
            "name": "worker RSS growth (MiB)",
            "value": round(rss_growth, 1),
            "maximum": 50,
            "met": rss_growth < 50,
        },
    ]
    return {"figures": figures, "targets": targets}
