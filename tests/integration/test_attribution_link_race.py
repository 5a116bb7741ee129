"""A login and an install of one device arrive on two topics, so the matcher handles them
in two batches at once (one per partition). The install's batch must see the login's
link once it holds the device: here the login's transaction is held open, having linked
the device, while the install's batch starts; the install must be the user's, never left
anonymous (issue 16 item 1: the link was read before the lock, so a login committed
while the install waited for it went unseen and nothing joined the install later)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.runtime.postgres import lock_all
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app
from libs.schemas import ClickRecorded, Event, InstallReported
from services.admin import store as admin_store
from services.attribution import identity, store
from services.attribution.consumer import Matcher

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 Mobile Safari/537.36"


@pytest_asyncio.fixture(loop_scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[Producer]:
    made = Producer(settings.kafka_bootstrap, client_id="hodhod-test-link-race")
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def record(topic: str, offset: int, value: ClickRecorded | InstallReported | Event) -> Record:
    return Record(topic, 0, offset, None, value, int((T.timestamp() + offset) * 1000))


def install(app_id: str, event_id: str, device: str, minutes: int, **fields: str) -> Record:
    at = T + timedelta(minutes=minutes)
    return record(
        "installs",
        minutes,
        InstallReported(
            app_id=app_id,
            event_id=event_id,
            device_id=device,
            ts=at,
            received_at=at,
            platform="android",
            ip="5.1.2.3",
            user_agent=UA,
            **fields,
        ),
    )


async def waiting_for(sessions: async_sessionmaker[AsyncSession], key: tuple[str, ...]) -> bool:
    """Whether a transaction waits for the advisory lock ``key`` (``postgres.lock``)."""
    async with sessions() as session:
        found = await session.scalar(
            text(
                "WITH k AS (SELECT hashtextextended(:key, 0) AS h) "
                "SELECT EXISTS (SELECT 1 FROM pg_locks, k WHERE locktype = 'advisory' "
                "AND NOT granted AND objsubid = 1 "
                "AND classid = ((k.h >> 32) & 4294967295)::oid "
                "AND objid = (k.h & 4294967295)::oid)"
            ),
            {"key": "\x1f".join(key)},
        )
    return bool(found)


async def test_an_install_waiting_for_its_device_sees_the_login_committed_meanwhile(
    settings: PlatformSettings, sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    keys = await provision_app(settings.database_url, name=f"race-{secrets.token_hex(3)}")
    app_id = keys.app_id
    async with sessions() as session, session.begin():
        tracker = await admin_store.create_tracker(
            session,
            app_id=app_id,
            values={"name": "paid", "channel": "google_play", "store_url": "https://e.com/a"},
        )
    matcher = Matcher(sessions, producer)
    click = ClickRecorded(
        app_id=app_id,
        click_id="c-1",
        tracker_token=tracker.token,
        ts=T - timedelta(hours=1),
        ip="5.9.9.9",
        user_agent=UA,
    )
    login = Event(
        app_id=app_id,
        event_id="login-a",
        name="$identify",
        device_id="a",
        user_id="u",
        ts=T + timedelta(minutes=2),
        received_at=T + timedelta(minutes=2),
    )
    await matcher(
        Batch(
            records=[
                record("clicks", 0, click),
                install(app_id, "i-a", "a", 1, adid="ad-a", referrer="click_id=c-1"),
                record("events", 2, login),
            ]
        )
    )

    # The second device's login is being handled: its batch holds the user and the
    # device and has linked the device, not committed yet …
    device = store.device_lock(app_id, "b")
    async with sessions() as login_batch, login_batch.begin():
        await lock_all(login_batch, [identity.user_lock(app_id, "u"), device])
        await store.link_device(
            login_batch, app_id=app_id, device_id="b", user_id="u", at=T + timedelta(minutes=3)
        )
        await login_batch.flush()
        # … when the device's install is handled: it waits for the device …
        handling = asyncio.create_task(
            matcher(Batch(records=[install(app_id, "i-b", "b", 4, adid="ad-b")]))
        )
        for _ in range(300):
            if await waiting_for(sessions, device) or handling.done():
                break
            await asyncio.sleep(0.02)
        assert not handling.done(), "the install did not wait for the device's lock"
        assert await waiting_for(sessions, device)
    # … and, once the login committed, is decided as the user's second device.
    await asyncio.wait_for(handling, 30)
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT user_key, kind, tracker_token FROM attribution_installs "
                    "WHERE app_id = :a AND install_event_id = 'i-b'"
                ),
                {"a": app_id},
            )
        ).one()
    assert tuple(row) == ("u", "new_device", tracker.token)
