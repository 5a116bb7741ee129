"""Kafka plumbing: topic creation and the contract-aware producer.

Works against Apache Kafka and Tansu alike. Tansu has no idempotent producer, so the
producer uses ``acks="all"`` without idempotence and consumers make effects idempotent
by the records' natural ids.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from libs.runtime.errors import register_transient
from libs.runtime.metrics import PRODUCER_FAILURES
from libs.schemas import ALL_TOPICS, CONTRACTS, Contract, TopicContract, dlq_topic, encode

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
# aiokafka's default: no record (and so no request of one record) larger than this.
MAX_REQUEST_BYTES = 1_048_576


@register_transient
def _transient(exc: BaseException) -> bool | None:
    """aiokafka: a connection or request timed out or broke, or the broker's own word that
    the request may succeed later (a node not ready, no leader, a request timed out … —
    a broker gone makes the producer raise NodeNotReadyError). Its refusals of a record
    (too large, unknown topic) are no verdict: their cause decides."""
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError) and exc.retriable:
        return True
    return None


def platform_topics() -> list[str]:
    """Every topic of DESIGN.md and its dead-letter twin."""
    return [*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)]


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    partitions: int,
    replication: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing ``topics``; returns the names that were created.

    Idempotent: topics that already exist are left alone. Retries while the broker is
    still starting (connection refused) for up to ``timeout_s``.
    """
    wanted = list(dict.fromkeys(topics))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        response: Any = await admin.create_topics(
            [NewTopic(t, partitions, replication) for t in missing]
        )
        created: list[str] = []
        for topic, code, message in _topic_errors(response):
            if code == 0:
                created.append(topic)
            elif code != TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating topic {topic!r} failed: {code} {message}")
        log.info("topics created", extra={"topics": created})
        return created
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    rows: list[tuple[str, int, str | None]] = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        rows.append((topic, code, message))
    return rows


