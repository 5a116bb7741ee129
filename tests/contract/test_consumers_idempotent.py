"""Every consumer handles every example payload of every topic it consumes twice with the
same result: the second run of the same batch leaves its service's tables (or the
warehouse, read with FINAL) exactly as the first run left them, and publishes nothing
the first run did not.

Each test works in its own app (the examples' ``app_id`` is rewritten), so the rows it
reads are its own even when the whole platform runs in the same session.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.clock import SystemClock
from libs.runtime.errors import TransientError
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Handler, Record
from libs.runtime.postgres import Base
from libs.runtime.settings import PlatformSettings
from libs.runtime.tables import (
    DeviceAlias,
    Journey,
    JourneyVersion,
    Membership,
    Profile,
    Segment,
    Tracker,
)
from libs.schemas import CONTRACTS, Contract, DeliveryReceipt, Event, validate
from services.attribution import store as attribution_store
from services.attribution.consumer import TOPICS as ATTRIBUTION_TOPICS
from services.attribution.consumer import Matcher
from services.attribution.erasure import Eraser
from services.attribution.postback_store import PostbackAttempt, PostbackHold
from services.attribution.postbacks import Postbacks
from services.dispatcher import store as dispatcher_store
from services.dispatcher.consumer import TOPICS as DISPATCHER_TOPICS
from services.dispatcher.consumer import Sender
from services.dispatcher.service import providers
from services.ingest.warehouse import TABLES, WarehouseWriter
from services.journey import store as journey_store
from services.journey.apply import Engine
from services.journey.consumer import TOPICS as JOURNEY_TOPICS
from services.journey.consumer import TriggerHandler
from services.journey.events import EventHandler
from services.segmenter import store as segmenter_store
from services.segmenter.consumer import TOPICS as SEGMENTER_TOPICS
from services.segmenter.consumer import ProfileUpdater

pytestmark = pytest.mark.integration

# Set from the wall clock on every write, so a replay may move them; everything else
# must come out of a replay unchanged.
VOLATILE = frozenset({"updated_at", "attributed_at", "seen_at", "created_at", "_inserted_at"})

# The segment_changes examples name this segment; the journey test triggers on it.
EXAMPLE_SEGMENT = "seg_7"

Snapshot = dict[str, list[dict[str, Any]]]


# --- building batches --------------------------------------------------------------


def example_values(topic: str, app_id: str) -> list[Contract]:
    """The topic's examples under ``app_id``; send jobs that expired since the examples
    were written are given a future deadline, so that they are really sent."""
    contract = CONTRACTS[topic]
    values = []
    for ex in contract.examples:
        fields = {**ex, "app_id": app_id}
        if fields.get("expires_at"):
            fields["expires_at"] = "2100-01-01T00:00:00Z"
        values.append(validate(contract.model, fields))
    return values


def batch_of(topics: Sequence[str], app_id: str) -> Batch:
    """Every example of ``topics``, app id rewritten, at distinct positions."""
    records = []
    for partition, topic in enumerate(topics):
        key = CONTRACTS[topic].key
        for offset, value in enumerate(example_values(topic, app_id)):
            records.append(
                Record(topic, partition, offset, key(value).encode(), value, 1_714_550_400_000)
            )
    return Batch(records=records)


def records_of(topic: str, values: Sequence[Contract]) -> Batch:
    key = CONTRACTS[topic].key
    return Batch(
        records=[
            Record(topic, 0, offset, key(v).encode(), v, 1_714_550_400_000)
            for offset, v in enumerate(values)
        ]
    )


def _stable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: repr(sorted(r.items())))


# --- fixtures ----------------------------------------------------------------------


class RecordingProducer(Producer):
    """The real producer (records reach the test broker), remembering each call."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, client_id="hodhod-test-idempotency")
        self.calls: list[list[Contract]] = []

    async def publish_all(self, messages: Sequence[Contract]) -> None:
        self.calls.append(list(messages))
        await super().publish_all(messages)


