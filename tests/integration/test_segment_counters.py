"""The segmenter consumer keeps daily counters and recent events exactly once per event
(replays change nothing) and evaluates event, revenue and segment-reference rules from
them in real time."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules import evaluation, semantics, sql
from libs.runtime.pipeline import Batch, Record
from libs.runtime.tables import DailyCounter, Profile, RecentEventRow, Segment
from libs.schemas import Event, SegmentChanged
from services.segmenter import store
from services.segmenter.consumer import ProfileUpdater

pytestmark = pytest.mark.integration


class CollectingProducer:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish_all(self, records: Sequence[Any]) -> None:
        self.published.extend(records)


def event(app_id: str, event_id: str, name: str, ts: datetime, **kw: Any) -> Event:
    return Event(
        app_id=app_id,
        event_id=event_id,
        name=name,
        device_id="dev_1",
        ts=ts,
        received_at=ts,
        **kw,
    )


def batch(events: Sequence[Event]) -> Batch:
    return Batch(
        [
            Record("events", 0, i, b"k", e, int(e.ts.timestamp() * 1000))
            for i, e in enumerate(events)
        ]
    )


async def counters(sessions: async_sessionmaker[AsyncSession], app_id: str) -> list[Any]:
    async with sessions() as session:
        rows = await session.execute(
            select(
                DailyCounter.user_key,
                DailyCounter.name,
                DailyCounter.day,
                DailyCounter.count,
                DailyCounter.revenue,
            )
            .where(DailyCounter.app_id == app_id)
            .order_by(DailyCounter.name, DailyCounter.day)
        )
        return [tuple(r) for r in rows]


async def recent(sessions: async_sessionmaker[AsyncSession], app_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(RecentEventRow.event_id)
            .where(RecentEventRow.app_id == app_id)
            .order_by(RecentEventRow.event_id)
        )
        return list(rows)


async def test_counters_are_idempotent_under_replay(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app_id = f"segc_{secrets.token_hex(4)}"
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).replace(hour=23, minute=59, second=59)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    old = now - timedelta(days=200)  # counted, but too old to keep as a recent event
    events = [
        event(app_id, "e1", "$purchase", yesterday, revenue=10.5, currency="IRR"),
        event(app_id, "e2", "$purchase", today, revenue=4.5, currency="IRR"),
        event(app_id, "e3", "$purchase", today, revenue=5.0, currency="IRR"),
        event(app_id, "e4", "$open", today),
        event(app_id, "e5", "$open", old),
    ]
    handler = ProfileUpdater(sessions, CollectingProducer())  # type: ignore[arg-type]
    # e1 twice inside the batch: counted once.
    await handler(batch([*events, events[0]]))
    first = await counters(sessions, app_id)
    assert first == [
        ("d:dev_1", "$open", old.date(), 1, 0.0),
        ("d:dev_1", "$open", today.date(), 1, 0.0),
        ("d:dev_1", "$purchase", yesterday.date(), 1, 10.5),
        ("d:dev_1", "$purchase", today.date(), 2, 9.5),
    ]
    assert await recent(sessions, app_id) == ["e1", "e2", "e3", "e4"]
    # The same batch again, then part of it in another batch: nothing moves.
    await handler(batch([*events, events[0]]))
    await handler(batch(events[1:3]))
    assert await counters(sessions, app_id) == first
    assert await recent(sessions, app_id) == ["e1", "e2", "e3", "e4"]
    async with sessions() as session:
        profile = await session.scalar(
            select(Profile).where(Profile.app_id == app_id, Profile.user_key == "d:dev_1")
        )
        assert profile is not None and profile.events == 5 and profile.purchases == 3
    # A new event adds to its day's row.
    await handler(batch([event(app_id, "e6", "$purchase", today, revenue=1.0, currency="IRR")]))
    assert (await counters(sessions, app_id))[-1] == ("d:dev_1", "$purchase", today.date(), 3, 10.5)


async def test_real_time_event_rules_and_segment_references(
    sessions: async_sessionmaker[AsyncSession], app_keys: dict[str, str]
) -> None:
    app_id = app_keys["app_id"]
    now = datetime.now(UTC)
    buyers = f"seg_{secrets.token_hex(6)}"
    big = f"seg_{secrets.token_hex(6)}"
    loyal = f"seg_{secrets.token_hex(6)}"
    rules = {
        buyers: {
            "event": "$purchase",
            "where": [{"prop": "sku", "op": "eq", "value": "A"}],
            "count": {"op": "gte", "value": 2},
            "within": {"days": 30},
        },
        big: {"revenue": {"op": "gte", "value": 100}, "within": {"days": 14}},
        loyal: {"all": [{"segment": buyers}, {"segment": big}]},
    }
    async with sessions() as session, session.begin():
        session.add_all(
            Segment(id=sid, app_id=app_id, name=sid, rule=rule, created_at=now, updated_at=now)
            for sid, rule in rules.items()
        )
    producer = CollectingProducer()
    handler = ProfileUpdater(sessions, producer)  # type: ignore[arg-type]

    def buy(event_id: str, sku: str, revenue: float) -> Event:
        return event(
            app_id, event_id, "$purchase", now, revenue=revenue, currency="IRR", props={"sku": sku}
        )

    await handler(batch([buy("p1", "A", 60), buy("p2", "B", 60)]))
    entered = {c.segment_id for c in producer.published if isinstance(c, SegmentChanged)}
    assert entered == {big}
    await handler(batch([buy("p3", "A", 1)]))
    changes = [(c.segment_id, c.change) for c in producer.published[1:]]
    assert sorted(changes) == sorted([(buyers, "entered"), (loyal, "entered")])
    async with sessions() as session:
        members = await store.memberships(session, app_id=app_id, user_key="d:dev_1")
    assert members == {buyers, big, loyal}
    # Replaying everything changes nothing and re-emits nothing new.
    before = len(producer.published)
    await handler(batch([buy("p1", "A", 60), buy("p2", "B", 60), buy("p3", "A", 1)]))
    assert len(producer.published) == before
    assert (await counters(sessions, app_id)) == [("d:dev_1", "$purchase", now.date(), 3, 121.0)]


async def test_rfm_thresholds_in_sql_are_the_quintiles_of_logic(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app_id = f"segr_{secrets.token_hex(4)}"
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    rows = [
        (f"u{i}", now - timedelta(hours=7 * i * i) if i % 5 else None, i * 3 % 7, i * 12.5)
        for i in range(13)
    ]
    async with sessions() as session, session.begin():
        session.add_all(
            Profile(
                app_id=app_id,
                user_key=key,
                attributes={},
                last_seen=seen,
                sessions=n,
                purchases=0,
                revenue=revenue,
                events=0,
                updated_at=now,
            )
            for key, seen, n, revenue in rows
        )
    async with sessions() as session:
        got = await sql.rfm_thresholds(session, app_id=app_id, now=now)
        empty = await sql.rfm_thresholds(session, app_id="segr_nobody", now=now)
    recency = [(now - seen).total_seconds() / 86400 for _, seen, _, _ in rows if seen]
    assert got.recency_days == pytest.approx(evaluation.quintile_thresholds(recency))
    assert got.frequency == pytest.approx(evaluation.quintile_thresholds(r[2] for r in rows))
    assert got.monetary == pytest.approx(evaluation.quintile_thresholds(r[3] for r in rows))
    assert empty == semantics.RfmThresholds()


async def test_consumer_reuses_an_apps_rfm_thresholds_within_their_ttl(
    sessions: async_sessionmaker[AsyncSession], app_keys: dict[str, str]
) -> None:
    app_id = app_keys["app_id"]
    now = datetime.now(UTC)
    top = f"seg_{secrets.token_hex(6)}"

    async def add_profiles(prefix: str, revenues: Sequence[float]) -> None:
        async with sessions() as session, session.begin():
            session.add_all(
                Profile(
                    app_id=app_id,
                    user_key=f"{prefix}{i}",
                    attributes={},
                    last_seen=now,
                    sessions=1,
                    purchases=1,
                    revenue=revenue,
                    events=1,
                    updated_at=now,
                )
                for i, revenue in enumerate(revenues)
            )
            if prefix == "low":
                session.add(
                    Segment(
                        id=top,
                        app_id=app_id,
                        name="top spenders",
                        rule={"rfm": {"m": [5, 5]}},
                        created_at=now,
                        updated_at=now,
                    )
                )

    def buy(device: str, event_id: str) -> Event:
        return event(app_id, event_id, "$purchase", now, revenue=100.0, currency="IRR").model_copy(
            update={"device_id": device}
        )

    def entered(producer: CollectingProducer) -> set[str]:
        return {c.user_key for c in producer.published if c.segment_id == top}

    await add_profiles("low", [float(i) for i in range(10)])  # monetary cuts 1.8 … 7.2
    producer = CollectingProducer()
    handler = ProfileUpdater(sessions, producer)  # type: ignore[arg-type]
    await handler(batch([buy("dev_a", "r1")]))
    assert entered(producer) == {"d:dev_a"}
    # The app's quintiles move far above 100; this consumer keeps its thresholds for
    # evaluation.RFM_TTL, a fresh one reads the new ones.
    await add_profiles("high", [1000.0] * 100)
    await handler(batch([buy("dev_b", "r2")]))
    assert entered(producer) == {"d:dev_a", "d:dev_b"}
    fresh = CollectingProducer()
    await ProfileUpdater(sessions, fresh)(batch([buy("dev_c", "r3")]))  # type: ignore[arg-type]
    assert entered(fresh) == set()
