"""The warehouse writer against real chDB: batches accumulate, a ClickHouse outage is
waited out without committing, and every record lands exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, BatchPolicy, ConsumerRunner
from libs.runtime.settings import PlatformSettings
from libs.schemas import ClickRecorded
from services.ingest.warehouse import WarehouseWriter
from tests.conftest import eventually

pytestmark = pytest.mark.integration


class FlakyClickHouse(AsyncClickHouse):
    """The real chDB client, down for the first ``failures`` inserts."""

    def __init__(self, inner: AsyncClickHouse, failures: int) -> None:
        super().__init__(inner.client, inner.database)
        self.failures = failures
        self.inserts = 0

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("Connection refused (simulated outage)")
        self.inserts += 1
        await super().insert(table, rows, column_names)


def clicks(app_id: str, n: int) -> list[ClickRecorded]:
    base = datetime.now(UTC)
    return [
        ClickRecorded(
            app_id=app_id,
            click_id=f"c{i}",
            tracker_token="tok",
            ts=base - timedelta(days=40 * (i % 3)),
        )  # several monthly partitions
        for i in range(n)
    ]


async def count(ch: AsyncClickHouse, app_id: str) -> int:
    rows = await ch.query_rows(
        "SELECT count() AS n FROM hodhod.clicks FINAL WHERE app_id = {a:String}", {"a": app_id}
    )
    return int(rows[0]["n"])


async def test_outage_is_waited_out_and_nothing_is_written_twice(
    settings: PlatformSettings,
) -> None:
    """Other writers (the platform's own ingest.warehouse, when it runs in this session)
    may insert the same clicks too: the table must still hold each exactly once."""
    app_id = f"app_wh_{uuid.uuid4().hex[:8]}"
    group = f"test.warehouse.{uuid.uuid4().hex[:8]}"
    real = AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")
    flaky = FlakyClickHouse(real, failures=3)
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.publish_all(clicks(app_id, 300))
        flaky_writer = WarehouseWriter(flaky)
        written: list[str] = []

        async def through_outage(batch: Batch) -> None:
            await flaky_writer(batch)  # raises while "down": the runner retries the batch
            written.extend(r.value.app_id for r in batch.records if r.value.app_id == app_id)  # type: ignore[attr-defined]

        runner = ConsumerRunner(
            group=group,
            topics=["clicks"],
            handler=through_outage,
            settings=settings,
            dlq_producer=producer,
            policy=BatchPolicy(max_records=100_000, max_wait_s=0.5),
        )
        task = asyncio.create_task(runner.run())

        async def all_written() -> bool:
            return len(written) >= 300

        await eventually(all_written, within=60)
        assert flaky.failures == 0  # the outage happened, and was waited out
        assert len(written) == 300
        assert await count(real, app_id) == 300
        runner.stop()
        await asyncio.wait_for(task, 30)

        # The same group again: everything was committed, so a replay would be the only
        # way to write twice — force one by writing the same records again.
        await producer.publish_all(clicks(app_id, 300))
        writer = WarehouseWriter(real)
        seen: list[str] = []

        async def counting(batch: Batch) -> None:
            await writer(batch)
            seen.extend(r.value.app_id for r in batch.records if r.value.app_id == app_id)  # type: ignore[attr-defined]

        again = ConsumerRunner(
            group=group,
            topics=["clicks"],
            handler=counting,
            settings=settings,
            dlq_producer=producer,
            policy=BatchPolicy(max_records=100_000, max_wait_s=0.5),
        )
        task = asyncio.create_task(again.run())

        async def replay_written() -> bool:
            return len(seen) >= 300  # the 300 new copies, and not the committed originals

        await eventually(replay_written, within=60)
        again.stop()
        await asyncio.wait_for(task, 30)
        assert len(seen) == 300
        assert await count(real, app_id) == 300
    finally:
        await producer.stop()
