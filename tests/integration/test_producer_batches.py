"""``Producer.publish_all`` against the real broker: records land once each, on the
partition aiokafka's per-record ``send`` picks for their key and in call order; callers
sharing a partition batch each return only after it is acknowledged; a failure is
raised to every caller whose records it holds, and nothing is queued of a call that
cannot be sent whole."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY

from libs.runtime import localinfra
from libs.runtime.kafka import MAX_REQUEST_BYTES, Producer, ensure_topics
from libs.runtime.settings import KafkaSettings
from libs.schemas import Event, decode

pytestmark = pytest.mark.integration

PARTITIONS = 3  # the session broker's topics (conftest)


def event(app_id: str, device: str, seq: int, *, pad: int = 0) -> Event:
    return Event(
        app_id=app_id,
        event_id=f"{device}-{seq}-{uuid.uuid4().hex[:6]}",
        name="view",
        device_id=device,
        ts=datetime.now(UTC),
        received_at=datetime.now(UTC),
        source="sdk",
        props={"seq": seq, "pad": "x" * pad},
    )


async def landed(
    bootstrap: str, app_id: str, *, expected: int, idle_s: float = 5.0
) -> list[tuple[int, bytes, Event]]:
    """(partition, key, event) of every ``events`` record of ``app_id``, in partition
    order, read from the beginning until ``expected`` arrived or none came for
    ``idle_s``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    found: list[tuple[int, bytes, Event]] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition("events", p) for p in consumer.partitions_for_topic("events")]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        last = asyncio.get_running_loop().time()
        while len(found) < expected and asyncio.get_running_loop().time() - last < idle_s:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    last = asyncio.get_running_loop().time()
                    # Other tests write poison records here: select by key first.
                    if (record.key or b"").startswith(f"{app_id}:".encode()):
                        found.append((tp.partition, record.key, decode(Event, record.value)))
    finally:
        await consumer.stop()
    return found


def assert_placed_and_ordered(
    found: list[tuple[int, bytes, Event]], calls: list[list[Event]]
) -> None:
    """Each record once, on aiokafka's partition for its key, and each call's events of
    one device in the order the call listed them."""
    ids = [e.event_id for _, _, e in found]
    assert sorted(ids) == sorted(e.event_id for call in calls for e in call)
    partitions = list(range(PARTITIONS))
    for partition, key, value in found:
        assert key == f"{value.app_id}:{value.device_id}".encode()
        assert partition == DefaultPartitioner()(key, partitions, partitions)
    position = {event_id: i for i, event_id in enumerate(ids)}
    for call in calls:
        by_device: dict[str | None, list[int]] = {}
        for e in call:
            by_device.setdefault(e.device_id, []).append(position[e.event_id])
        for offsets in by_device.values():
            assert offsets == sorted(offsets)


async def test_records_land_on_their_keys_partition_in_order(settings: KafkaSettings) -> None:
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    call = [event(app_id, f"dev-{i % 17}", i) for i in range(300)]
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.publish_all(call)
    finally:
        await producer.stop()
    found = await landed(settings.kafka_bootstrap, app_id, expected=len(call))
    assert_placed_and_ordered(found, [call])


async def test_concurrent_callers_each_acknowledged(settings: KafkaSettings) -> None:
    """Twenty small calls and one of several full batches (over 256 KB), at once."""
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    calls = [[event(app_id, f"dev-{(c + i) % 7}", i) for i in range(25)] for c in range(20)]
    calls.append([event(app_id, f"dev-{i % 3}", i, pad=1000) for i in range(900)])
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await asyncio.gather(*(producer.publish_all(call) for call in calls))
    finally:
        await producer.stop()
    found = await landed(settings.kafka_bootstrap, app_id, expected=sum(map(len, calls)))
    assert_placed_and_ordered(found, calls)


