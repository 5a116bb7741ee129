"""The consumer runner's contract, step by step, with an in-memory stand-in for the
aiokafka consumer (the integration tests run it against the real broker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from libs.runtime.errors import TransientError
from libs.runtime.pipeline import Batch, ConsumerRunner, DlqLimitExceeded
from libs.runtime.settings import KafkaSettings
from libs.schemas import Event, decode, encode
from libs.schemas.dlq import DlqRecord

TP = TopicPartition("events", 0)


def good(i: int) -> bytes:
    return encode(
        Event(
            app_id="app",
            event_id=f"e{i}",
            name="$open",
            device_id="d",
            ts=datetime(2026, 1, 1, tzinfo=UTC),
            received_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


def record(offset: int, value: bytes) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"app:d",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value),
        headers=(),
    )


class Journal:
    """Shared log of effects, in order, across the fakes."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []


class FakeConsumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.journal.entries.append(("commit", dict(offsets)))

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def paused(self) -> set[TopicPartition]:
        return set()


class FakeDlq:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.journal.entries.append(("dlq", (topic, decode(DlqRecord, value))))


def runner(
    journal: Journal, handler: Any, *, per_partition: bool = False, **settings: Any
) -> ConsumerRunner:
    return ConsumerRunner(
        group="test.group",
        topics=["events"],
        handler=handler,
        settings=KafkaSettings(**{"kafka_retry_budget_s": 5, **settings}),
        dlq_producer=FakeDlq(journal),  # type: ignore[arg-type]
        per_partition=per_partition,
    )


async def test_commit_happens_after_the_handlers_write() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        await asyncio.sleep(0)
        journal.entries.append(("write", [r.offset for r in batch.records]))

    r = runner(journal, handler)
    await r._handle(FakeConsumer(journal), {TP: [record(5, good(1)), record(6, good(2))]})  # type: ignore[arg-type]
    assert journal.entries == [("write", [5, 6]), ("commit", {TP: 7})]


async def test_transient_failure_retries_the_batch_without_committing() -> None:
    journal = Journal()
    failures = [TransientError("db down"), ConnectionRefusedError("refused")]

    async def handler(batch: Batch) -> None:
        if failures:
            journal.entries.append(("failed", None))
            raise failures.pop(0)
        journal.entries.append(("write", len(batch.records)))

    r = runner(journal, handler)
    await r._handle(FakeConsumer(journal), {TP: [record(0, good(1))]})  # type: ignore[arg-type]
    assert journal.entries == [
        ("failed", None),
        ("failed", None),
        ("write", 1),
        ("commit", {TP: 1}),
    ]


async def test_exhausted_retry_budget_raises_and_commits_nothing() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        raise TransientError("still down")

    r = runner(journal, handler, kafka_retry_budget_s=0.3)
    with pytest.raises(TransientError):
        await r._handle(FakeConsumer(journal), {TP: [record(0, good(1))]})  # type: ignore[arg-type]
    assert not [e for e in journal.entries if e[0] == "commit"]


async def test_a_bug_in_the_handler_crashes_without_commit() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await runner(journal, handler)._handle(FakeConsumer(journal), {TP: [record(0, good(1))]})  # type: ignore[arg-type]
    assert journal.entries == []


async def test_poison_records_go_to_dlq_before_the_commit_and_advance_the_offset() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        journal.entries.append(("write", [r.offset for r in batch.records]))
        batch.reject(batch.records[-1], "semantically invalid")

    r = runner(journal, handler)
    await r._handle(
        FakeConsumer(journal),
        {
            TP: [  # type: ignore[arg-type]
                record(0, good(1)),
                record(1, b"\xff\x00garbage"),
                record(2, good(3)),
            ]
        },
    )
    kinds = [e[0] for e in journal.entries]
    assert kinds == ["write", "dlq", "dlq", "commit"]
    assert journal.entries[0] == ("write", [0, 2])
    dead = [e[1] for e in journal.entries if e[0] == "dlq"]
    assert {topic for topic, _ in dead} == {"events.dlq"}
    by_offset = {d.offset: d for _, d in dead}
    assert by_offset[1].value_bytes() == b"\xff\x00garbage"
    assert "invalid JSON" in by_offset[1].error
    assert by_offset[2].error == "semantically invalid"
    assert by_offset[2].value_bytes() == good(3)
    assert journal.entries[-1] == ("commit", {TP: 3})


async def test_only_garbage_still_commits_past_it() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        raise AssertionError("never called for an empty batch")

    await runner(journal, handler)._handle(FakeConsumer(journal), {TP: [record(9, b"{}")]})  # type: ignore[arg-type]
    assert [e[0] for e in journal.entries] == ["dlq", "commit"]
    assert journal.entries[-1] == ("commit", {TP: 10})


async def test_dlq_limit_stops_the_consumer() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        return None

    r = runner(journal, handler, kafka_dlq_max_consecutive=3)
    await r._handle(FakeConsumer(journal), {TP: [record(i, b"x") for i in range(3)]})  # type: ignore[arg-type]
    with pytest.raises(DlqLimitExceeded):
        await r._handle(FakeConsumer(journal), {TP: [record(3, b"x")]})  # type: ignore[arg-type]
    assert not [
        e for e in journal.entries[-2:] if e[0] == "commit" and TP in e[1] and e[1][TP] == 4
    ]


