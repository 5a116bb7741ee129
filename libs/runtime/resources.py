"""The process's shared clients, opened once in ``lifespan`` and closed on shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.runtime import postgres
from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.clock import Clock, SystemClock
from libs.runtime.httpclient import outbound_client
from libs.runtime.kafka import Producer
from libs.runtime.settings import PlatformSettings

if TYPE_CHECKING:
    from libs.runtime.timed import TimedRunner

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: PlatformSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    producer: Producer
    clickhouse: AsyncClickHouse | None
    # Outbound HTTP (postbacks, providers): one pool per process, closed on shutdown.
    http: httpx.AsyncClient
    # What "now" is for scheduling code; tests pass a ManualClock and move it.
    clock: Clock = field(default_factory=SystemClock)
    # The process's timed-work runners by name (filled by ``compose``), for consumers
    # that ``wake()`` one after committing an earlier due row.
    timed: dict[str, TimedRunner[Any]] = field(default_factory=dict)

    def require_clickhouse(self) -> AsyncClickHouse:
        if self.clickhouse is None:
            raise RuntimeError("this process was started without ClickHouse")
        return self.clickhouse


@asynccontextmanager
async def open_resources(
    settings: PlatformSettings,
    *,
    with_clickhouse: bool,
    client_id: str = "hodhod",
    clock: Clock | None = None,
) -> AsyncIterator[Resources]:
    """Open Postgres, the producer and (optionally) ClickHouse; close them on exit.

    Blocks until the producer has broker metadata. Raises if a store is unreachable.
    """
    engine = postgres.create_engine(settings.database_url, pool_size=settings.database_pool_size)
    producer = Producer(
        settings.kafka_bootstrap, linger_ms=settings.kafka_linger_ms, client_id=client_id
    )
    ch = None
    http = outbound_client()
    try:
        await producer.start()
        if with_clickhouse:
            url = settings.clickhouse_url
            ch = AsyncClickHouse(
                get_client(url), settings.clickhouse_database, lambda: get_client(url)
            )
        yield Resources(
            settings,
            engine,
            postgres.session_factory(engine),
            producer,
            ch,
            http,
            clock or SystemClock(),
        )
    finally:
        await http.aclose()
        await producer.stop()
        await engine.dispose()
        if ch is not None:
            ch.close()