async def test_a_cancelled_caller_leaves_the_others_acknowledged(
    settings: KafkaSettings,
) -> None:
    """A caller whose batches (several full ones, on one partition) are still waiting
    their turn is cancelled; a second caller's records, in the same batches, are still
    sent and acknowledged."""
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.publish_all([event(app_id, "dev-0", 0)])  # metadata known
        gone = asyncio.create_task(
            producer.publish_all([event(app_id, "dev-1", i, pad=1000) for i in range(900)])
        )
        await asyncio.sleep(0)  # gone's records are in their batches, the first queued
        kept_call = [event(app_id, "dev-1", i) for i in range(900, 950)]
        kept = asyncio.create_task(producer.publish_all(kept_call))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.wait_for(kept, 60)
        assert gone.cancelled()
    finally:
        await producer.stop()
    found = await landed(settings.kafka_bootstrap, app_id, expected=951)
    ids = {e.event_id for _, _, e in found}
    assert {e.event_id for e in kept_call} <= ids


async def test_a_record_over_the_limit_fails_the_call_and_queues_none_of_it(
    settings: KafkaSettings,
) -> None:
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    first, second, marker = (event(app_id, "dev-0", i) for i in range(3))
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await producer.publish_all([first, second], [None, b"{" * (MAX_REQUEST_BYTES + 1)])
        await producer.publish_all([marker])
    finally:
        await producer.stop()
    # One key, one partition: anything of the failed call would have come before.
    found = await landed(settings.kafka_bootstrap, app_id, expected=1)
    assert [e.event_id for _, _, e in found] == [marker.event_id]


def failures() -> float:
    return REGISTRY.get_sample_value("hodhod_producer_failures_total", {"topic": "events"}) or 0


async def test_a_broker_gone_fails_every_caller_and_counts_the_records() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hodhod-test-producer-"))
    broker = await asyncio.to_thread(localinfra.Tansu.start, log_path=tmp / "tansu.log")
    producer = Producer(broker.bootstrap, request_timeout_ms=2_000)
    app_id = f"app_{uuid.uuid4().hex[:10]}"
    try:
        await ensure_topics(broker.bootstrap, ["events"], partitions=3)
        await producer.start()
        await producer.publish_all([event(app_id, "dev-0", 0)])
        await asyncio.to_thread(broker.stop)
        before = failures()
        calls = [[event(app_id, f"dev-{i}", c) for i in range(10)] for c in range(3)]
        results = await asyncio.wait_for(
            asyncio.gather(*(producer.publish_all(c) for c in calls), return_exceptions=True),
            60,
        )
        assert all(isinstance(r, KafkaError) for r in results), results
        assert failures() - before == 30
    finally:
        await producer.stop()
        await asyncio.to_thread(broker.stop)


async def test_a_settled_batch_takes_no_more_records(settings: KafkaSettings) -> None:
    """Once a batch's ack is done — acknowledged, or failed unsent (aiokafka expires a
    batch whose partition has no leader without building it) — it leaves the open
    batches and takes no record: the next call starts a new batch instead of joining one
    that has already failed."""
    from libs.runtime.kafka import _OpenBatch

    app_id = f"app_{uuid.uuid4().hex[:10]}"
    producer = Producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.publish_all([event(app_id, "dev-1", i) for i in range(5)])
        await asyncio.sleep(0)  # the ack's callbacks
        assert producer._open == {}  # acknowledged batches are gone
        # A batch whose ack failed (as aiokafka fails an expired one): it is closed and
        # no longer the partition's open batch.
        loop = asyncio.get_running_loop()
        tp = TopicPartition("events", 0)
        builder = producer._producer.create_batch()
        assert builder.append(timestamp=None, key=b"k", value=b"v") is not None
        dead = producer._open[tp] = _OpenBatch(tp, builder, None, loop)
        dead.ack = loop.create_future()
        dead.ack.set_exception(KafkaError("expired"))
        producer._settle(dead)
        assert tp not in producer._open
        assert builder.append(timestamp=None, key=b"k", value=b"v") is None
        # The next call is sent in batches of its own and acknowledged.
        after = [event(app_id, "dev-2", i) for i in range(5)]
        await producer.publish_all(after)
    finally:
        await producer.stop()
    found = await landed(settings.kafka_bootstrap, app_id, expected=10)
    assert len(found) == 10