class FailsAfterFirstPublish(RecordingProducer):
    """Publishes, then raises once: the broker wrote the records but the handler's
    transaction rolls back, as when an acknowledgement is lost or the process dies
    before the commit."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.failed = False

    async def publish_all(self, messages: Sequence[Contract]) -> None:
        await super().publish_all(messages)
        if not self.failed:
            self.failed = True
            raise TransientError("acknowledgement lost after the broker wrote the records")


@pytest_asyncio.fixture(loop_scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[RecordingProducer]:
    made = RecordingProducer(settings.kafka_bootstrap)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture(scope="module")
def warehouse(clickhouse_url: str) -> Iterator[AsyncClickHouse]:
    # The session's chDB path: chDB allows one engine path per process.
    ch = AsyncClickHouse(get_client(clickhouse_url), "hodhod")
    yield ch


# --- snapshots ---------------------------------------------------------------------


async def pg_snapshot(
    sessions: async_sessionmaker[AsyncSession], models: Sequence[type[Base]], app_id: str
) -> Snapshot:
    out: Snapshot = {}
    async with sessions() as session:
        for model in models:
            table = model.__table__
            result = await session.execute(select(table).where(table.c.app_id == app_id))
            out[model.__tablename__] = _sorted([_stable(dict(row)) for row in result.mappings()])
    return out


async def ch_snapshot(ch: AsyncClickHouse, app_id: str) -> Snapshot:
    out: Snapshot = {}
    for table, _columns, _build in TABLES.values():
        where = "WHERE app_id = {app_id:String}"
        count = await ch.query_rows(
            f"SELECT count() AS n FROM {ch.database}.{table} FINAL {where}", {"app_id": app_id}
        )
        rows = await ch.query_rows(
            f"SELECT * FROM {ch.database}.{table} FINAL {where}", {"app_id": app_id}
        )
        out[f"{table}.count"] = count
        out[table] = _sorted([_stable(r) for r in rows])
    return out


# --- the consumers -----------------------------------------------------------------

ATTRIBUTION_TABLES: tuple[type[Base], ...] = (attribution_store.Click, attribution_store.Install)
SEGMENTER_TABLES: tuple[type[Base], ...] = (
    Profile,
    DeviceAlias,
    segmenter_store.SeenEvent,
    Membership,
)
POSTBACK_TABLES: tuple[type[Base], ...] = (PostbackHold, PostbackAttempt)
ERASER_TABLES: tuple[type[Base], ...] = (
    attribution_store.Erasure,
    attribution_store.Install,
    attribution_store.DeviceLink,
)
JOURNEY_TABLES: tuple[type[Base], ...] = (
    journey_store.JourneyRun,
    journey_store.JourneyNodeStat,
    journey_store.JourneySeenEvent,
    journey_store.JourneyDeviceLink,
)
DISPATCHER_TABLES: tuple[type[Base], ...] = (
    dispatcher_store.SendLedger,
    dispatcher_store.Outbox,
)


async def add_catalog(sessions: async_sessionmaker[AsyncSession], *rows: Base) -> None:
    async with sessions() as session, session.begin():
        session.add_all(rows)


async def setup_segmenter(sessions: async_sessionmaker[AsyncSession], app_id: str) -> None:
    """A segment every example profile enters: seen long ago, or installed via abc123."""
    now = datetime.now(UTC)
    rule = {
        "any": [
            {"first_seen": {"op": "before", "ago": {"days": 1}}},
            {"install": {"tracker": "abc123"}},
        ]
    }
    await add_catalog(
        sessions,
        Segment(
            id=f"seg_{secrets.token_hex(8)}",
            app_id=app_id,
            name="همه",
            rule=rule,
            status="active",
            created_at=now,
            updated_at=now,
        ),
    )


async def setup_postbacks(sessions: async_sessionmaker[AsyncSession], app_id: str) -> None:
    """A tracker posting back the examples' events (to no URL: nothing is called). No
    install is known, so the events are held for theirs."""
    now = datetime.now(UTC)
    names = sorted({e.name for e in example_values("events", app_id) if isinstance(e, Event)})
    await add_catalog(
        sessions,
        Tracker(
            token=secrets.token_hex(5),
            app_id=app_id,
            name="پست‌بک",
            channel="web",
            store_url="https://example.com",
            status="active",
            created_at=now,
            updated_at=now,
            postback_events=names,
        ),
    )


async def setup_journey(sessions: async_sessionmaker[AsyncSession], app_id: str) -> None:
    """A two-step journey (legacy form) on entering the segment the examples enter, and
    one that follows the examples' purchases: wait a day for a refund, else thank."""
    now = datetime.now(UTC)
    legacy = {
        "steps": [
            {"id": "welcome", "send": {"channel": "push", "content": {"body": "خوش آمدید"}}},
            {"id": "otp", "send": {"channel": "sms", "template_id": "tpl_welcome"}},
        ]
    }
    follow = {
        "start": "thanks",
        "nodes": [
            {
                "id": "thanks",
                "type": "send",
                "channel": "push",
                "content": {"body": "ممنون"},
                "next": "w",
            },
            {
                "id": "w",
                "type": "wait_for_event",
                "event": "order_refunded",
                "timeout": {"days": 1},
                "on_event": "sorry",
                "on_timeout": "done",
            },
            {"id": "sorry", "type": "send", "channel": "sms", "content": {"body": "متاسفیم"}},
            {"id": "done", "type": "exit"},
        ],
        "entry": {"reentry": "always", "max_concurrent": 5},
    }
    rows: list[Base] = []
    for trigger, definition in (
        ({"segment_entered": EXAMPLE_SEGMENT}, legacy),
        ({"type": "event", "event": "purchase"}, follow),
    ):
        journey_id = f"jrn_{secrets.token_hex(8)}"
        rows.append(
            Journey(
                id=journey_id,
                app_id=app_id,
                name="خوشامد",
                trigger=trigger,
                definition=definition,
                status="active",
                version=1,
                kind="journey",
                created_at=now,
                updated_at=now,
            )
        )
        rows.append(
            JourneyVersion(
                app_id=app_id,
                journey_id=journey_id,
                version=1,
                trigger=trigger,
                definition=definition,
                created_at=now,
            )
        )
    await add_catalog(sessions, *rows)


