"""The two periodic loops as timed work, against the real Postgres and broker: the
verification sweep and the segment scheduler, each run by two replicas on a ManualClock.

They run on a database of their own: both loops claim across apps (as a tenant list
would), so on the shared test database they would take other tests' rows — and the
platform's own runners, on the wall clock, would take theirs.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime import postgres
from libs.runtime.clock import ManualClock
from libs.runtime.kafka import Producer
from libs.runtime.settings import PlatformSettings
from libs.runtime.tables import Segment
from libs.runtime.tenancy import provision_app
from libs.runtime.timed import TimedRunner, TimedWork
from services.attribution import outcomes
from services.attribution import store as attribution_store
from services.attribution.sweep import VerificationSweep
from services.segmenter import store as segmenter_store
from services.segmenter.scheduler import SegmentScheduler

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
WINDOW = outcomes.VERIFICATION_WINDOW


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_db(settings: PlatformSettings) -> AsyncIterator[str]:
    base = settings.database_url.rsplit("/", 1)[0]
    url = f"{base}/hodhod_test_timed_{secrets.token_hex(4)}"
    await postgres.ensure_database(url)
    await postgres.migrate_async(url)
    yield url
    await postgres.drop_database(url)


@pytest_asyncio.fixture(loop_scope="session")
async def own_sessions(own_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = postgres.create_engine(own_db, pool_size=6)
    try:
        yield postgres.session_factory(engine)
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[Producer]:
    producer = Producer(settings.kafka_bootstrap, linger_ms=1, client_id="test-timed-loops")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def runners(
    works: list[TimedWork[Any]], sessions: async_sessionmaker[AsyncSession], clock: ManualClock
) -> list[TimedRunner[Any]]:
    return [TimedRunner(w, sessions=sessions, clock=clock) for w in works]


async def drain_together(replicas: list[TimedRunner[Any]]) -> None:
    """Run the replicas' rounds concurrently until a round of both handles nothing."""
    while sum(await asyncio.gather(*(r.run_once() for r in replicas))):
        pass


def install(app_id: str, n: int, install_ts: datetime) -> attribution_store.Install:
    return attribution_store.Install(
        app_id=app_id,
        install_event_id=f"install-{n}",
        device_id=f"dev-{n}",
        user_key=f"d:dev-{n}",
        install_ts=install_ts,
        ref_click_id=None,
        attribution_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app_id}/{n}")),
        method="organic",
        kind="new_user",
        status="pending",
        tracker_token=None,
        click_id=None,
        attributed_at=install_ts,
        adid=None,
        ip=None,
        install_begin_ts=None,
    )


async def statuses(sessions: async_sessionmaker[AsyncSession], app_id: str) -> dict[str, str]:
    async with sessions() as session:
        rows = await session.execute(
            select(
                attribution_store.Install.install_event_id, attribution_store.Install.status
            ).where(attribution_store.Install.app_id == app_id)
        )
        return {event_id: status for event_id, status in rows.all()}


