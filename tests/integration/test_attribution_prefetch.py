"""The set-wise reads send their keys as text-array literals: any key text — quotes,
backslashes, braces, commas, blanks, the word NULL, non-ASCII — finds its row, and a
missing value (None) finds none."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from libs.runtime.errors import is_transient
from services.attribution import prefetch, store
from tests.conftest import Platform

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ODD = [
    "plain-id",
    'quo"te',
    "back\\slash",
    "{brace}",
    "com,ma",
    " padded ",
    "",
    "NULL",
    "null",
    "ایران",
    '\\"',
]


@pytest.mark.parametrize("with_odd_text", [False, True])
async def test_odd_key_text_finds_its_rows(platform: Platform, with_odd_text: bool) -> None:
    app = f"app-{uuid.uuid4().hex[:6]}"
    ids = [*ODD] if with_odd_text else ["plain-id", "other-plain"]
    rows = [
        {
            "app_id": app,
            "click_id": click_id,
            "tracker_token": "tok",
            "ts": T - timedelta(minutes=n),
            "ip": "5.1.1.1",
            "adid": f"ad-{click_id}",
            "is_bot": False,
            "expires_at": T + timedelta(days=7),
            "user_agent": None,
            "fingerprint": None,
            "kind": "click",
        }
        for n, click_id in enumerate(ids)
    ]
    sessions = platform.app.state.resources.sessions
    async with sessions() as session, session.begin():
        await store.record_clicks(session, rows=rows)
    async with sessions() as session:
        keys = [(app, click_id) for click_id in [*ids, "absent"]]
        found = await prefetch.clicks(session, keys=keys)
        assert {k: t.click.click_id for k, t in found.items()} == {(app, c): c for c in ids}
        searches = [(app, f"ad-{c}", None, T) for c in ids] + [(app, None, None, T)]
        recent = await prefetch.recent_clicks(
            session, searches=searches, lookback=timedelta(days=1)
        )
        assert {s: [t.click.click_id for t in ts] for s, ts in recent.items()} == {
            (app, f"ad-{c}", None, T): [c] for c in ids
        }


async def test_a_lost_connection_is_retried(platform: Platform) -> None:
    """A read whose connection the server ended (a restart, an operator) fails with an
    error the runner retries, as through SQLAlchemy."""
    sessions = platform.app.state.resources.sessions
    async with sessions() as session:
        await prefetch.linked_users(session, devices=[("app", "dev")])
        connection = await session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        pid = driver.get_server_pid()
        async with sessions() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(500):  # until the client has seen the server hang up
            if driver.is_closed():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Exception) as failed:
            await prefetch.linked_users(session, devices=[("app", "dev")])
        assert is_transient(failed.value)
        await connection.invalidate()  # what the runner's retry leaves to the pool's ping
