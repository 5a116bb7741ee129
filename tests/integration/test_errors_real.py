"""Failure classification of exceptions the drivers really raise: Postgres refusing a
value (through SQLAlchemy and through asyncpg), and each client failing to reach a server
that is not there (a free local port). The kit modules are imported as in every process
(``libs.runtime.resources`` imports them all): their import registers the classifiers."""

from __future__ import annotations

import secrets

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import libs.runtime.resources  # noqa: F401 — registers every driver's classifier
from libs.runtime import clickhouse, localinfra, postgres
from libs.runtime.errors import is_poison, is_transient

pytestmark = pytest.mark.integration


async def test_a_refused_value_is_poison_not_transient(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    table = f"errors_test_{secrets.token_hex(4)}"
    async with sessions() as session, session.begin():
        await session.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
    try:
        with pytest.raises(Exception) as duplicate:
            async with sessions() as session, session.begin():
                await session.execute(text(f"INSERT INTO {table} VALUES (1), (1)"))
        assert is_poison(duplicate.value) and not is_transient(duplicate.value)
        with pytest.raises(Exception) as division:
            async with sessions() as session, session.begin():
                await postgres.fetch_raw(session, "SELECT 1 / $1::int", 0)
        assert is_poison(division.value) and not is_transient(division.value)
        with pytest.raises(Exception) as missing:
            async with sessions() as session, session.begin():
                await postgres.fetch_raw(session, "SELECT * FROM no_such_table_here")
        assert not is_poison(missing.value) and not is_transient(missing.value)
    finally:
        async with sessions() as session, session.begin():
            await session.execute(text(f"DROP TABLE {table}"))


async def test_an_unreachable_server_is_transient_for_every_client() -> None:
    port = localinfra.free_port()
    with pytest.raises(Exception) as pg:
        engine = postgres.create_engine(f"postgresql://postgres@127.0.0.1:{port}/x")
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
    assert is_transient(pg.value)

    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.HTTPError) as http:
            await client.get(f"http://127.0.0.1:{port}/")
    assert is_transient(http.value)

    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
    with pytest.raises(Exception) as kafka:
        await producer.start()
    await producer.stop()
    assert is_transient(kafka.value)

    with pytest.raises(Exception) as ch:
        clickhouse.get_client(f"http://127.0.0.1:{port}")
    assert is_transient(ch.value)
