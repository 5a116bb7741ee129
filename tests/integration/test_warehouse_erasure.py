"""The warehouse writer erases a user's raw rows from chDB when a batch carries the
erasure: exactly the user's, in every table (a shared phone's later owner and other
users keep theirs), the segment exits the erasure caused are never stored, and a
replayed erasure changes nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.runtime.clickhouse import AsyncClickHouse, get_client
from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.schemas import (
    ClickRecorded,
    Contract,
    DeliveryReceipt,
    Event,
    InstallReported,
    SegmentChanged,
    UserAttributed,
    UserVerified,
)
from services.admin.users import erasure
from services.ingest.warehouse import WarehouseWriter

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 1, 12, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T + timedelta(hours=hours)


def batch(values: Sequence[Contract]) -> Batch:
    topics = {
        Event: "events",
        InstallReported: "installs",
        UserVerified: "verifications",
        UserAttributed: "attributions",
        ClickRecorded: "clicks",
        SegmentChanged: "segment-changes",
        DeliveryReceipt: "deliveries",
    }
    return Batch(
        [
            Record(topics.get(type(v), "config-changes"), 0, i, b"k", v, 0)
            for i, v in enumerate(values)
        ]
    )


def history(app: str) -> list[Contract]:
    """User K on phone P1 (anonymous, then K, then handed to U2) and on P2; U3 elsewhere."""

    def event(eid: str, device: str | None, user: str | None, hours: float) -> Event:
        return Event(
            app_id=app,
            event_id=eid,
            name="x",
            device_id=device,
            user_id=user,
            ts=at(hours),
            received_at=at(hours),
        )

    def attributed(aid: str, key: str, device: str, click: str, hours: float) -> UserAttributed:
        return UserAttributed(
            app_id=app,
            attribution_id=aid,
            user_key=key,
            device_id=device,
            install_event_id=f"i-{aid}",
            install_ts=at(hours),
            attributed_at=at(hours),
            method="click_id",
            kind="new_user",
            status="attributed",
            tracker_token="tok",
            click_id=click,
        )

    def change(cid: str, key: str, cause: str | None = None, kind: str = "entered") -> Any:
        return SegmentChanged(
            app_id=app,
            change_id=cid,
            user_key=key,
            segment_id="s",
            change=kind,
            ts=at(0),
            cause_event_id=cause,
        )

    return [
        event("k-anon", "P1", None, 0),
        event("k-login", "P1", "K", 1),
        event("k-after", "P1", None, 2),
        event("u2-login", "P1", "U2", 3),
        event("u2-after", "P1", None, 4),
        event("k-p2", "P2", "K", 1),
        event("k-p2-later", "P2", None, 9),
        event("k-backend", None, "K", 1),
        event("u3", "P3", "U3", 1),
        event("u3-anon", "P3", None, 2),
        InstallReported(
            app_id=app, event_id="inst-p1", device_id="P1", ts=at(0), received_at=at(0)
        ),
        InstallReported(
            app_id=app, event_id="inst-p1-u2", device_id="P1", ts=at(5), received_at=at(5)
        ),
        InstallReported(
            app_id=app, event_id="inst-p3", device_id="P3", ts=at(0), received_at=at(0)
        ),
        UserVerified(app_id=app, verification_id="v-k", user_id="K", ts=at(1)),
        UserVerified(app_id=app, verification_id="v-u3", user_id="U3", ts=at(1)),
        attributed("a-p1", "d:P1", "P1", "c-k", 0),
        attributed("a-p2", "K", "P2", "c-k2", 1),
        attributed("a-p1-u2", "d:P1", "P1", "c-u2", 5),
        attributed("a-p3", "d:P3", "P3", "c-u3", 0),
        *(
            ClickRecorded(app_id=app, click_id=c, tracker_token="tok", ts=at(-1))
            for c in ("c-k", "c-k2", "c-u2", "c-u3")
        ),
        change("sc-k", "K"),
        change("sc-anon", "d:P1"),
        change("sc-u2", "U2"),
        DeliveryReceipt(
            app_id=app,
            receipt_id="r-k",
            job_id="j-k",
            user_key="K",
            channel="push",
            status="sent",
            provider="log",
            ts=at(1),
        ),
    ]


async def ids(ch: AsyncClickHouse, app: str) -> dict[str, list[str]]:
    out = {}
    for table, column in (
        ("events", "event_id"),
        ("installs", "event_id"),
        ("verifications", "verification_id"),
        ("attributions", "attribution_id"),
        ("clicks", "click_id"),
        ("segment_changes", "change_id"),
        ("deliveries", "receipt_id"),
    ):
        rows = await ch.query_rows(
            f"SELECT {column} AS id FROM hodhod.{table} FINAL WHERE app_id = {{a:String}} "
            "ORDER BY id",
            {"a": app},
        )
        out[table] = [r["id"] for r in rows]
    return out


async def test_an_erasure_takes_exactly_the_users_rows(settings: PlatformSettings) -> None:
    app = f"app_er_{uuid.uuid4().hex[:8]}"
    ch = AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")
    writer = WarehouseWriter(ch)
    await writer(batch(history(app)))
    request = erasure(app_id=app, user_key="K", erasure_id=f"er_{uuid.uuid4().hex}", now=T)
    exit_ = SegmentChanged(
        app_id=app,
        change_id="sc-k-exit",
        user_key="K",
        segment_id="s",
        change="exited",
        ts=T,
        cause_event_id=request.change_id,
    )
    # A later event of K in the erasure's batch goes too; the exit it caused is not stored.
    late = Event(app_id=app, event_id="k-late", name="x", user_id="K", ts=at(10), received_at=T)
    await writer(batch([late, exit_, request]))
    kept = {
        # P2 was never handed over: its anonymous rows were K's, later ones included.
        "events": ["u2-after", "u2-login", "u3", "u3-anon"],
        "installs": ["inst-p1-u2", "inst-p3"],
        "verifications": ["v-u3"],
        "attributions": ["a-p1-u2", "a-p3"],
        "clicks": ["c-u2", "c-u3"],
        "segment_changes": ["sc-u2"],
        "deliveries": [],
    }
    assert await ids(ch, app) == kept
    # The exit arriving after the erasure is not stored either; a replay changes nothing.
    await writer(batch([exit_]))
    await writer(batch([request]))
    assert await ids(ch, app) == kept


async def test_an_anonymous_device_is_erased_by_its_key(settings: PlatformSettings) -> None:
    app = f"app_er_{uuid.uuid4().hex[:8]}"
    ch = AsyncClickHouse(get_client(settings.clickhouse_url), "hodhod")
    writer = WarehouseWriter(ch)
    await writer(batch(history(app)))
    await writer(batch([erasure(app_id=app, user_key="d:P3", erasure_id="er_p3", now=T)]))
    left = await ids(ch, app)
    assert "u3-anon" not in left["events"] and "u3" in left["events"]
    assert "inst-p3" not in left["installs"] and "a-p3" not in left["attributions"]
    assert "c-u3" not in left["clicks"]
    assert "k-anon" in left["events"]
