"""Ingest over HTTP: events/s posted in batches of 50 to ``POST /v1/events`` on one
uvicorn worker, against bare aiokafka producing the same events in the same run
(issue 4 targets: ≥ 20,000 events/s, ratio ≥ 0.5).

The server runs in a child process (one core); the load generator is a lean keep-alive
HTTP/1.1 client (asyncio streams, 16 connections) in this process. Both sides publish to
the same private Tansu broker with acks=all; the HTTP side answers only after Kafka
acknowledged every event (that is its contract). Tune with BENCH_INGEST_REQUESTS.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench._infra import Database, serve_http
from libs.runtime import localinfra
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.runtime.tenancy import provision_app
from libs.schemas import Event, encode

REQUESTS = int(os.environ.get("BENCH_INGEST_REQUESTS", "2000"))
BATCH = 50
CONNECTIONS = 16
REPEATS = 3
TARGET_EVENTS_PER_S = 20_000
TARGET_RATIO = 0.5


def bodies(n: int) -> list[bytes]:
    now = datetime.now(UTC).isoformat()
    out = []
    for r in range(n):
        events = [
            {
                "event_id": str(uuid.uuid4()),
                "name": "purchase" if i % 5 else "$open",
                "device_id": f"dev-{(r * BATCH + i) % 5000}",
                "ts": now,
                "platform": "android",
                "app_version": "5.12.0",
                "timezone": "Asia/Tehran",
                "props": {"product": "گوشی موبایل", "category": "electronics", "qty": i % 3 + 1},
            }
            for i in range(BATCH)
        ]
        out.append(orjson.dumps({"sent_at": now, "events": events}))
    return out


async def post_all(port: int, key: str, payloads: list[bytes]) -> float:
    """Seconds to POST every payload over CONNECTIONS keep-alive connections."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in payloads:
        queue.put_nowait(body)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                writer.write(
                    b"POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                    b"\r\nX-Hodhod-Key: "
                    + key.encode()
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                status_line = await reader.readline()
                if b" 200 " not in status_line:
                    raise RuntimeError(f"ingest answered {status_line!r}")
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return time.perf_counter() - started


async def produce_bare(bootstrap: str, payloads: list[bytes], app_id: str) -> float:
    """Seconds for bare aiokafka to publish the same events (validated and encoded as
    ingest would, done before the clock starts), batch by batch with acks, over
    CONNECTIONS concurrent senders — the broker work without HTTP, auth or parsing."""
    records = []
    for body in payloads:
        batch = []
        for e in orjson.loads(body)["events"]:
            event = Event(app_id=app_id, received_at=datetime.now(UTC), source="sdk", **e)
            batch.append((f"{app_id}:{event.device_id}".encode(), encode(event)))
        records.append(batch)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    queue: asyncio.Queue[list[tuple[bytes, bytes]]] = asyncio.Queue()
    for batch in records:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            futures = [await producer.send("events", value=v, key=k) for k, v in batch]
            await asyncio.gather(*futures)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-bench-ingest-"))
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    database = await Database.create(tmp)
    server = None
    try:
        await ensure_topics(broker.bootstrap, platform_topics(), partitions=3)
        keys = asdict(await provision_app(database.url, name="bench"))
        server = await serve_http(
            "ingest-api",
            bootstrap=broker.bootstrap,
            database_url=database.url,
            # the limiter is not what is measured
            env={"HODHOD_INGEST_RATE_PER_S": "1000000", "HODHOD_INGEST_RATE_BURST": "1000000"},
            python_args=os.environ.get("BENCH_INGEST_PROFILE", "").split(),
        )
        port = server.port
        await post_all(port, keys["sdk_key"], bodies(20))  # warm-up: caches, connections
        http_rates, bare_rates = [], []
        for rep in range(REPEATS):
            payloads = bodies(REQUESTS)
            for side in ("http", "bare") if rep % 2 == 0 else ("bare", "http"):
                if side == "http":
                    seconds = await post_all(port, keys["sdk_key"], payloads)
                    http_rates.append(REQUESTS * BATCH / seconds)
                else:
                    seconds = await produce_bare(broker.bootstrap, payloads, keys["app_id"])
                    bare_rates.append(REQUESTS * BATCH / seconds)
                print(
                    f"  {side:<4} rep {rep}: {round(REQUESTS * BATCH / seconds)} events/s",
                    flush=True,
                )
    finally:
        if server is not None:
            server.stop()
        await database.drop()
        await asyncio.to_thread(broker.stop)
    http = round(statistics.median(http_rates))
    bare = round(statistics.median(bare_rates))
    ratio = round(http / bare, 3)
    return {
        "parameters": {
            "requests": REQUESTS,
            "events_per_request": BATCH,
            "connections": CONNECTIONS,
            "repeats": REPEATS,
            "uvicorn_workers": 1,
            "broker": "Tansu, same host",
            "acks": "all",
        },
        "figures": {
            "ingest_http_events_per_s": http,
            "bare_aiokafka_events_per_s": bare,
            "ratio_http_over_bare": ratio,
        },
        "targets": [
            {
                "name": "ingest_http_events_per_s",
                "value": http,
                "minimum": TARGET_EVENTS_PER_S,
                "met": http >= TARGET_EVENTS_PER_S,
            },
            {
                "name": "ratio_http_over_bare",
                "value": ratio,
                "minimum": TARGET_RATIO,
                "met": ratio >= TARGET_RATIO,
            },
        ],
        "samples": {"http": [round(r) for r in http_rates], "bare": [round(r) for r in bare_rates]},
    }
