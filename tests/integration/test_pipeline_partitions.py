"""The per-partition consumer runner against the real broker: partitions' batches run
concurrently, each partition's in order; a partition commits only its own batches and
only after they succeed; stop(), a failure and a revocation let the batches in flight
finish (and commit) first."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.runtime.errors import TransientError
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, ConsumerRunner, Record
from libs.runtime.settings import KafkaSettings
from libs.schemas import UserVerified, encode
from tests.conftest import eventually

pytestmark = pytest.mark.integration

TOPIC = "verifications"
PARTITIONS = (0, 1, 2)


class Feed:
    """Produces this test's records to chosen partitions and reads the group's commits."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.app_id = f"app_{uuid.uuid4().hex[:10]}"
        self.group = f"test.partitions.{uuid.uuid4().hex[:8]}"
        self._settings = settings
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
        )
        self.dlq = Producer(settings.kafka_bootstrap)

    async def start(self) -> None:
        await self._producer.start()
        await self._offsets.start()
        await self.dlq.start()

    async def stop(self) -> None:
        await self._producer.stop()
        await self._offsets.stop()
        await self.dlq.stop()

    async def send(self, partition: int, n: int) -> int:
        """Produce verification ``v{n}`` to ``partition``; returns its offset."""
        value = UserVerified(
            app_id=self.app_id,
            verification_id=f"v{n}",
            user_id=f"u{n}",
            ts=datetime.now(UTC),
            method="otp",
        )
        meta = await self._producer.send_and_wait(
            TOPIC, encode(value), key=f"{self.app_id}:u{n}".encode(), partition=partition
        )
        return int(meta.offset)

    async def committed(self, partition: int) -> int:
        """The group's committed offset of ``partition`` (-1 when none)."""
        offset = await self._offsets.committed(TopicPartition(TOPIC, partition))
        return -1 if offset is None else int(offset)

    def mine(self, batch: Batch) -> list[Record]:
        return [r for r in batch.records if r.value.app_id == self.app_id]

    def runner(self, handler: Callable[[Batch], Awaitable[None]]) -> ConsumerRunner:
        return ConsumerRunner(
            group=self.group,
            topics=[TOPIC],
            handler=handler,
            settings=self._settings,
            dlq_producer=self.dlq,
            per_partition=True,
        )


@pytest_asyncio.fixture
async def feed(settings: KafkaSettings) -> AsyncIterator[Feed]:
    f = Feed(settings)
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def vid(record: Record) -> str:
    assert isinstance(record.value, UserVerified)
    return record.value.verification_id


async def test_partitions_run_concurrently_each_in_order(feed: Feed) -> None:
    """Every partition's first batch waits until all three partitions have a batch in
    flight: a runner handling one batch at a time would never get there. Each batch
    holds one partition's records, in offset order, and offsets never go back."""
    sent: dict[int, list[str]] = defaultdict(list)
    for n in range(30):
        partition = PARTITIONS[n % 3]
        await feed.send(partition, n)
        sent[partition].append(f"v{n}")
    in_flight: set[int] = set()
    all_in_flight = asyncio.Event()
    seen: dict[int, list[str]] = defaultdict(list)
    offsets: dict[int, list[int]] = defaultdict(list)

    async def handler(batch: Batch) -> None:
        partitions = {(r.topic, r.partition) for r in batch.records}
        assert len(partitions) == 1, partitions
        ((_, partition),) = partitions
        first = partition not in offsets
        offsets[partition].extend(r.offset for r in batch.records)
        if first:
            in_flight.add(partition)
            if in_flight >= set(PARTITIONS):
                all_in_flight.set()
            await asyncio.wait_for(all_in_flight.wait(), 30)
        await asyncio.sleep(0.01)  # let the other partitions' batches interleave
        seen[partition].extend(vid(r) for r in feed.mine(batch))

    runner = feed.runner(handler)
    task = asyncio.create_task(runner.run())
    try:

        async def all_seen() -> bool:
            return all(len(seen[p]) == len(sent[p]) for p in PARTITIONS)

        await eventually(all_seen, within=60)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    assert all_in_flight.is_set()
    assert dict(seen) == dict(sent)
    for partition in PARTITIONS:
        assert offsets[partition] == sorted(set(offsets[partition]))


