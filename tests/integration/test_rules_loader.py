"""``libs.rules.loader`` reads one user's ``ProfileView`` as the segmenter stored it (the
same view the segmenter's batched path reads), scoped by app, read-only; and a rule
answered on it agrees with the membership the segmenter decided."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules import loader
from libs.rules.evaluation import evaluate
from libs.rules.language import parse_rule, reads_counters, reads_recent
from libs.rules.profile import DailyCount, ProfileView
from libs.runtime.pipeline import Batch, Record
from libs.runtime.tables import Segment
from libs.schemas import Event
from services.segmenter import store
from services.segmenter.consumer import ProfileUpdater

pytestmark = pytest.mark.integration

BUYERS = {
    "all": [
        {
            "event": "$purchase",
            "where": [{"prop": "sku", "op": "eq", "value": "A"}],
            "within": {"days": 7},
        },
        {"event": "$open", "count": {"op": "gte", "value": 2}, "within": {"days": 30}},
    ]
}


class CollectingProducer:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish_all(self, records: Sequence[Any]) -> None:
        self.published.extend(records)


def event(app_id: str, event_id: str, name: str, ts: datetime, **kw: Any) -> Event:
    return Event(
        app_id=app_id, event_id=event_id, name=name, device_id="dev_1", ts=ts, received_at=ts, **kw
    )


async def fold(sessions: async_sessionmaker[AsyncSession], events: Sequence[Event]) -> None:
    handler = ProfileUpdater(sessions, CollectingProducer())  # type: ignore[arg-type]
    await handler(
        Batch(
            [
                Record("events", 0, i, b"k", e, int(e.ts.timestamp() * 1000))
                for i, e in enumerate(events)
            ]
        )
    )


async def add_segment(
    sessions: async_sessionmaker[AsyncSession], app_id: str, segment_id: str, rule: Any
) -> None:
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(
            Segment(
                id=segment_id,
                app_id=app_id,
                name=segment_id,
                rule=rule,
                status="active",
                created_at=now,
                updated_at=now,
            )
        )


async def test_load_view_reads_what_the_segmenter_stored(
    sessions: async_sessionmaker[AsyncSession], app_keys: dict[str, str]
) -> None:
    app_id = app_keys["app_id"]
    other_app = f"rload_{secrets.token_hex(4)}"
    await add_segment(sessions, app_id, "buyers", BUYERS)
    now = datetime.now(UTC)
    events = [
        event(app_id, "o1", "$open", now - timedelta(days=2)),
        event(app_id, "o2", "$open", now - timedelta(hours=1)),
        event(
            app_id,
            "p1",
            "$purchase",
            now - timedelta(minutes=5),
            revenue=12.5,
            currency="IRR",
            props={"sku": "A", "qty": 2},
        ),
        event(app_id, "a1", "$attributes", now, props={"set": {"city": "Tehran"}}),
    ]
    await fold(sessions, events)
    # The same user key in another app: never part of this app's view.
    await fold(sessions, [event(other_app, "x1", "$open", now)])

    async with sessions() as session:
        view = await loader.load_view(session, app_id=app_id, user_key="d:dev_1")
        assert view is not None
        locked = await store.load_profiles(session, app_id=app_id, user_keys=["d:dev_1"])
        segments, batched = await store.views_of(
            session, app_id=app_id, states=locked, counters=True, recent=True
        )
    # The batched path and the loader are two readers of the same rows.
    assert view.state == locked["d:dev_1"]
    assert view.segments == segments["d:dev_1"] == {"buyers"}
    assert sorted(view.counters, key=repr) == sorted(batched["d:dev_1"].counters, key=repr)
    assert sorted(view.recent, key=repr) == sorted(batched["d:dev_1"].recent, key=repr)
    assert view.state.attributes == {"city": "Tehran"}
    assert sum(c.count for c in view.counters if c.name == "$open") == 2
    assert DailyCount("$purchase", (now - timedelta(minutes=5)).date(), 1, 12.5) in view.counters
    purchase = next(e for e in view.recent if e.name == "$purchase")
    assert purchase.props == {"sku": "A", "qty": 2}
    assert purchase.ts == events[2].ts

    # The segmenter's decision and a caller's own evaluation on the loaded view agree.
    rule = parse_rule(BUYERS)
    assert evaluate(rule, view, datetime.now(UTC))
    assert not evaluate(parse_rule({"segment": "nobody"}), view, datetime.now(UTC))
    assert evaluate(parse_rule({"segment": "buyers"}), view, datetime.now(UTC))


async def test_load_view_reads_only_what_is_asked_and_nothing_for_a_stranger(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app_id = f"rload_{secrets.token_hex(4)}"
    now = datetime.now(UTC)
    await fold(sessions, [event(app_id, "o1", "$open", now - timedelta(minutes=1))])
    async with sessions() as session:
        assert await loader.load_view(session, app_id=app_id, user_key="d:nobody") is None
        assert await loader.load_view(session, app_id="no_such_app", user_key="d:dev_1") is None
        bare = await loader.load_view(
            session, app_id=app_id, user_key="d:dev_1", counters=False, recent=False
        )
        full = await loader.load_view(session, app_id=app_id, user_key="d:dev_1")
        # Read-only: the loader leaves no write pending in the caller's transaction.
        assert not session.dirty and not session.new
    assert isinstance(bare, ProfileView) and isinstance(full, ProfileView)
    assert bare.counters == () and bare.recent == ()
    assert bare.state == full.state
    assert [c.name for c in full.counters] == ["$open"]
    assert [e.name for e in full.recent] == ["$open"]
    # What a rule needs decides what to read.
    by_day = parse_rule({"event": "$open", "within": {"days": 1}})
    by_hour = parse_rule({"event": "$open", "within": {"hours": 1}})
    assert (reads_counters(by_day), reads_recent(by_day)) == (True, False)
    assert (reads_counters(by_hour), reads_recent(by_hour)) == (False, True)
    assert evaluate(by_hour, full, now) and not evaluate(by_hour, bare, now)


async def test_view_of_takes_memberships_given_by_the_caller(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app_id = f"rload_{secrets.token_hex(4)}"
    await fold(sessions, [event(app_id, "o1", "$open", datetime.now(UTC))])
    async with sessions() as session:
        state = await loader.load_state(session, app_id=app_id, user_key="d:dev_1")
        assert state is not None
        given = await loader.view_of(
            session,
            app_id=app_id,
            user_key="d:dev_1",
            state=state,
            counters=False,
            recent=False,
            segments={"s_given"},
        )
    assert given.segments == {"s_given"} and given.state is state
