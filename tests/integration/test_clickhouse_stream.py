"""``AsyncClickHouse.stream_rows`` against real chDB: every row once and in order, block
by block; an open stream does not hold up other queries; errors surface on the first
block; a stream closed early releases its client."""

from __future__ import annotations

import asyncio

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.settings import PlatformSettings

pytestmark = pytest.mark.integration

N = 200_000
NUMBERS = "SELECT number AS n, toString(number) AS s FROM numbers({n:UInt64}) ORDER BY n"
# A guard against hanging forever, not a measurement.
HANG = 60


def streaming(settings: PlatformSettings) -> AsyncClickHouse:
    url = settings.clickhouse_url
    return AsyncClickHouse(get_client(url), "hodhod", lambda: get_client(url))


async def test_an_open_stream_yields_every_row_once_and_blocks_no_other_query(
    settings: PlatformSettings,
) -> None:
    ch = streaming(settings)
    try:
        blocks = ch.stream_rows(NUMBERS, {"n": N})
        first = await asyncio.wait_for(anext(blocks), HANG)
        assert 0 < len(first) < N  # a block, not the whole result
        assert first[0] == {"n": 0, "s": "0"}
        # The stream is open and unfinished: the shared client still answers.
        other = await asyncio.wait_for(ch.query_rows("SELECT 41 + 1 AS x"), HANG)
        assert other == [{"x": 42}]
        seen = [row["n"] for row in first]
        async for block in blocks:
            seen.extend(row["n"] for row in block)
        assert seen == list(range(N))
    finally:
        ch.close()


async def test_a_stream_closed_early_releases_its_client_and_errors_come_first(
    settings: PlatformSettings,
) -> None:
    ch = streaming(settings)
    try:
        for _ in range(3):  # each stream opens and closes a client of its own
            blocks = ch.stream_rows(NUMBERS, {"n": N})
            assert (await asyncio.wait_for(anext(blocks), HANG))[0]["n"] == 0
            await blocks.aclose()
        failing = ch.stream_rows("SELECT * FROM hodhod.no_such_table")
        with pytest.raises(DatabaseError):
            await asyncio.wait_for(anext(failing), HANG)
        # Without `connect` the stream reads on the shared client, after the others.
        shared = AsyncClickHouse(ch.client, "hodhod")
        rows = [row async for block in shared.stream_rows(NUMBERS, {"n": 10}) for row in block]
        assert [row["n"] for row in rows] == list(range(10))
        assert await ch.query_rows("SELECT 1 AS one") == [{"one": 1}]
    finally:
        ch.close()
