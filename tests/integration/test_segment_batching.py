"""The segmenter's consumer folds a batch set-wise (every user's profile, counters,
recent events and memberships read and written together). A batch holding several
events of one user, a device's anonymous events, its login and its later events, a
duplicate and a late (out-of-order) event leaves exactly the state that the same
records handed over one per batch leave: profiles, aliases, daily counters, recent
events and memberships."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.runtime.tables import Segment
from libs.runtime.tenancy import provision_app
from libs.schemas import Event, SegmentChanged
from services.segmenter.consumer import ProfileUpdater

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
RULES: dict[str, dict[str, Any]] = {
    "buyers": {"event": "$purchase", "count": {"op": "gte", "value": 2}, "within": {"days": 7}},
    "sku_a": {"event": "view", "where": [{"prop": "sku", "op": "eq", "value": "A"}]},
    "tehran": {"attribute": "city", "op": "eq", "value": "Tehran"},
    "regulars": {"event": "$open", "count": {"op": "gte", "value": 3}, "within": {"days": 7}},
}


class Collect:
    def __init__(self) -> None:
        self.records: list[SegmentChanged] = []

    async def publish_all(self, records: Sequence[SegmentChanged]) -> None:
        self.records.extend(records)


def records(app_id: str) -> list[Event]:
    """One app's records: two devices and two users, in arrival order."""

    def ev(
        n: int, name: str, minutes: int, device: str | None, user: str | None, **kw: Any
    ) -> Event:
        ts = NOW - timedelta(minutes=minutes)
        return Event(
            app_id=app_id,
            event_id=f"e{n}",
            name=name,
            device_id=device,
            user_id=user,
            ts=ts,
            received_at=ts,
            **kw,
        )

    city = {"set": {"city": "Tehran"}}
    out = [
        ev(1, "$open", 60, "dev1", None),
        ev(2, "view", 59, "dev1", None, props={"sku": "A"}),
        ev(3, "$attributes", 58, "dev1", None, props=city),
        ev(4, "$open", 50, "dev2", None),
        ev(5, "$identify", 40, "dev1", "u1"),
        ev(6, "$purchase", 39, "dev1", None, revenue=5.0, currency="USD"),
        ev(7, "$purchase", 30, None, "u1", revenue=7.5, currency="USD"),
        ev(8, "$open", 29, "dev3", "u1"),
        ev(9, "$open", 20, None, "u2"),
        ev(10, "$attributes", 19, None, "u2", props={"set": {"city": "Shiraz"}}),
        ev(11, "$open", 18, None, "u2"),
        ev(12, "$open", 70, "dev1", None),  # late: before the login, arrives after it
        ev(13, "$attributes", 80, None, "u2", props=city),  # older than event 10
        ev(14, "view", 10, "dev2", None, props={"sku": "B"}),
    ]
    out.insert(7, out[6])  # a duplicate inside the batch
    return out


def batch(events: Sequence[Event]) -> Batch:
    return Batch([Record("events", 0, i, b"k", e, 0) for i, e in enumerate(events)])


IGNORED = ("app_id", "updated_at")


def comparable(column: str, value: Any) -> Any:
    """A segment id without its per-app suffix (``<rule name>.<token>``)."""
    return value.split(".")[0] if column == "segment_id" else value


async def state(sessions: async_sessionmaker[AsyncSession], app_id: str) -> dict[str, Any]:
    """Everything the segmenter stores of the app, without ids that name the app."""
    queries = {
        "profiles": "SELECT * FROM profiles WHERE app_id = :a",
        "aliases": "SELECT device_id, user_key FROM device_aliases WHERE app_id = :a",
        "counters": "SELECT user_key, name, day, count, revenue FROM segmenter_daily_counters"
        " WHERE app_id = :a",
        "recent": "SELECT event_id, user_key, name, ts, props FROM segmenter_recent_events"
        " WHERE app_id = :a",
        "memberships": "SELECT segment_id, user_key FROM segment_memberships WHERE app_id = :a",
    }
    found: dict[str, Any] = {}
    async with sessions() as session:
        for name, sql in queries.items():
            rows = (await session.execute(text(sql), {"a": app_id})).mappings().all()
            found[name] = sorted(
                sorted((k, repr(comparable(k, v))) for k, v in row.items() if k not in IGNORED)
                for row in rows
            )
    return found


async def test_a_batch_folds_as_its_records_one_by_one(
    sessions: async_sessionmaker[AsyncSession], settings: PlatformSettings
) -> None:
    apps = []
    for _ in range(2):
        app_id = (
            await provision_app(settings.database_url, name=f"batching-{secrets.token_hex(3)}")
        ).app_id
        async with sessions() as session, session.begin():
            session.add_all(
                Segment(
                    id=f"{sid}.{secrets.token_hex(4)}",
                    app_id=app_id,
                    name=sid,
                    rule=rule,
                    created_at=NOW,
                    updated_at=NOW,
                )
                for sid, rule in RULES.items()
            )
        apps.append(app_id)
    whole, single = apps
    published = Collect()
    await ProfileUpdater(sessions, published)(batch(records(whole)))  # type: ignore[arg-type]
    updater = ProfileUpdater(sessions, Collect())  # type: ignore[arg-type]
    for event in records(single):
        await updater(batch([event]))

    expected = await state(sessions, single)
    got = await state(sessions, whole)
    for name in expected:
        assert got[name] == expected[name], name
    # the state is not trivially empty: the login merged dev1 into u1, every user is in
    # some segment
    users = {dict(p)["user_key"] for p in got["profiles"]}
    assert users == {"'u1'", "'u2'", "'d:dev2'"}
    assert len(got["memberships"]) >= 3
    entered = {(c.user_key, c.segment_id.split(".")[0]) for c in published.records}
    assert ("u1", "buyers") in entered and ("u2", "tehran") not in entered
