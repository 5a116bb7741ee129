"""Event → wait-for-event resolved → SendJob published, at RATE events/s (issue target:
2,000 events/s with p99 < 250 ms).

A private Tansu broker and a fresh database holding RUNS runs waiting at a
``wait_for_event`` node for ``checkout`` (a day's timeout), user ``u<i>`` each. The
service's ``journey.events`` consumer (``EventHandler`` in the real ``ConsumerRunner``,
platform defaults) runs in a spawned child process.

This process produces ``checkout`` events to ``events``, each for a different waiting
user (acks=all, paced every 10 ms), and reads ``send-jobs``. An event's latency runs from
just before its send to the broker's timestamp of the SendJob its run published. A
warm-up of 200 events at 100/s (group join, connections, caches) is not counted.

Tune with BENCH_JOURNEY_EV_RATE / _SECONDS / _RUNS.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench._infra import Database
from bench._journey_infra import EVENT_DEFINITION, percentile, rss_kib, seed_runs, worker_process
from libs.runtime import localinfra
from libs.runtime.kafka import ensure_topics, platform_topics

RATE = float(os.environ.get("BENCH_JOURNEY_EV_RATE", 2_000))
SECONDS = float(os.environ.get("BENCH_JOURNEY_EV_SECONDS", 30))
RUNS = int(os.environ.get("BENCH_JOURNEY_EV_RUNS", 100_000))
WARMUP = 200
TICK_S = 0.01


def event(app_id: str, index: int) -> tuple[bytes, bytes]:
    now = datetime.now(UTC).isoformat()
    body = {
        "schema_version": 1,
        "app_id": app_id,
        "event_id": uuid.uuid4().hex,
        "name": "checkout",
        "user_id": f"u{index}",
        "ts": now,
        "received_at": now,
        "source": "backend",
        "props": {"cart_id": f"c{index}"},
    }
    return f"{app_id}:u{index}".encode(), orjson.dumps(body)


class JobReader:
    """Reads send-jobs; ``arrived[user] = broker timestamp (s)`` of each user's job."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        self.arrived: dict[str, float] = {}
        self.repeats = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.topics()
        partitions = [
            TopicPartition("send-jobs", p)
            for p in self._consumer.partitions_for_topic("send-jobs") or ()
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            for records in batch.values():
                for record in records:
                    user = orjson.loads(record.value or b"{}")["user_key"]
                    if user in self.arrived:
                        self.repeats += 1
                    else:
                        self.arrived[user] = record.timestamp / 1000

    async def wait_for(self, users: list[str], within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if all(u in self.arrived for u in users):
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


async def produce_paced(
    producer: AIOKafkaProducer, app_id: str, indexes: range, rate: float
) -> dict[str, float]:
    """Send one event per index at ``rate``; user → send time (epoch s)."""
    sent: dict[str, float] = {}
    per_tick = max(1, round(rate * TICK_S))
    started = time.monotonic()
    pending = []
    for offset in range(0, len(indexes), per_tick):
        for index in indexes[offset : offset + per_tick]:
            key, value = event(app_id, index)
            sent[f"u{index}"] = time.time()
            pending.append(await producer.send("events", value, key=key))
        target = started + (offset + per_tick) / rate
        await asyncio.sleep(max(0.0, target - time.monotonic()))
    await asyncio.gather(*pending)
    return sent


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-journey-ev-"))
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    db = await Database.create(tmp)
    child = None
    reader = JobReader(broker.bootstrap)
    try:
        await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
        later = datetime.now(UTC) + timedelta(days=1)
        app_id, _ = await seed_runs(
            db.url,
            definition=EVENT_DEFINITION,
            node="w",
            waiting_for="checkout",
            total=RUNS,
            due=0,
            t0=later,
            rate=1.0,
            later=later,
        )
        child = multiprocessing.get_context("spawn").Process(
            target=worker_process,
            args=("events", broker.bootstrap, db.url, 0, 0.0),
            name="bench-journey-events",
        )
        child.start()
        await reader.start()
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        try:
            warm = await produce_paced(producer, app_id, range(WARMUP), 100)
            if not await reader.wait_for(list(warm), 120):
                raise RuntimeError("the journey consumer did not answer the warm-up")
            count = int(RATE * SECONDS)
            rss_before = rss_kib(child.pid) if child.pid else 0
            sent = await produce_paced(producer, app_id, range(WARMUP, WARMUP + count), RATE)
            drained = await reader.wait_for(list(sent), 30)
            rss_after = rss_kib(child.pid) if child.pid else 0
        finally:
            await producer.stop()
    finally:
        await reader.stop()
        if child is not None:
            child.terminate()
            child.join(30)
        await db.drop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    latencies = [reader.arrived[u] - t for u, t in sent.items() if u in reader.arrived]
    missing = len(sent) - len(latencies)
    # Unanswered events count as slower than every answered one.
    ranked = latencies + [float("inf")] * missing
    p99 = percentile(ranked, 99)
    figures = {
        "runs waiting for the event": RUNS,
        "events a second (offered)": RATE,
        "events": len(sent),
        "answered": len(latencies),
        "drained": drained,
        "jobs published twice": reader.repeats,
        "latency p50 ms": round(percentile(ranked, 50) * 1000, 1),
        "latency p95 ms": round(percentile(ranked, 95) * 1000, 1),
        "latency p99 ms": round(p99 * 1000, 1),
        "latency max ms": round(max(ranked, default=float("nan")) * 1000, 1),
        "consumer RSS before / after (MiB)": [
            round(rss_before / 1024, 1),
            round(rss_after / 1024, 1),
        ],
    }
    targets = [
        {
            "name": "event → SendJob p99 (ms)",
            "value": round(p99 * 1000, 1),
            "maximum": 250,
            "met": p99 < 0.25,
        },
    ]
    return {"figures": figures, "targets": targets}
