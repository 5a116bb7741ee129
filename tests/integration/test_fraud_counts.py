"""The counts the fraud rules judge by, from the real clicks index and install ledger:
click spamming (clicks per tracker per IP or advertising id in the hour before the click)
and device farms (installs per IP in the hour before the install)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.attribution import prefetch, store
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
        installs = [
            install_row(app, T - timedelta(minutes=minutes), "5.1.1.1")
            for minutes in (0, 10, 59, 60, 61)
        ]
        await store.save_installs(session, rows=[*installs, install_row(other_app, T, "5.1.1.1")])
    async with sessions() as session:
        keys = [
            (app, "tok", "5.1.1.1", None, T),
            (app, "tok", None, "ad-1", T),
            (app, "tok", "5.1.1.1", "ad-1", T),
            (app, "tok", None, None, T),
        ]
        counts = await prefetch.clicks_per_hour(session, keys=keys)
        assert [counts[k] for k in keys] == [3, 3, 3, 0]
        # The batch's own installs, recorded or not, are left out: it counts them itself.
        ips = [(app, "5.1.1.1", T), (app, "5.2.2.2", T)]
        unrecorded = [(app, uuid.uuid4().hex)]
        assert await prefetch.installs_per_ip(session, keys=ips, excluding=unrecorded) == {
            ips[0]: 3,
            ips[1]: 0,
        }
        recorded = [(app, installs[1]["install_event_id"]), (other_app, "x")]
        assert await prefetch.installs_per_ip(session, keys=ips, excluding=recorded) == {
            ips[0]: 2,
            ips[1]: 0,
        }