async def test_the_sweep_expires_each_overdue_install_once_across_replicas(
    own_db: str, own_sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    app_id = (await provision_app(own_db, name=f"sweep-{secrets.token_hex(3)}")).app_id
    async with own_sessions() as session, session.begin():
        # 40 overdue at T0 (installed 7 days and 1..40 minutes before), one verified in
        # time (the sweep must look), one whose window ends exactly at T0 (still pending),
        # one a day younger.
        for n in range(40):
            session.add(install(app_id, n, T0 - WINDOW - timedelta(minutes=n + 1)))
        session.add(install(app_id, 100, T0 - WINDOW - timedelta(hours=1)))
        session.add(
            attribution_store.Verification(
                app_id=app_id, user_id="d:dev-100", device_id="dev-100", verified_at=T0 - WINDOW
            )
        )
        session.add(install(app_id, 200, T0 - WINDOW))
        session.add(install(app_id, 300, T0 - WINDOW + timedelta(days=1)))
    clock = ManualClock(T0)
    works = [VerificationSweep(producer), VerificationSweep(producer)]
    for work in works:
        work.batch_size = 7
    replicas = runners(list(works), own_sessions, clock)
    await drain_together(replicas)

    status = await statuses(own_sessions, app_id)
    assert [status[f"install-{n}"] for n in range(40)] == ["unverified"] * 40
    assert status["install-100"] == "verified"
    assert (status["install-200"], status["install-300"]) == ("pending", "pending")
    assert sum(r.handled for r in replicas) == 41  # each claimed install handled once
    assert all(r.handled > 0 for r in replicas)

    # The next due time is the end of install-200's window, exclusive: one microsecond on.
    async with own_sessions() as session:
        assert await works[0].next_due(session, after=T0) == T0 + timedelta(microseconds=1)
    clock.advance(timedelta(microseconds=1))
    assert await replicas[0].run_once() == 1
    assert (await statuses(own_sessions, app_id))["install-200"] == "unverified"
    clock.advance(timedelta(days=1))
    assert await replicas[1].run_once() == 1
    assert (await statuses(own_sessions, app_id))["install-300"] == "unverified"


async def test_the_sweep_skips_an_install_a_verification_holds(
    own_db: str, own_sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    """A pending install locked by a transaction applying its verification is not waited
    for: the sweep takes the others and comes back to it."""
    app_id = (await provision_app(own_db, name=f"held-{secrets.token_hex(3)}")).app_id
    async with own_sessions() as session, session.begin():
        for n in range(3):
            session.add(install(app_id, n, T0 - WINDOW - timedelta(minutes=n + 1)))
    runner = TimedRunner(VerificationSweep(producer), sessions=own_sessions, clock=ManualClock(T0))
    async with own_sessions() as holder, holder.begin():
        await attribution_store.pending_installs(
            holder, app_id=app_id, user_id="d:dev-1", device_id="dev-1"
        )
        assert await asyncio.wait_for(runner.run_once(), 10) == 2
    assert await statuses(own_sessions, app_id) == {
        "install-0": "unverified",
        "install-1": "pending",
        "install-2": "unverified",
    }
    assert await runner.run_once() == 1
    assert (await statuses(own_sessions, app_id))["install-1"] == "unverified"


async def add_segment(
    sessions: async_sessionmaker[AsyncSession], app_id: str, *, at: datetime
) -> str:
    segment_id = f"s{secrets.token_hex(6)}"
    async with sessions() as session, session.begin():
        session.add(
            Segment(
                id=segment_id,
                app_id=app_id,
                name="seen in the last hour",
                rule={"last_seen": {"op": "after", "ago": {"hours": 1}}},
                status="active",
                created_at=at,
                updated_at=at,
            )
        )
    return segment_id


async def schedules(
    sessions: async_sessionmaker[AsyncSession], app_ids: list[str]
) -> dict[str, tuple[datetime, datetime | None]]:
    async with sessions() as session:
        rows = await session.scalars(
            select(segmenter_store.Schedule).where(segmenter_store.Schedule.app_id.in_(app_ids))
        )
        return {s.app_id: (s.due_at, s.ticked_at) for s in rows}


async def test_scheduler_replicas_share_the_apps_and_tick_each_once_per_interval(
    own_db: str, own_sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    apps = [
        (await provision_app(own_db, name=f"sched-{i}-{secrets.token_hex(3)}")).app_id
        for i in range(8)
    ]
    segments = {
        app: await add_segment(own_sessions, app, at=T0 - timedelta(hours=1)) for app in apps
    }
    clock = ManualClock(T0)
    interval = timedelta(minutes=10)
    works = [
        SegmentScheduler(own_sessions, producer, interval_s=interval.total_seconds())
        for _ in range(2)
    ]
    replicas = runners(list(works), own_sessions, clock)
    await drain_together(replicas)

    # Enrolled at the first claim, due at once, ticked once each, due an interval later.
    assert await schedules(own_sessions, apps) == {app: (T0 + interval, T0) for app in apps}
    assert sum(r.handled for r in replicas) == len(apps)
    assert all(r.handled > 0 for r in replicas)
    async with own_sessions() as session:
        for app, segment in segments.items():
            synced = await segmenter_store.synced_rules(session, app_id=app)
            assert segment in synced  # the tick reconciled the new rule
    # Nothing is due before the interval has passed; then every app again, once.
    clock.advance(interval - timedelta(seconds=1))
    assert await replicas[0].run_once() == 0
    clock.advance(timedelta(seconds=1))
    await drain_together(replicas)
    later = T0 + interval
    assert await schedules(own_sessions, apps) == {app: (later + interval, later) for app in apps}
    assert sum(r.handled for r in replicas) == 2 * len(apps)


async def test_scheduler_enrols_an_apps_first_segment_within_an_interval(
    own_db: str, own_sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    clock = ManualClock(T0 + timedelta(days=1))
    work = SegmentScheduler(own_sessions, producer, interval_s=60)
    runner = TimedRunner(work, sessions=own_sessions, clock=clock)
    await runner.run_once()  # enrols what exists now
    app_id = (await provision_app(own_db, name=f"late-{secrets.token_hex(3)}")).app_id
    await add_segment(own_sessions, app_id, at=clock.now())
    while await runner.run_once():  # the apps already due
        pass
    assert await schedules(own_sessions, [app_id]) == {}  # not before the next enrolment
    clock.advance(timedelta(seconds=60))
    while await runner.run_once():
        pass
    assert await schedules(own_sessions, [app_id]) == {
        app_id: (clock.now() + timedelta(seconds=60), clock.now())
    }


async def test_tick_app_skips_an_app_another_replica_holds(
    own_db: str, own_sessions: async_sessionmaker[AsyncSession], producer: Producer
) -> None:
    app_id = (await provision_app(own_db, name=f"busy-{secrets.token_hex(3)}")).app_id
    await add_segment(own_sessions, app_id, at=T0)
    scheduler = SegmentScheduler(own_sessions, producer, interval_s=60)
    assert await scheduler.tick_app(app_id, T0) == 0  # enrolled and ticked (nobody to move)
    assert await schedules(own_sessions, [app_id]) == {app_id: (T0 + timedelta(seconds=60), T0)}
    later = T0 + timedelta(minutes=5)
    async with own_sessions() as holder, holder.begin():
        held = await segmenter_store.claim_schedule(holder, app_id=app_id, now=later)
        assert held is not None
        # Not waited for: another replica holds the app, so this call does nothing.
        assert await asyncio.wait_for(scheduler.tick_app(app_id, later), 10) == 0
    assert await schedules(own_sessions, [app_id]) == {app_id: (T0 + timedelta(seconds=60), T0)}
    await scheduler.tick_app(app_id, later)
    assert await schedules(own_sessions, [app_id]) == {
        app_id: (later + timedelta(seconds=60), later)
    }
