"""What the benchmarks share: a private Postgres database, an app with trackers, one
Hodhod HTTP service on one uvicorn worker in a child process, the CPU time a process (or
the machine) used, the records a topic holds, and a ConsumerRunner with a stopwatch."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from libs.runtime import localinfra, postgres
from libs.runtime.pipeline import ConsumerRunner
from libs.runtime.tenancy import provision_app

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass
class Database:
    """A migrated database of its own on the machine's Postgres (``DATABASE_URL`` or
    127.0.0.1:5432), or on an embedded one when none answers."""

    url: str
    embedded: localinfra.EmbeddedPostgres | None

    @classmethod
    async def create(cls, tmp: Path) -> Database:
        base = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
        embedded = None
        if not localinfra.port_open("127.0.0.1", 5432) and not os.environ.get("DATABASE_URL"):
            embedded = localinfra.EmbeddedPostgres(tmp / "pg")
            base = embedded.url("postgres")
        head, _, tail = base.partition("?")
        url = f"{head.rsplit('/', 1)[0]}/hodhod_bench_{secrets.token_hex(4)}" + (
            f"?{tail}" if tail else ""
        )
        await postgres.ensure_database(url)
        await postgres.migrate_async(url)
        return cls(url, embedded)

    async def drop(self) -> None:
        await postgres.drop_database(self.url)
        if self.embedded is not None:
            self.embedded.stop()


@dataclass
class HttpServer:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        """Terminate the child and wait for it (uvicorn flushes the producer on SIGTERM)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)


async def serve_http(
    service: str,
    *,
    bootstrap: str,
    database_url: str,
    env: dict[str, str] | None = None,
    python_args: Sequence[str] = (),
) -> HttpServer:
    """Start ``python -m bench._http_server <service>`` on a free port and wait until it
    listens (30 s at most, else TimeoutError). ``python_args`` go before ``-m`` (a
    profiler's own ``-m`` for instance); ``env`` adds ``HODHOD_*`` settings."""
    port = localinfra.free_port()
    child_env = {
        **os.environ,
        "HODHOD_KAFKA_BOOTSTRAP": bootstrap,
        "HODHOD_DATABASE_URL": database_url,
        "HODHOD_HTTP_PORT": str(port),
        "HODHOD_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    process = subprocess.Popen(  # noqa: ASYNC220 — a child server, started once
        [sys.executable, *python_args, "-m", "bench._http_server", service], env=child_env
    )
    server = HttpServer(process, port)
    try:
        await asyncio.to_thread(localinfra.wait_for_port, "127.0.0.1", port, 30)
    except TimeoutError:
        server.stop()
        raise
    return server


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


async def read_topic(
    bootstrap: str, topic: str, *, expected: int, idle_s: float = 10.0
) -> list[bytes]:
    """Every record value of ``topic``, from the beginning of each partition, read until
    ``expected`` records arrived or none came for ``idle_s`` (Tansu's high watermarks
    are unreliable, so records are counted). No consumer group: nothing is committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        last = time.monotonic()
        while len(values) < expected and time.monotonic() - last < idle_s:
            batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
            for records in batch.values():
                values.extend(r.value or b"" for r in records)
                last = time.monotonic()
        return values
    finally:
        await consumer.stop()


async def provision_trackers(
    database_url: str, *, count: int, **fields: Any
) -> tuple[str, list[str]]:
    """A new app (``provision_app``) and ``count`` active trackers written as the admin
    API writes them (``TrackerCreate`` with its defaults, then
    ``services.admin.store.create_tracker``); ``fields`` override the body's fields.
    Commits. Returns (app id, tracker tokens)."""
    from services.admin import store
    from services.admin.schemas import TrackerCreate

    keys = await provision_app(database_url, name=f"bench-{secrets.token_hex(3)}")
    engine = postgres.create_engine(database_url, pool_size=1)
    tokens = []
    try:
        async with postgres.session_factory(engine)() as session, session.begin():
            for i in range(count):
                body = TrackerCreate.model_validate(
                    {
                        "name": f"bench campaign {i}",
                        "channel": "google_play",
                        "network": f"network {i % 4}",
                        "campaign": f"campaign {i}",
                        "store_url": "https://play.google.com/store/apps/details?id=com.example",
                        **fields,
                    }
                )
                values = body.model_dump(mode="json")
                values["cost_amount"] = body.cost_amount  # as services.admin.api does
                tracker = await store.create_tracker(session, app_id=keys.app_id, values=values)
                tokens.append(tracker.token)
    finally:
        await engine.dispose()
    return keys.app_id, tokens


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot, over every core
    (``/proc/stat``): with ``cpu_seconds`` of one's own processes, what others took."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S


class TimedRunner(ConsumerRunner):
    """ConsumerRunner with a stopwatch around its batch step; the loop itself is untouched.

    The clock starts when the first non-empty batch reaches ``_handle`` (before decoding)
    and stops once the batch holding the Nth record is committed — the same two points
    as the bare loops.
    """

    def __init__(self, *, target: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.count = 0
        self.started: float | None = None
        self.finished: float | None = None

    async def _handle(
        self, consumer: AIOKafkaConsumer, raw: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        if self.started is None:
            self.started = time.perf_counter()
        await super()._handle(consumer, raw)
        self.count += sum(len(records) for records in raw.values())
        if self.finished is None and self.count >= self.target:
            self.finished = time.perf_counter()
            self.stop()