async def test_a_retrying_partition_commits_nothing_while_the_others_progress(
    feed: Feed,
) -> None:
    """Partition 0's batch fails transiently until released: partitions 1 and 2 are
    handled and committed meanwhile; partition 0 is committed only after its batch
    succeeded, and nothing of it was handled out of order."""
    offset = {p: await feed.send(p, p) for p in PARTITIONS}
    release = asyncio.Event()
    attempts = {"n": 0}
    seen: list[str] = []

    async def handler(batch: Batch) -> None:
        mine = feed.mine(batch)
        if any(r.partition == 0 for r in mine) and not release.is_set():
            attempts["n"] += 1
            raise TransientError("partition 0's store is down")
        seen.extend(vid(r) for r in mine)

    runner = feed.runner(handler)
    task = asyncio.create_task(runner.run())
    try:

        async def others_committed() -> bool:
            return all([await feed.committed(p) > offset[p] for p in (1, 2)])

        await eventually(others_committed, within=60)
        assert attempts["n"] >= 1
        assert await feed.committed(0) <= offset[0]
        assert sorted(seen) == ["v1", "v2"]
        release.set()

        async def first_committed() -> bool:
            return await feed.committed(0) > offset[0]

        await eventually(first_committed, within=60)
        assert sorted(seen) == ["v0", "v1", "v2"]
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


async def test_a_failure_stops_the_runner_after_the_batches_in_flight(feed: Feed) -> None:
    """A bug in partition 0's batch stops the runner: partition 1's batch, in flight when
    it happens, still finishes and commits; partition 0's is not committed, and run()
    raises the bug."""
    offset = {p: await feed.send(p, p) for p in (0, 1)}
    p1_in_flight, p0_failed = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def handler(batch: Batch) -> None:
        mine = feed.mine(batch)
        if any(r.partition == 1 for r in mine):
            p1_in_flight.set()
            await asyncio.wait_for(p0_failed.wait(), 30)
        elif any(r.partition == 0 for r in mine):
            await asyncio.wait_for(p1_in_flight.wait(), 30)
            p0_failed.set()
            raise KeyError("bug")
        done.extend(vid(r) for r in mine)

    runner = feed.runner(handler)
    with pytest.raises(KeyError):
        await asyncio.wait_for(runner.run(), 60)
    assert done == ["v1"]
    assert await feed.committed(1) > offset[1]
    assert await feed.committed(0) <= offset[0]


async def test_stop_lets_the_batch_in_flight_finish_and_commit(feed: Feed) -> None:
    offset = await feed.send(2, 7)
    started, release = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def handler(batch: Batch) -> None:
        mine = feed.mine(batch)
        if mine:
            started.set()
            await asyncio.wait_for(release.wait(), 30)
            done.extend(vid(r) for r in mine)

    runner = feed.runner(handler)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 60)
    runner.stop()
    release.set()
    await asyncio.wait_for(task, 30)
    assert done == ["v7"]
    assert await feed.committed(2) == offset + 1


async def test_revocation_waits_for_the_batch_in_flight(feed: Feed) -> None:
    """A second member joins while the first has a batch in flight: the first finishes
    and commits it before giving its partitions up, so no record is handled twice and
    every record is handled once the group has settled on two members."""
    offsets = {p: await feed.send(p, p) for p in PARTITIONS}
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[tuple[str, str]] = []

    def member(name: str) -> Callable[[Batch], Awaitable[None]]:
        async def handler(batch: Batch) -> None:
            mine = feed.mine(batch)
            if mine and not started.is_set():
                started.set()
                await asyncio.wait_for(release.wait(), 60)
            handled.extend((name, vid(r)) for r in mine)

        return handler

    revoking = asyncio.Event()

    class Revocations(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("partitions revoked"):
                revoking.set()

    watch, logger = Revocations(), logging.getLogger("libs.runtime.pipeline")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    first = feed.runner(member("first"))
    second = feed.runner(member("second"))
    tasks = [asyncio.create_task(first.run())]
    try:
        await asyncio.wait_for(started.wait(), 60)
        tasks.append(asyncio.create_task(second.run()))
        # The first member's rebalance waits on its batch in flight...
        await asyncio.wait_for(revoking.wait(), 60)
        assert not second.assigned.is_set()
        # ...and goes on once that batch is done.
        release.set()
        await asyncio.wait_for(second.assigned.wait(), 60)
        more = {p: await feed.send(p, 10 + p) for p in PARTITIONS}

        async def all_committed() -> bool:
            return all([await feed.committed(p) > more[p] for p in PARTITIONS])

        await eventually(all_committed, within=60)
    finally:
        release.set()
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        logger.removeHandler(watch)
        logger.setLevel(level)
    ids = sorted(v for _, v in handled)
    assert ids == sorted([*(f"v{p}" for p in offsets), *(f"v{10 + p}" for p in PARTITIONS)])
    assert {name for name, _ in handled} == {"first", "second"}