@dataclass(frozen=True)
class Case:
    """One consumer fed every example of ``topics`` in one batch; after the first run
    each table of ``expect_rows`` holds rows of the test's app."""

    consumer: str
    topics: tuple[str, ...]
    expect_rows: tuple[str, ...]


CASES = [
    *(
        Case("attribution", topics, expect)
        for topics, expect in (
            (("clicks",), ("attribution_clicks",)),
            (("installs",), ("attribution_installs",)),
            (ATTRIBUTION_TOPICS, ("attribution_clicks", "attribution_installs")),
        )
    ),
    *(
        Case("segmenter", topics, expect)
        for topics, expect in (
            (("events",), ("profiles", "segmenter_seen_events", "segment_memberships")),
            (("attributions",), ("profiles", "segment_memberships")),
            (
                SEGMENTER_TOPICS,
                ("profiles", "segmenter_seen_events", "segment_memberships"),
            ),
        )
    ),
    Case("postbacks", ("events",), ("attribution_postback_holds",)),
    Case("eraser", ("config-changes",), ("attribution_erasures",)),
    *(Case("journey", (topic,), ("journey_runs",)) for topic in JOURNEY_TOPICS),
    Case("journey-events", ("events",), ("journey_runs", "journey_seen_events")),
    *(
        Case("dispatcher", (topic,), ("dispatcher_send_ledger", "dispatcher_outbox"))
        for topic in DISPATCHER_TOPICS
    ),
    *(Case("warehouse", (topic,), (table,)) for topic, (table, _, _) in TABLES.items()),
    Case("warehouse", tuple(TABLES), tuple(table for table, _, _ in TABLES.values())),
]


def _consumer(
    case: Case,
    sessions: async_sessionmaker[AsyncSession],
    producer: Producer,
    warehouse: AsyncClickHouse,
    app_id: str,
) -> tuple[Handler, Callable[[], Awaitable[Snapshot]], Callable[[], Awaitable[None]]]:
    """The handler, the snapshot of its observable state, and the catalog it needs."""

    async def nothing() -> None:
        return None

    def pg(models: Sequence[type[Base]]) -> Callable[[], Awaitable[Snapshot]]:
        return lambda: pg_snapshot(sessions, models, app_id)

    match case.consumer:
        case "attribution":
            return Matcher(sessions, producer), pg(ATTRIBUTION_TABLES), nothing
        case "postbacks":
            return (
                Postbacks(sessions),
                pg(POSTBACK_TABLES),
                lambda: setup_postbacks(sessions, app_id),
            )
        case "segmenter":
            return (
                ProfileUpdater(sessions, producer),
                pg(SEGMENTER_TABLES),
                lambda: setup_segmenter(sessions, app_id),
            )
        case "eraser":
            return Eraser(sessions), pg(ERASER_TABLES), nothing
        case "journey":
            return (
                TriggerHandler(sessions, producer, SystemClock(), Engine()),
                pg(JOURNEY_TABLES),
                lambda: setup_journey(sessions, app_id),
            )
        case "journey-events":
            return (
                EventHandler(sessions, producer, SystemClock(), Engine()),
                pg(JOURNEY_TABLES),
                lambda: setup_journey(sessions, app_id),
            )
        case "dispatcher":
            return Sender(sessions, producer, providers(sessions)), pg(DISPATCHER_TABLES), nothing
        case "warehouse":
            return WarehouseWriter(warehouse), lambda: ch_snapshot(warehouse, app_id), nothing
    raise AssertionError(case.consumer)