class CachedPartitioner:
    """aiokafka's default partitioning (the Java client's: positive murmur2 of the key
    modulo the partition count; a random available partition without a key), with each
    key's hash remembered. Keys repeat (``app_id:device_id``) and aiokafka's murmur2 is
    pure Python — about 15 µs a record, a tenth of ingest's CPU (measured). Bounded: the
    memory is dropped when it reaches ``max_keys``."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class Producer:
    """A started-on-demand producer that knows each topic's key rule.

    ``publish`` waits for the broker's acknowledgement (``acks="all"``); use it where
    the caller must not answer before the record is durable (HTTP ingestion, consumer
    effects). ``publish_nowait`` only enqueues, for paths that must not block
    (click redirects); failures are counted and logged by the delivery callback.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 5,
        client_id: str = "hodhod",
        request_timeout_ms: int = 30_000,
    ) -> None:
        self._partitioner = CachedPartitioner()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,  # Tansu has no idempotent producer.
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            compression_type=None,
            client_id=client_id,
            # Also how long a record may wait unsent (a broker gone) before it fails.
            request_timeout_ms=request_timeout_ms,
            max_request_size=MAX_REQUEST_BYTES,
            partitioner=self._partitioner,
        )
        self._started = False
        # The longest a caller waits for its batches: queued (aiokafka fails a batch
        # unsent after the request timeout) then in flight (one more), plus a margin —
        # so a batch aiokafka never settles (added as the producer stopped) cannot hang it.
        self._wait_s = 2 * request_timeout_ms / 1000 + 5
        # The batch each partition's records join next (see ``publish_all``).
        self._open: dict[TopicPartition, _OpenBatch] = {}
        self._background: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        """Flush what is buffered, then close. Idempotent."""
        if self._started:
            self._started = False
            await self._producer.stop()

    async def ping(self) -> bool:
        """True when the producer holds broker metadata (readiness)."""
        try:
            await asyncio.wait_for(self._producer.client.force_metadata_update(), 5)
        except Exception:  # readiness answers false rather than raise
            return False
        return bool(self._producer.client.cluster.brokers())

    @staticmethod
    def serialise(message: Contract, value: bytes | None = None) -> tuple[str, bytes, bytes]:
        """(topic, key, value) of a contract instance; TypeError for a non-topic model.

        ``value`` is the message's ``encode`` when the caller already has it.
        """
        contract = _CONTRACT_OF.get(type(message))
        if contract is None:
            raise TypeError(f"{type(message).__name__} is not the contract of any topic")
        return contract.topic, contract.key(message).encode(), value or encode(message)

    async def publish(self, *messages: Contract) -> None:
        """Send and wait until every record is acknowledged. Raises on failure."""
        await self.publish_all(messages)

    async def publish_all(
        self, messages: Sequence[Contract], encoded: Sequence[bytes | None] = ()
    ) -> None:
        """Send every message and wait until the broker acknowledged all of them; raises
        the first failure. ``encoded`` may carry the messages' bytes already made (by
        position), so they are not encoded twice.

        Records go into per-partition batches shared by concurrent callers (one ack
        future per batch, not per record, as aiokafka's ``send_batch``), on the
        partition aiokafka's ``send`` would pick (the producer's partitioner, same
        arguments), and in call order, so a key's records keep their order. A caller
        returns once every batch holding one of its records is acknowledged; no record
        is half-sent: all are checked against ``max_request_size`` before any is taken.
        """
        records = []
        for index, message in enumerate(messages):
            given = encoded[index] if index < len(encoded) else None
            records.append(self.serialise(message, given))
        for topic, key, value in records:
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
            if size > MAX_REQUEST_BYTES:
                raise MessageSizeTooLargeError(
                    f"a {topic} record is {size} bytes, over the {MAX_REQUEST_BYTES} limit"
                )
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        for topic in {topic for topic, _, _ in records}:
            await self._producer.partitions_for(topic)  # waits for the topic's metadata
            cluster = self._producer.client.cluster
            # Built as aiokafka's send builds them, so the partitioner sees the same lists.
            partitions[topic] = (
                list(cluster.partitions_for_topic(topic)),
                list(cluster.available_partitions_for_topic(topic)),
            )
        # No await until every record is in a batch: the partition lists stay current
        # and no other caller's records come between this call's.
        loop = asyncio.get_running_loop()
        pending: dict[_OpenBatch, int] = {}
        created: list[_OpenBatch] = []
        for topic, key, value in records:
            all_partitions, available = partitions[topic]
            tp = TopicPartition(topic, self._partitioner(key, all_partitions, available))
            batch = self._open.get(tp)
            if batch is None or batch.builder.append(timestamp=None, key=key, value=value) is None:
                # None open, or it is full or already built for sending: a new one,
                # queued after it. A batch's first record always fits.
                builder = self._producer.create_batch()
                builder.append(timestamp=None, key=key, value=value)
                batch = self._open[tp] = _OpenBatch(tp, builder, batch, loop)
                created.append(batch)
            pending[batch] = pending.get(batch, 0) + 1
        await self._queue_in_order(created)
        deadline = loop.time() + self._wait_s
        unqueued = [b.queued for b in pending if not b.queued.done()]
        if unqueued:  # batches of other callers, still waiting for their turn
            await asyncio.wait(unqueued, timeout=self._wait_s)
        acks = [b.ack for b in pending if b.ack is not None and not b.ack.done()]
        if acks:  # shared: a cancelled caller must not cancel them
            await asyncio.wait(acks, timeout=max(0.0, deadline - loop.time()))
        unsettled = [(b, n) for b, n in pending.items() if not b.settled()]
        if unsettled:
            for batch, count in unsettled:
                PRODUCER_FAILURES.labels(batch.tp.topic).inc(count)
            raise KafkaTimeoutError(f"records not acknowledged within {self._wait_s:.0f} s")
        failure: BaseException | None = None
        for batch, count in pending.items():
            error = batch.outcome()
            if error is not None:
                PRODUCER_FAILURES.labels(batch.tp.topic).inc(count)
                failure = failure or error
        if failure is not None:
            raise failure

    async def _queue_in_order(self, batches: list[_OpenBatch]) -> None:
        """Hand ``batches`` to aiokafka one after the other. Other callers may have
        records in them: when this caller is cancelled, a task finishes the job."""
        for index, batch in enumerate(batches):
            try:
                await self._queue(batch)
            except asyncio.CancelledError:
                task = asyncio.ensure_future(self._queue_in_order(batches[index:]))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                raise

    async def _queue(self, batch: _OpenBatch) -> None:
        """Queue ``batch`` after its partition's previous one (aiokafka's ``send_batch``,
        open: records join it until aiokafka builds it to send, ``linger_ms`` after it
        was queued or when full). A failure to queue fails the batch's callers."""
        previous = batch.previous
        if previous is not None and not previous.queued.done():
            await asyncio.wait([previous.queued])
        try:
            ack = await self._producer.send_batch(
                batch.builder, batch.tp.topic, partition=batch.tp.partition
            )
        except Exception as exc:  # the batch's callers raise it (publish_all)
            batch.error = exc
            batch.builder.close()
            if self._open.get(batch.tp) is batch:
                del self._open[batch.tp]
        else:
            batch.ack = ack
            ack.add_done_callback(lambda _: self._settle(batch))
        batch.previous = None
        batch.queued.set_result(None)

    def _settle(self, batch: _OpenBatch) -> None:
        """The batch's ack is done: no record may join it any more. aiokafka fails a batch
        that expired unsent (no leader for the request timeout) without building it, so
        it would otherwise take the next callers' records and fail them at once."""
        batch.builder.close()
        if self._open.get(batch.tp) is batch:
            del self._open[batch.tp]
        assert batch.ack is not None
        if not batch.ack.cancelled():
            batch.ack.exception()  # seen: its callers may all be gone

    async def publish_nowait(self, message: Contract) -> asyncio.Future[Any]:
        """Enqueue without waiting for the acknowledgement; returns its future."""
        topic, key, value = self.serialise(message)
        future: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key)
        future.add_done_callback(
            lambda f: (
                None
                if f.cancelled() or f.exception() is None
                else PRODUCER_FAILURES.labels(topic).inc()
            )
        )
        return future

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are (DLQ records, tests of foreign producers) and wait."""
        future = await self._producer.send(topic, value=value, key=key)
        try:
            await future
        except Exception:
            PRODUCER_FAILURES.labels(topic).inc()
            raise


class _OpenBatch:
    """One aiokafka batch of one partition being filled by ``Producer.publish_all``.

    ``queued`` is done once aiokafka took it (then ``ack`` is its acknowledgement) or
    could not (then ``error`` says why)."""

    __slots__ = ("ack", "builder", "error", "previous", "queued", "tp")

    def __init__(
        self,
        tp: TopicPartition,
        builder: Any,
        previous: _OpenBatch | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.tp = tp
        self.builder = builder
        self.previous = previous
        self.queued: asyncio.Future[None] = loop.create_future()
        self.ack: asyncio.Future[Any] | None = None
        self.error: BaseException | None = None

    def settled(self) -> bool:
        """Queued and, when aiokafka took it, acknowledged or failed."""
        return self.queued.done() and (self.ack is None or self.ack.done())

    def outcome(self) -> BaseException | None:
        """The failure of a finished batch, None when it was acknowledged."""
        if self.error is not None:
            return self.error
        assert self.ack is not None and self.ack.done()
        if self.ack.cancelled():
            return asyncio.CancelledError("the batch's delivery was cancelled")
        return self.ack.exception()


_CONTRACT_OF: dict[type[Contract], TopicContract[Any]] = {c.model: c for c in CONTRACTS.values()}
