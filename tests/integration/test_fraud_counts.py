"""The counts the fraud rules judge by, from the real clicks index and install ledger:
click spamming (clicks per tracker per IP or advertising id in the hour before the click)
and device farms (installs per IP in the hour before the install)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.attribution import store
from tests.conftest import Platform

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def click_row(
    app: str, tracker: str, ts: datetime, *, ip: str, adid: str | None = None, kind: str = "click"
) -> dict[str, Any]:
    return {
        "app_id": app,
        "click_id": uuid.uuid4().hex,
        "tracker_token": tracker,
        "ts": ts,
        "ip": ip,
        "adid": adid,
        "is_bot": False,
        "expires_at": ts + timedelta(days=7),
        "user_agent": None,
        "fingerprint": None,
        "kind": kind,
    }


def install_row(app: str, ts: datetime, ip: str) -> dict[str, Any]:
    event = uuid.uuid4().hex
    return {
        "app_id": app,
        "install_event_id": event,
        "device_id": event,
        "user_key": f"d:{event}",
        "install_ts": ts,
        "ref_click_id": None,
        "attribution_id": event,
        "method": "organic",
        "kind": "organic",
        "status": "attributed",
        "tracker_token": None,
        "click_id": None,
        "attributed_at": ts,
        "adid": None,
        "ip": ip,
        "install_begin_ts": None,
        "fraud_reasons": [],
    }


async def test_click_and_install_counts(platform: Platform) -> None:
    app, other_app = f"app-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:6]}"
    rows = [
        # in the hour up to T: 3 from the IP (one with the adid), 2 more with the adid
        *(click_row(app, "tok", T - timedelta(minutes=m), ip="5.1.1.1") for m in (0, 30)),
        click_row(app, "tok", T - timedelta(minutes=59), ip="5.1.1.1", adid="ad-1"),
        *(
            click_row(app, "tok", T - timedelta(minutes=m), ip="5.9.9.9", adid="ad-1")
            for m in (1, 2)
        ),
        # not counted: exactly an hour before, after T, another tracker, an impression,
        # another app
        click_row(app, "tok", T - timedelta(hours=1), ip="5.1.1.1"),
        click_row(app, "tok", T + timedelta(seconds=1), ip="5.1.1.1"),
        click_row(app, "other", T, ip="5.1.1.1"),
        click_row(app, "tok", T, ip="5.1.1.1", kind="impression"),
        click_row(other_app, "tok", T, ip="5.1.1.1"),
    ]
    sessions = platform.app.state.resources.sessions
    async with sessions() as session, session.begin():
        await store.record_clicks(session, rows=rows)
        for minutes in (0, 10, 59, 60, 61):
            await store.save_install(
                session, values=install_row(app, T - timedelta(minutes=minutes), "5.1.1.1")
            )
        await store.save_install(session, values=install_row(other_app, T, "5.1.1.1"))
    async with sessions() as session:
        count = store.clicks_in_hour
        assert (
            await count(session, app_id=app, tracker_token="tok", ip="5.1.1.1", adid=None, until=T)
            == 3
        )
        assert (
            await count(session, app_id=app, tracker_token="tok", ip=None, adid="ad-1", until=T)
            == 3
        )
        assert (
            await count(
                session, app_id=app, tracker_token="tok", ip="5.1.1.1", adid="ad-1", until=T
            )
            == 3
        )
        assert (
            await count(session, app_id=app, tracker_token="tok", ip=None, adid=None, until=T) == 0
        )
        # the install judged counts once, recorded or not
        judged = uuid.uuid4().hex
        assert (
            await store.installs_from_ip(
                session, app_id=app, ip="5.1.1.1", install_event_id=judged, until=T
            )
            == 4
        )
        assert (
            await store.installs_from_ip(
                session, app_id=app, ip="5.2.2.2", install_event_id=judged, until=T
            )
            == 1
        )