# The natural id of each published contract: a replay must reuse it.
NATURAL_ID = {
    "attributions": "attribution_id",
    "segment-changes": "change_id",
    "send-jobs": "job_id",
    "deliveries": "receipt_id",
}


def published_ids(calls: list[list[Contract]]) -> set[tuple[str, str]]:
    topic_of = {c.model: c.topic for c in CONTRACTS.values()}
    return {
        (topic_of[type(m)], getattr(m, NATURAL_ID[topic_of[type(m)]]))
        for messages in calls
        for m in messages
    }


@pytest.mark.parametrize("case", CASES, ids=[f"{c.consumer}-{'+'.join(c.topics)}" for c in CASES])
async def test_consumer_handles_examples_twice_with_same_result(
    case: Case,
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
    warehouse: AsyncClickHouse,
) -> None:
    app_id = app_keys["app_id"]
    handler, snapshot, setup = _consumer(case, sessions, producer, warehouse, app_id)
    await setup()
    batch = batch_of(case.topics, app_id)
    assert batch.records, f"no examples for {case.topics}"

    before = await snapshot()
    await handler(batch)
    first = await snapshot()
    first_published = published_ids(producer.calls)
    producer.calls.clear()

    assert first != before, "the first run changed nothing: the test would pass vacuously"
    for table in case.expect_rows:
        assert first[table], f"{table} has no rows for the app after the first run"
    assert not batch.rejected, batch.rejected

    await handler(batch)
    second = await snapshot()

    assert second == first
    assert not batch.rejected, batch.rejected
    # A replay may republish (the same ids) but never publishes anything new.
    assert published_ids(producer.calls) <= first_published


async def test_late_click_upgrades_the_install_once(
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    """Installs first (recorded organic), then their click arrives, twice."""
    app_id = app_keys["app_id"]
    matcher = Matcher(sessions, producer)
    await matcher(batch_of(["installs"], app_id))
    organic = await pg_snapshot(sessions, ATTRIBUTION_TABLES, app_id)
    assert {r["method"] for r in organic["attribution_installs"]} == {"organic"}

    clicks = batch_of(["clicks"], app_id)
    await matcher(clicks)
    upgraded = await pg_snapshot(sessions, ATTRIBUTION_TABLES, app_id)
    producer.calls.clear()
    await matcher(clicks)
    again = await pg_snapshot(sessions, ATTRIBUTION_TABLES, app_id)

    assert upgraded != organic
    assert "click_id" in {r["method"] for r in upgraded["attribution_installs"]}
    assert again == upgraded
    assert producer.calls == [[]], "a replayed click re-attributed an install"


async def test_retried_dispatch_is_counted_once_in_the_warehouse(
    app_keys: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    settings: PlatformSettings,
    warehouse: AsyncClickHouse,
) -> None:
    app_id = app_keys["app_id"]
    flaky = FailsAfterFirstPublish(settings.kafka_bootstrap)
    await flaky.start()
    try:
        sender = Sender(sessions, flaky, providers(sessions))
        batch = batch_of(["send-jobs"], app_id)
        with pytest.raises(TransientError):
            await sender(batch)
        await sender(batch)  # the runner's retry of the same batch
    finally:
        await flaky.stop()
    receipts = [m for call in flaky.calls for m in call if isinstance(m, DeliveryReceipt)]
    ids = {r.receipt_id for r in receipts}
    assert len(receipts) == 2 * len(ids), "each receipt is published once per attempt"

    await WarehouseWriter(warehouse)(records_of("deliveries", receipts))
    rows = await warehouse.query_rows(
        "SELECT receipt_id, count() AS n FROM hodhod.deliveries FINAL "
        "WHERE app_id = {app_id:String} GROUP BY receipt_id",
        {"app_id": app_id},
    )
    assert {r["receipt_id"]: r["n"] for r in rows} == dict.fromkeys(ids, 1)
