"""The consumer runner: arroyo's contract in asyncio.

One loop per consumer group: take a batch with ``getmany``, decode every record against
its topic contract, hand the valid ones to the handler, dead-letter the rest, and commit
only after the handler returned (its effects are durable) and the DLQ records were
acknowledged. Offsets of filtered and dead-lettered records advance with the batch.

Two ways to run, chosen per consumer:
- serial (the default): one batch at a time, of whatever the fetch returned, across
  partitions; a ``BatchPolicy`` may gather fetches into big batches (the warehouse);
- per partition (``per_partition=True``): as if each partition had its own replica. The
  loop keeps fetching into a buffer per partition while batches are handled; each
  partition has at most one batch in flight (its order is kept), taking everything
  buffered for it (up to ``kafka_max_batch`` records), and commits only its own offsets
  after its effects; different partitions' batches run concurrently. A partition with a
  full batch waiting is paused (backpressure) until that batch is taken. On revocation
  the revoked partitions' batches in flight finish and commit before the rebalance goes
  on, their buffered records are dropped (uncommitted: the next owner fetches them); on
  ``stop()`` or a failure, every batch in flight finishes (commits, or fails) before
  ``run`` returns or raises, and no new batch starts. The handler must be safe under
  concurrent calls, as it must be under replicas (e.g. locks in one global order).

Errors are classified here and nowhere else:
- a record that does not decode, or that the handler rejects, or whose data the store
  refuses (``errors.is_poison``, isolated record by record) → ``<topic>.dlq``;
- a transient I/O failure (``errors.is_transient``) → the same batch is retried with capped
  exponential backoff, nothing is committed; past the retry budget the runner raises;
- anything else → the runner raises (crash loudly, never log-and-continue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from libs.runtime import metrics
from libs.runtime.errors import is_poison, is_transient
from libs.runtime.kafka import Producer
from libs.runtime.settings import KafkaSettings
from libs.schemas import Contract, ContractError, DlqRecord, contract_for, decode, dlq_topic, encode

log = logging.getLogger(__name__)


class DlqLimitExceeded(RuntimeError):
    """Too many consecutive records were dead-lettered: something upstream is broken."""


class Record(NamedTuple):
    """A decoded record with its position; the offset travels with the data."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Contract
    timestamp_ms: int

    @property
    def time(self) -> datetime:
        """The record's Kafka timestamp: the same on every redelivery, so effects stamped
        with it (rather than with the clock) are identical when a batch is replayed."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


@dataclass(slots=True)
class Batch:
    """What a handler receives. ``reject`` routes one record to the DLQ after the batch."""

    records: list[Record]
    rejected: list[tuple[Record, str]] = field(default_factory=list)

    def reject(self, record: Record, reason: str) -> None:
        self.rejected.append((record, reason))

    def of(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]


Handler = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch is complete: after ``max_records`` records, ``max_bytes`` of values or
    ``max_wait_s`` since its first record, whichever comes first. The default hands each
    fetch over at once (latency first); sinks that like big writes (the warehouse) wait."""

    max_records: int = 0
    max_bytes: int = 0
    max_wait_s: float = 0.0

    def full(self, records: int, size: int, waited_s: float) -> bool:
        """A limit of 0 is no limit; with none set, every fetch is a batch."""
        if not (self.max_records or self.max_bytes or self.max_wait_s):
            return True
        return bool(
            (self.max_records and records >= self.max_records)
            or (self.max_bytes and size >= self.max_bytes)
            or (self.max_wait_s and waited_s >= self.max_wait_s)
        )


