"""Infrastructure shared by the benchmarks that run more than one process: a private
Postgres database, one Hodhod HTTP service on one uvicorn worker in a child process, the
CPU time a process used, and the records a topic holds."""

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

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.runtime import localinfra, postgres

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
