"""Real time: event in → SegmentChanged out, at a paced RATE events/s (issue target:
2,000 events/s with p99 < 250 ms).

A private Tansu broker and a fresh Postgres database. The app has the 12 realistic
segments of ``bench._segments_infra.RULES`` plus ``s_subscribers`` ("started a
subscription in the last 30 days"), USERS existing users (profiles and daily counters by
COPY, memberships of every segment as the scheduler would have stored them an hour ago,
each user's device linked, three recent events each), every table ANALYZEd.

The segmenter's consumer runs in a child process (its own core, as deployed), built by
the service's own wiring (``services.segmenter.service.SERVICE`` over
``open_resources``: the real ``ConsumerRunner`` and ``ProfileUpdater``) with the
platform's default settings (fetch_max_wait 10 ms, batches of up to 500, linger 5 ms).

This process produces ``subscription_started`` events to ``events``, each for a different
existing user (pre-encoded, sent every 10 ms, acks=all, linger 5 ms), and reads
``segment-changes`` with a consumer of the same fetch settings. An event's latency runs
from just before its ``send`` to the receipt of the ``entered s_subscribers`` record
naming its user and the event as its cause. Three phases, each followed by up to
DRAIN_TIMEOUT_S for the last answers:

- warm-up: 200 events at 100/s (group joins, connections, caches), not counted;
- light: LIGHT_RATE events/s for 15 s — the pipeline's latency without a backlog;
- target: RATE events/s for SECONDS — the issue's figure.

Events still unanswered after the drain count as slower than every answered one.
Tune with BENCH_SEG_RT_RATE / _SECONDS / _LIGHT_RATE / _DRAIN_S / _USERS.

Tansu answers a waiting fetch only when ``fetch_max_wait`` expires (README, Known
limits), so each of the two consumer hops costs up to 10 ms whatever the load.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench._segments_infra import RULES, Database, load_users, seed_memberships, user_key
from libs.rules.language import parse_rule
from libs.rules.semantics import Context
from libs.rules.sql import rfm_thresholds
from libs.runtime import localinfra, postgres
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.runtime.resources import open_resources
from libs.runtime.service import tune_gc
from libs.runtime.settings import KafkaSettings, PlatformSettings
from libs.runtime.tables import Segment
from libs.runtime.tenancy import provision_app
from libs.schemas import Event, contract_for, encode

RATE = int(os.environ.get("BENCH_SEG_RT_RATE", "2000"))
SECONDS = float(os.environ.get("BENCH_SEG_RT_SECONDS", "20"))
LIGHT_RATE = int(os.environ.get("BENCH_SEG_RT_LIGHT_RATE", "20"))
LIGHT_SECONDS = 15.0
TICK_S = 0.01
WARMUP = 200
DRAIN_TIMEOUT_S = float(os.environ.get("BENCH_SEG_RT_DRAIN_S", "60"))
TARGET_P99_MS = 250.0
TARGET = "s_subscribers"
TARGET_RULE = {"event": "subscription_started", "within": {"days": 30}}
EVENTS = int(RATE * SECONDS)
USERS = int(
    os.environ.get(
        "BENCH_SEG_RT_USERS", str(max(100_000, EVENTS + WARMUP + int(LIGHT_RATE * LIGHT_SECONDS)))
    )
)


# --- the segmenter, in a child process ----------------------------------------------------


def consumer_process(bootstrap: str, database_url: str, counts: Any) -> None:
    """The segmenter's consumer as ``hodhod up`` would build it; runs until SIGTERM.
    ``counts`` (a shared array) receives the records and batches it has handled."""
    asyncio.run(_consume(bootstrap, database_url, counts))


async def _report_batches(group: str, counts: Any) -> None:
    """Copy the runner's own metrics (records taken, batches handled) into ``counts``
    every 100 ms, for the parent to read per phase."""
    from prometheus_client import REGISTRY

    while True:
        records = sum(
            REGISTRY.get_sample_value(
                "hodhod_consumer_records_total", {"consumer": group, "topic": topic}
            )
            or 0.0
            for topic in ("events", "attributions", "config-changes")
        )
        batches = REGISTRY.get_sample_value(
            "hodhod_consumer_batch_seconds_count", {"consumer": group}
        )
        counts[0], counts[1] = records, batches or 0.0
        await asyncio.sleep(0.1)


async def _consume(bootstrap: str, database_url: str, counts: Any) -> None:
    from services.segmenter.service import SERVICE

    settings = PlatformSettings(
        kafka_bootstrap=bootstrap, database_url=database_url, log_level="WARNING"
    )
    async with open_resources(
        settings, with_clickhouse=False, client_id="bench-segmenter"
    ) as resources:
        (runner,) = SERVICE.consumers(resources)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        tune_gc()
        reporter = asyncio.create_task(_report_batches(runner.group, counts))
        try:
            await runner.run()
        finally:
            reporter.cancel()


# --- load and measurement -----------------------------------------------------------------


def make_events(app_id: str, users: list[int]) -> list[tuple[str, str, bytes, bytes]]:
    """(event id, user key, Kafka key, value) of one ``subscription_started`` per user."""
    key_of = contract_for("events").key
    now = datetime.now(UTC)
    out = []
    for i in users:
        event = Event(
            app_id=app_id,
            event_id=f"sub-{i}-{uuid.uuid4().hex[:8]}",
            name="subscription_started",
            user_id=user_key(i),
            device_id=f"dev{i}",
            ts=now,
            received_at=now,
            source="sdk",
            platform="android",
            props={"plan": "plus", "period": "monthly"},
        )
        out.append((event.event_id, event.user_key, key_of(event).encode(), encode(event)))
    return out


class ChangeReader:
    """Reads ``segment-changes`` and stamps each ``entered TARGET`` on receipt, by
    (user key, cause event id)."""

    def __init__(self, bootstrap: str, settings: KafkaSettings) -> None:
        self.received: dict[tuple[str, str], float] = {}
        self.other_changes = 0
        self._consumer = AIOKafkaConsumer(
            "segment-changes",
            bootstrap_servers=bootstrap,
            group_id=f"bench-reader-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_poll_records=settings.kafka_max_batch,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self._consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in raw.values():
                for record in records:
                    change = orjson.loads(record.value)
                    if change["segment_id"] == TARGET and change["change"] == "entered":
                        key = (change["user_key"], change["cause_event_id"])
                        self.received.setdefault(key, now)
                    else:
                        self.other_changes += 1

    async def wait_for(self, keys: list[tuple[str, str]], timeout_s: float) -> bool:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            if all(k in self.received for k in keys):
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def produce_paced(
    producer: AIOKafkaProducer, events: list[tuple[str, str, bytes, bytes]], rate: int
) -> tuple[dict[tuple[str, str], float], float]:
    """Send ``events`` at ``rate``/s in ticks of TICK_S (or one event per tick below
    1/TICK_S per second); returns each one's send time
    and the seconds the whole send took (every delivery acknowledged)."""
    tick = max(TICK_S, 1 / rate)  # below 100/s, one event per tick
    per_tick = max(1, round(rate * tick))
    sent: dict[tuple[str, str], float] = {}
    futures = []
    started = time.perf_counter()
    for k, first in enumerate(range(0, len(events), per_tick)):
        delay = started + k * tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for event_id, key_user, key, value in events[first : first + per_tick]:
            sent[(key_user, event_id)] = time.perf_counter()
            futures.append(await producer.send("events", value=value, key=key))
    await asyncio.gather(*futures)
    return sent, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def postgres_cpu(database_url: str) -> dict[int, float]:
    """CPU seconds used so far by each server process of this database's connections
    (the consumer's pool; the pool may open more during a phase, so callers diff by pid)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    used = {}
    for row in rows:
        try:
            used[row["pid"]] = cpu_seconds(row["pid"])
        except FileNotFoundError:
            continue  # the connection closed meanwhile
    return used


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def setup(db: Database, bootstrap: str) -> tuple[str, dict[str, Any]]:
    await ensure_topics(bootstrap, platform_topics(), partitions=3)
    app_id = (await provision_app(db.url, name="bench")).app_id
    now = datetime.now(UTC)
    loaded = await load_users(db.url, app_id, USERS, now)
    rules = {**RULES, TARGET: TARGET_RULE}
    engine = postgres.create_engine(db.url, pool_size=1)
    try:
        async with postgres.session_factory(engine)() as session, session.begin():
            session.add_all(
                Segment(id=sid, app_id=app_id, name=sid, rule=rule, created_at=now, updated_at=now)
                for sid, rule in rules.items()
            )
            earlier = now - timedelta(hours=1)
            context = Context(rfm=await rfm_thresholds(session, app_id=app_id, now=earlier))
            loaded["memberships"] = await seed_memberships(
                session,
                app_id=app_id,
                segments={sid: parse_rule(rule) for sid, rule in rules.items()},
                at=earlier,
                context=context,
            )
    finally:
        await engine.dispose()
    loaded.update(await seed_history(db.url, app_id))
    return app_id, loaded


async def seed_history(url: str, app_id: str) -> dict[str, Any]:
    """What a live database holds beside profiles and counters: each user's device linked
    to it (the device its events come from) and some recent events (three ``view_item``
    of the last week per user, of a category no rule asks for); then ANALYZE every
    table, as autovacuum would have (it is off on the bench machine). Without this the
    aliases and recent-events tables start empty and unanalysed, and the planner serves
    the consumer's ``= ANY(:keys)`` lookups from the ``app_id`` prefix alone, reading
    the whole table each batch: those two reads then took most of Postgres' time."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO device_aliases (app_id, device_id, user_key, updated_at, linked_at)"
            " SELECT app_id, 'dev' || substr(user_key, 2)::int, user_key, first_seen,"
            " first_seen FROM profiles WHERE app_id = $1",
            app_id,
        )
        await conn.execute(
            "INSERT INTO segmenter_recent_events (app_id, event_id, user_key, name, ts, props)"
            " SELECT app_id, 'seed-' || user_key || '-' || n, user_key, 'view_item',"
            " now() - n * interval '2 days', '{\"category\": \"garden\"}'::jsonb"
            " FROM profiles, generate_series(1, 3) AS n WHERE app_id = $1",
            app_id,
        )
        await conn.execute("ANALYZE")
        aliases = await conn.fetchval("SELECT count(*) FROM device_aliases")
        recent = await conn.fetchval("SELECT count(*) FROM segmenter_recent_events")
    finally:
        await conn.close()
    return {"device_aliases": aliases, "recent_events": recent}


def summarize(
    sent: dict[tuple[str, str], float],
    received: dict[tuple[str, str], float],
    send_s: float,
    seconds: float,
) -> dict[str, Any]:
    """Latency percentiles over every sent event; one never answered counts as slower
    than any answered (a percentile that falls on those is None)."""
    latencies = {k: (received[k] - t) * 1000 for k, t in sent.items() if k in received}
    ranked: list[float] = sorted(latencies.values()) + [math.inf] * (len(sent) - len(latencies))

    def pct(p: float) -> float | None:
        value = percentile(ranked, p)
        return round(value, 1) if math.isfinite(value) else None

    first_sent = min(sent.values())
    answered = sorted(received[k] for k in latencies)
    buckets = []
    for start in range(0, math.ceil(seconds), 5):
        window = sorted(
            latencies.get(k, math.inf)
            for k, t in sent.items()
            if start <= t - first_sent < start + 5
        )
        if window:
            p50, p99 = percentile(window, 50), percentile(window, 99)
            buckets.append(
                {
                    "from_s": start,
                    "events": len(window),
                    "p50_ms": round(p50, 1) if math.isfinite(p50) else None,
                    "p99_ms": round(p99, 1) if math.isfinite(p99) else None,
                }
            )
    return {
        "events": len(sent),
        "produce_rate_per_s": round(len(sent) / send_s),
        "answered": len(latencies),
        "unanswered": len(sent) - len(latencies),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": pct(100),
        # answered events per second from the first send to the last answer
        "throughput_per_s": round(len(answered) / (answered[-1] - first_sent)) if answered else 0,
        "by_5s_of_sending": buckets,
    }


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-segrt-"))
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    db = await Database.create(tmp)
    child = None
    settings = KafkaSettings()
    phases: dict[str, dict[str, Any]] = {}
    try:
        app_id, loaded = await setup(db, broker.bootstrap)
        print(f"  loaded: {loaded}", flush=True)
        context = multiprocessing.get_context("spawn")
        counts = context.Array("d", 2, lock=False)  # records, batches handled by the child
        child = context.Process(
            target=consumer_process,
            args=(broker.bootstrap, db.url, counts),
            name="bench-segmenter",
        )
        child.start()
        order = list(range(USERS))
        random.Random(7).shuffle(order)
        plan = [("warmup", 100, WARMUP / 100), ("light", LIGHT_RATE, LIGHT_SECONDS)]
        plan.append(("target", RATE, SECONDS))
        reader = ChangeReader(broker.bootstrap, settings)
        await reader.start()
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=settings.kafka_linger_ms,
        )
        await producer.start()
        try:
            used = 0
            for name, rate, seconds in plan:
                count = int(rate * seconds)
                events = make_events(app_id, order[used : used + count])
                used += count
                cpu_before = cpu_seconds(child.pid) if child.pid is not None else 0.0
                records_before, batches_before = counts[0], counts[1]
                pg_before = await postgres_cpu(db.url)
                sent, send_s = await produce_paced(producer, events, rate)
                # The warm-up waits as long as group joins take; the others DRAIN_TIMEOUT_S.
                timeout = 120.0 if name == "warmup" else DRAIN_TIMEOUT_S
                drained = await reader.wait_for(list(sent), timeout)
                if name == "warmup" and not drained:
                    raise RuntimeError("the segmenter did not answer the warm-up events")
                if name != "warmup":
                    cpu = cpu_seconds(child.pid) - cpu_before if child.pid is not None else 0.0
                    pg_after = await postgres_cpu(db.url)
                    pg = sum(t - pg_before.get(pid, 0.0) for pid, t in pg_after.items())
                    phases[name] = {
                        "rate_per_s": rate,
                        "seconds": seconds,
                        **summarize(sent, reader.received, send_s, seconds),
                        # the consumer's own CPU over the phase and its drain, per event sent
                        "consumer_cpu_ms_per_event": round(cpu * 1000 / max(1, count), 2),
                        # the same for the Postgres backends of the database's connections
                        "postgres_cpu_ms_per_event": round(pg * 1000 / max(1, count), 2),
                        # handler calls over the phase and its drain (sampled every 100 ms)
                        "batches": int(counts[1] - batches_before),
                        "records_per_batch": round(
                            (counts[0] - records_before) / max(1.0, counts[1] - batches_before),
                            1,
                        ),
                    }
                print(
                    f"  {name}: {count} events at {rate}/s, drained={drained}"
                    + (
                        f", p50 {phases[name]['p50_ms']} ms, p99 {phases[name]['p99_ms']} ms"
                        f", consumer CPU {phases[name]['consumer_cpu_ms_per_event']} ms/event"
                        f", Postgres CPU {phases[name]['postgres_cpu_ms_per_event']} ms/event"
                        f", {phases[name]['records_per_batch']} records/batch"
                        if name in phases
                        else ""
                    ),
                    flush=True,
                )
            other = reader.other_changes
        finally:
            await producer.stop()
            await reader.stop()
    finally:
        if child is not None and child.is_alive():
            child.terminate()  # SIGTERM: the runner finishes its batch and stops
            await asyncio.to_thread(child.join, 60)
            if child.is_alive():
                child.kill()
        await db.drop()
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(tmp, ignore_errors=True)

    target, light = phases["target"], phases["light"]
    figures = {
        "target_rate_per_s": RATE,
        "target_produce_rate_per_s": target["produce_rate_per_s"],
        "target_events": target["events"],
        "target_unanswered_after_drain": target["unanswered"],
        "target_latency_p50_ms": target["p50_ms"],
        "target_latency_p99_ms": target["p99_ms"],
        "target_throughput_per_s": target["throughput_per_s"],
        "light_rate_per_s": LIGHT_RATE,
        "light_latency_p50_ms": light["p50_ms"],
        "light_latency_p99_ms": light["p99_ms"],
        "target_consumer_cpu_ms_per_event": target["consumer_cpu_ms_per_event"],
        "target_postgres_cpu_ms_per_event": target["postgres_cpu_ms_per_event"],
        "target_records_per_batch": target["records_per_batch"],
        "other_segment_changes": other,
    }
    p99 = target["p99_ms"]
    return {
        "parameters": {
            "phases": {name: {"rate_per_s": r, "seconds": s} for name, r, s in plan},
            "drain_timeout_s": DRAIN_TIMEOUT_S,
            "existing_users": USERS,
            "segments": len(RULES) + 1,
            "target_segment": {TARGET: TARGET_RULE},
            "partitions": 3,
            "consumer": "services.segmenter SERVICE, one replica, child process",
            "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
            "max_batch": settings.kafka_max_batch,
            "linger_ms": settings.kafka_linger_ms,
            "postgres": db.server,
            "load": loaded,
            "latency": "send() of the event -> receipt of its SegmentChanged; unanswered "
            "events count as slower than every answered one (a percentile on them is null)",
            "note": "2 cores shared by the consumer, Tansu, Postgres, this load generator "
            "and other workers",
        },
        "figures": figures,
        "targets": [
            {
                "name": "target_latency_p99_ms",
                "value": p99,
                "maximum": TARGET_P99_MS,
                "met": p99 is not None and p99 < TARGET_P99_MS,
            },
        ],
        "samples": phases,
    }