class ConsumerRunner:
    """Runs one consumer group until ``stop()``; see the module docstring for the contract.

    ``run`` blocks; it returns after ``stop()`` once the batch(es) in hand are committed,
    and raises on a fatal error or an exhausted retry budget (offsets of that batch are
    not committed, so it is redelivered to whoever owns the partition next). Per
    partition, a failure stops the runner too: the other partitions' batches in flight
    finish and commit first, then ``run`` raises the first failure.
    """

    def __init__(
        self,
        *,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        settings: KafkaSettings,
        dlq_producer: Producer,
        client_id: str | None = None,
        policy: BatchPolicy | None = None,
        per_partition: bool = False,
    ) -> None:
        if per_partition and policy not in (None, BatchPolicy()):
            raise ValueError(
                "a per-partition runner hands each partition's buffer over as soon as its "
                "previous batch is done; it takes no BatchPolicy"
            )
        self.group = group
        self._policy = policy or BatchPolicy()
        self._per_partition = per_partition
        self.topics = list(topics)
        self._handler = handler
        self._settings = settings
        self._dlq = dlq_producer
        self._client_id = client_id or group
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        self._consecutive_dlq = 0
        # Per-partition mode: records fetched but not yet handed over, the task handling
        # each partition's batches, and the first failure (which stops the runner).
        self._buffers: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._failure: Exception | None = None

    def stop(self) -> None:
        """Ask the loop to finish the batch(es) in hand, commit them and return.
        Non-blocking."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *(() if self._per_partition else self.topics),
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self.group,
            client_id=self._client_id,
            enable_auto_commit=False,
            # New groups start at the beginning: Tansu's high watermark is unreliable.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
            max_poll_records=self._settings.kafka_max_batch,
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
            # A batch may retry for the whole budget; the member must not be evicted
            # meanwhile (a second owner would process the same partition).
            max_poll_interval_ms=int(self._settings.kafka_retry_budget_s * 1000) + 60_000,
            # Per partition, a revocation waits for the batches in flight (which may retry
            # for the budget): the group must wait as long, or it hands their partitions
            # to a second owner meanwhile (the Java client's rebalance timeout is
            # max.poll.interval.ms too).
            **(
                {"rebalance_timeout_ms": int(self._settings.kafka_retry_budget_s * 1000) + 60_000}
                if self._per_partition
                else {}
            ),
            heartbeat_interval_ms=max(self._settings.kafka_session_timeout_ms // 10, 500),
        )
        await consumer.start()
        log.info("consumer started", extra={"group": self.group, "topics": self.topics})
        if self._per_partition:
            try:
                consumer.subscribe(self.topics, listener=_DrainOnRevoke(self))
                await self._run_per_partition(consumer)
            finally:
                await consumer.stop()
                log.info("consumer stopped", extra={"group": self.group})
            return
        pending: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        count = size = 0
        first_at = 0.0
        try:
            while not self._stopping.is_set():
                wait_ms = 200
                if pending:
                    left = self._policy.max_wait_s - (time.monotonic() - first_at)
                    wait_ms = max(0, min(200, int(left * 1000)))
                raw = await consumer.getmany(
                    timeout_ms=wait_ms, max_records=self._settings.kafka_max_batch
                )
                if consumer.assignment():
                    self.assigned.set()
                for tp, records in raw.items():
                    if not pending:
                        first_at = time.monotonic()
                    pending.setdefault(tp, []).extend(records)
                    count += len(records)
                    if self._policy.max_bytes:
                        size += sum(len(r.value or b"") for r in records)
                if pending and self._policy.full(count, size, time.monotonic() - first_at):
                    await self._handle(consumer, pending)
                    pending, count, size = {}, 0, 0
            if pending:  # stopping: the batch in hand is finished, not dropped
                await self._handle(consumer, pending)
        finally:
            await consumer.stop()
            log.info("consumer stopped", extra={"group": self.group})

    async def _run_per_partition(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch into the partitions' buffers until ``stop()`` or a failure, starting a
        partition's worker whenever it has records and none is running; then wait for
        every batch in flight and raise the first failure, if any."""
        limit = self._settings.kafka_max_batch
        try:
            while not self._stopping.is_set():
                raw = await consumer.getmany(timeout_ms=200, max_records=limit)
                if consumer.assignment():
                    self.assigned.set()
                if self._stopping.is_set():
                    # A worker failed (or stop() came) meanwhile: no batch may start after
                    # a failed one of its partition, so these records are dropped.
                    break
                for tp, records in raw.items():
                    buffer = self._buffers.setdefault(tp, [])
                    buffer.extend(records)
                    if len(buffer) >= limit:
                        consumer.pause(tp)  # a full batch waits; resumed when it is taken
                    worker = self._workers.get(tp)
                    if worker is None or worker.done():
                        self._workers[tp] = asyncio.create_task(
                            self._work(consumer, tp), name=f"{self.group}:{tp.topic}:{tp.partition}"
                        )
        finally:
            self._stopping.set()
            # Workers never raise (they record the failure); cancelling run() cancels them.
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
        if self._failure is not None:
            raise self._failure

    async def _work(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        """Handle ``tp``'s buffered records a batch at a time (each committed before the
        next starts) until the buffer is empty, the partition revoked or the runner
        stopping. A failure is recorded for ``run`` to raise and stops the runner: its
        batch is not committed and nothing of the partition is handled after it."""
        buffer = self._buffers[tp]
        limit = self._settings.kafka_max_batch
        while buffer and not self._stopping.is_set():
            records = buffer[:limit]
            del buffer[:limit]
            if len(buffer) < limit and tp in consumer.paused():
                consumer.resume(tp)
            try:
                await self._handle(consumer, {tp: records})
            except Exception as exc:
                if self._failure is None:
                    self._failure = exc
                self._stopping.set()
                return

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        """Before the group rebalances: drop the revoked partitions' buffered records
        (uncommitted: their next owner fetches them again) and wait until their batches
        in flight have finished and committed. aiokafka returns no records between the
        start of a rebalance and the new assignment, so no batch of them starts after."""
        for tp in revoked:
            buffer = self._buffers.pop(tp, None)
            if buffer is not None:
                buffer.clear()  # the worker takes no further batch
        workers = [w for tp in revoked if (w := self._workers.pop(tp, None)) is not None]
        if workers:
            log.info(
                "partitions revoked; finishing their batches in flight",
                extra={"group": self.group, "in_flight": len(workers)},
            )
            await asyncio.gather(*workers, return_exceptions=True)

    async def _handle(
        self, consumer: AIOKafkaConsumer, raw: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        started = time.perf_counter()
        batch = Batch(records=[])
        failed: list[tuple[ConsumerRecord[Any, Any], str]] = []
        offsets: dict[TopicPartition, int] = {}
        append, new = batch.records.append, tuple.__new__
        for tp, records in raw.items():
            if not records:
                continue
            metrics.CONSUMER_RECORDS.labels(self.group, tp.topic).inc(len(records))
            offsets[tp] = records[-1].offset + 1
            model = contract_for(tp.topic).model
            topic, partition = tp.topic, tp.partition
            for rec in records:
                try:
                    value = decode(model, rec.value if rec.value is not None else b"")
                except ContractError as exc:
                    failed.append((rec, str(exc)))
                    continue
                # tuple.__new__ skips the NamedTuple's Python-level __new__ (hot path).
                append(new(Record, (topic, partition, rec.offset, rec.key, value, rec.timestamp)))
        if batch.records:
            await self._call_handler(batch)
        for record, reason in batch.rejected:
            failed.append((_original(raw, record), reason))
        if failed:
            self._count_consecutive_dlq(raw, {(r.topic, r.partition, r.offset) for r, _ in failed})
            await self._dead_letter(failed)
        else:
            self._consecutive_dlq = 0
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us; the new owner redelivers and the
            # idempotent effects make that harmless. Per partition, the records buffered
            # behind this batch are the new owner's now: none is handled here.
            log.warning("commit failed after rebalance", extra={"group": self.group})
            for tp in offsets:
                buffered = self._buffers.get(tp)
                if buffered is not None:
                    buffered.clear()
        for tp, next_offset in offsets.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )
        metrics.CONSUMER_BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)

    async def _call_handler(self, batch: Batch) -> None:
        """Run the handler; on a poison failure, isolate the record(s) that cause it.

        A batch that fails with a data error (``is_poison``) is replayed one record at a
        time, each in its own handler call: records that fail alone with a data error are
        rejected to the DLQ, the others take effect. Any other failure propagates.
        """
        try:
            await self._retrying(batch)
            return
        except Exception as exc:
            if not is_poison(exc):
                metrics.CONSUMER_FAILURES.labels(self.group, "fatal").inc()
                log.exception("consumer handler failed", extra={"group": self.group})
                raise
            first_error = exc
        metrics.CONSUMER_FAILURES.labels(self.group, "poison").inc()
        log.warning(
            "batch failed on bad data; isolating the poison records",
            extra={"group": self.group, "error": repr(first_error)[:500]},
        )
        batch.rejected.clear()
        for record in batch.records:
            single = Batch(records=[record])
            try:
                await self._retrying(single)
            except Exception as exc:
                if not is_poison(exc):
                    metrics.CONSUMER_FAILURES.labels(self.group, "fatal").inc()
                    log.exception("consumer handler failed", extra={"group": self.group})
                    raise
                batch.reject(record, f"handler failed: {type(exc).__name__}: {exc}")
                continue
            batch.rejected.extend(single.rejected)

    async def _retrying(self, batch: Batch) -> None:
        """The handler, retried with capped exponential backoff while it fails transiently.

        Gives up (re-raising) when the retry budget is spent or ``stop()`` was called:
        nothing is committed, so the batch is redelivered to the partition's next owner.
        """
        delay = 0.1
        deadline = time.monotonic() + self._settings.kafka_retry_budget_s
        while True:
            try:
                await self._handler(batch)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.CONSUMER_FAILURES.labels(self.group, "transient").inc()
                if time.monotonic() + delay > deadline or self._stopping.is_set():
                    log.error(
                        "giving up on a transient failure",
                        extra={"group": self.group, "stopping": self._stopping.is_set()},
                    )
                    raise
                log.warning(
                    "transient failure, retrying batch",
                    extra={"group": self.group, "error": repr(exc), "delay_s": delay},
                )
                batch.rejected.clear()
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    def _count_consecutive_dlq(
        self,
        raw: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
        failed: set[tuple[str, int, int]],
    ) -> None:
        """Raise ``DlqLimitExceeded`` (before anything is dead-lettered or committed) when
        the run of consecutive failed records passes the limit; a good record resets it."""
        for tp, records in raw.items():
            for rec in records:
                if (tp.topic, tp.partition, rec.offset) in failed:
                    self._consecutive_dlq += 1
                else:
                    self._consecutive_dlq = 0
                if self._consecutive_dlq > self._settings.kafka_dlq_max_consecutive:
                    raise DlqLimitExceeded(
                        f"{self.group}: {self._consecutive_dlq} consecutive records "
                        "dead-lettered; stopping rather than draining the topic into the DLQ"
                    )

    async def _dead_letter(self, failed: list[tuple[ConsumerRecord[Any, Any], str]]) -> None:
        now = datetime.now(UTC)
        for rec, reason in failed:
            envelope = DlqRecord.from_failure(
                source_topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                key=rec.key,
                value=rec.value,
                error=reason,
                consumer_group=self.group,
                failed_at=now,
            )
            await self._dlq.send_raw(dlq_topic(rec.topic), encode(envelope), rec.key)
            metrics.CONSUMER_DLQ.labels(self.group, rec.topic).inc()
            log.warning(
                "record dead-lettered",
                extra={
                    "group": self.group,
                    "topic": rec.topic,
                    "offset": rec.offset,
                    "reason": reason[:500],
                },
            )


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits ``on_partitions_revoked`` before it rejoins the group: the
    per-partition runner finishes the revoked partitions' batches in flight there."""

    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


def _original(
    raw: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], record: Record
) -> ConsumerRecord[Any, Any]:
    """The undecoded record behind ``record`` (rejections are rare: a scan is fine)."""
    for rec in raw[TopicPartition(record.topic, record.partition)]:
        if rec.offset == record.offset:
            return rec
    raise LookupError(f"{record.topic}/{record.partition}@{record.offset} is not in the batch")