async def test_a_good_record_resets_the_dlq_count() -> None:
    async def handler(batch: Batch) -> None:
        return None

    journal = Journal()
    r = runner(journal, handler, kafka_dlq_max_consecutive=3)
    await r._handle(
        FakeConsumer(journal),
        {
            TP: [  # type: ignore[arg-type]
                record(0, b"x"),
                record(1, b"x"),
                record(2, good(1)),
                record(3, b"x"),
                record(4, b"x"),
            ]
        },
    )
    await r._handle(FakeConsumer(journal), {TP: [record(5, b"x")]})  # type: ignore[arg-type]
    assert journal.entries[-1] == ("commit", {TP: 6})


async def test_a_poison_record_is_isolated_and_the_rest_take_effect() -> None:
    """A record that makes the store refuse its data (here: a DataError for e2) fails the
    batch; the runner replays record by record, dead-letters e2 alone and commits."""
    from sqlalchemy.exc import DataError

    journal = Journal()

    async def handler(batch: Batch) -> None:
        ids = [r.value.event_id for r in batch.records]  # type: ignore[attr-defined]
        if "e2" in ids:
            raise DataError("insert", {}, Exception("invalid byte sequence 0x00"))
        journal.entries.append(("write", ids))

    r = runner(journal, handler)
    await r._handle(  # type: ignore[arg-type]
        FakeConsumer(journal), {TP: [record(0, good(1)), record(1, good(2)), record(2, good(3))]}
    )
    assert journal.entries[:2] == [("write", ["e1"]), ("write", ["e3"])]
    assert journal.entries[2][0] == "dlq"
    topic, dead = journal.entries[2][1]
    assert (topic, dead.offset) == ("events.dlq", 1)
    assert "DataError" in dead.error
    assert journal.entries[3] == ("commit", {TP: 3})


async def test_stop_ends_a_transient_retry_without_commit() -> None:
    journal = Journal()

    async def handler(batch: Batch) -> None:
        raise TransientError("db down")

    r = runner(journal, handler, kafka_retry_budget_s=600)
    task = asyncio.create_task(
        r._handle(FakeConsumer(journal), {TP: [record(0, good(1))]})  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.3)
    r.stop()
    with pytest.raises(TransientError):
        await asyncio.wait_for(task, 5)
    assert journal.entries == []


@pytest.mark.parametrize(
    ("policy", "records", "size", "waited", "full"),
    [
        ((0, 0, 0.0), 1, 10, 0.0, True),  # no limits: every fetch is a batch
        ((100, 0, 0.0), 99, 10**9, 99.0, False),  # only the record limit counts
        ((100, 0, 0.0), 100, 0, 0.0, True),
        ((0, 1000, 0.0), 5, 999, 0.0, False),
        ((0, 1000, 0.0), 5, 1000, 0.0, True),
        ((50_000, 64 << 20, 1.0), 10, 100, 0.5, False),
        ((50_000, 64 << 20, 1.0), 10, 100, 1.0, True),
        ((50_000, 64 << 20, 1.0), 50_000, 100, 0.1, True),
    ],
)
def test_batch_policy(
    policy: tuple[int, int, float], records: int, size: int, waited: float, full: bool
) -> None:
    from libs.runtime.pipeline import BatchPolicy

    assert BatchPolicy(*policy).full(records, size, waited) is full


def test_per_partition_takes_no_batch_policy() -> None:
    from libs.runtime.pipeline import BatchPolicy

    async def handler(batch: Batch) -> None:
        return None

    with pytest.raises(ValueError, match="BatchPolicy"):
        ConsumerRunner(
            group="test.group",
            topics=["events"],
            handler=handler,
            settings=KafkaSettings(),
            dlq_producer=FakeDlq(Journal()),  # type: ignore[arg-type]
            policy=BatchPolicy(max_wait_s=1.0),
            per_partition=True,
        )


async def test_a_partition_takes_nothing_after_its_failed_batch() -> None:
    """Per partition: batches of at most kafka_max_batch records, each committed before
    the next; a failure is kept for run() to raise, stops the runner, and neither the
    failed batch nor any later record of the partition is handled or committed."""
    journal = Journal()

    async def handler(batch: Batch) -> None:
        offsets = [r.offset for r in batch.records]
        if 2 in offsets:
            raise KeyError("bug")
        journal.entries.append(("write", offsets))

    r = runner(journal, handler, per_partition=True, kafka_max_batch=2)
    r._buffers[TP] = [record(i, good(i)) for i in range(6)]
    await r._work(FakeConsumer(journal), TP)  # type: ignore[arg-type]
    assert journal.entries == [("write", [0, 1]), ("commit", {TP: 2})]
    assert isinstance(r._failure, KeyError)
    assert r._stopping.is_set()


async def test_per_partition_a_failed_commit_hands_the_rest_to_the_new_owner() -> None:
    """A commit refused after a rebalance (the member was replaced) means the partition
    is someone else's: the records buffered behind the batch are not handled here."""
    from aiokafka.errors import CommitFailedError

    journal = Journal()

    class Evicted(FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            journal.entries.append(("refused", dict(offsets)))
            raise CommitFailedError("rebalanced")

    async def handler(batch: Batch) -> None:
        journal.entries.append(("write", [r.offset for r in batch.records]))

    r = runner(journal, handler, per_partition=True, kafka_max_batch=2)
    r._buffers[TP] = [record(i, good(i)) for i in range(6)]
    await r._work(Evicted(journal), TP)  # type: ignore[arg-type]
    assert journal.entries == [("write", [0, 1]), ("refused", {TP: 2})]
    assert r._buffers[TP] == [] and r._failure is None
