"""The journey engine against the real Postgres and broker: consumers and timed work
driven batch by batch with a clock the test moves.

Covered: an event-triggered run waits, is woken, sends, and converts on its goal; a
replayed batch sends nothing twice; a login moves a device's anonymous runs to the
user; erasure deletes runs and timers; pause holds timers, resume releases them and
archive ends runs; two claimers never take the same timer; caps skip sends; versions
keep running users on theirs; webhooks are called with retries and the SSRF guard; a
date trigger enters at 10:00 local time; a broadcast enters its segment's members.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.clock import ManualClock
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.runtime.tables import Journey, JourneyVersion, Membership, Profile, Segment
from libs.schemas import ConfigChanged, Contract, Event, SegmentChanged, SendJob
from services.journey import store
from services.journey.apply import Engine
from services.journey.consumer import ConfigHandler, TriggerHandler, sync_journey
from services.journey.events import EventHandler
from services.journey.wakeups import RunTimers, Schedules, Tasks
from tests.conftest import local_http_server

pytestmark = pytest.mark.integration

# In the future: the session's platform runs a journey service on the wall clock, which
# must not find these runs due (its own runs never are at this test's times either).
START = datetime(2031, 3, 1, 8, 0, tzinfo=UTC)


class RecordingProducer(Producer):
    """The real producer (records reach the test broker), remembering what it sent."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, client_id="hodhod-test-journey")
        self.sent: list[Contract] = []

    async def publish_all(self, messages: Sequence[Contract], encoded: Any = ()) -> None:
        self.sent.extend(messages)
        await super().publish_all(messages)

    def jobs(self) -> list[SendJob]:
        return [m for m in self.sent if isinstance(m, SendJob)]


@pytest_asyncio.fixture(loop_scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[RecordingProducer]:
    made = RecordingProducer(settings.kafka_bootstrap)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


class World:
    """One app's journey service, driven by hand."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], producer: RecordingProducer, app_id: str
    ) -> None:
        self.sessions = sessions
        self.producer = producer
        self.app_id = app_id
        self.clock = ManualClock(START)
        self.engine = Engine()
        self.events = EventHandler(sessions, producer, self.clock, self.engine)
        self.triggers = TriggerHandler(sessions, producer, self.clock, self.engine)
        self.config = ConfigHandler(sessions, self.clock)
        # Scoped to this app: the shared database holds other tests' runs, due at this
        # test's clock (its year) though not yet at the wall clock's.
        self.timers = RunTimers(self.engine, producer, app_id=app_id)
        self.offset = 0

    async def journey(
        self, trigger: dict[str, Any], definition: dict[str, Any], status: str = "active"
    ) -> str:
        journey_id = f"jrn_{secrets.token_hex(6)}"
        async with self.sessions() as session, session.begin():
            session.add(
                Journey(
                    id=journey_id,
                    app_id=self.app_id,
                    name="test",
                    trigger=trigger,
                    definition=definition,
                    status=status,
                    version=1,
                    kind="journey",
                    created_at=START,
                    updated_at=START,
                )
            )
            session.add(
                JourneyVersion(
                    app_id=self.app_id,
                    journey_id=journey_id,
                    version=1,
                    trigger=trigger,
                    definition=definition,
                    created_at=START,
                )
            )
            await sync_journey(session, self.app_id, journey_id, self.clock.now())
        return journey_id

    def record(self, topic: str, value: Contract) -> Record:
        self.offset += 1
        return Record(topic, 0, self.offset, None, value, 0)

    def event(self, name: str, **kw: Any) -> Event:
        now = self.clock.now()
        return Event(
            app_id=self.app_id,
            event_id=kw.pop("event_id", uuid.uuid4().hex),
            name=name,
            ts=kw.pop("ts", now),
            received_at=now,
            source="sdk",
            **kw,
        )

    async def send_events(self, *events: Event) -> None:
        await self.events(Batch([self.record("events", e) for e in events]))

    async def run(self, work: Any) -> int:
        """One round of a timed work: claim what is due now, handle it, commit."""
        async with self.sessions() as session, session.begin():
            items = await work.claim(session, now=self.clock.now(), limit=work.batch_size)
            if items:
                await work.handle(session, items, now=self.clock.now())
            return len(items)

    async def runs(self, journey_id: str) -> list[store.JourneyRun]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(store.JourneyRun).where(
                    store.JourneyRun.app_id == self.app_id,
                    store.JourneyRun.journey_id == journey_id,
                )
            )
            return list(rows)

    def jobs_of(self, journey_id: str) -> list[SendJob]:
        return [j for j in self.producer.jobs() if j.journey_id == journey_id]


@pytest_asyncio.fixture(loop_scope="session")
async def world(
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
    app_keys: dict[str, str],
) -> AsyncIterator[World]:
    made = World(sessions, producer, app_keys["app_id"])
    yield made
    # Timers are claimed across apps: leave none for the next test's clock.
    async with sessions() as session, session.begin():
        for table in ("journey_runs", "journey_tasks", "journey_schedules"):
            await session.execute(
                text(f"DELETE FROM {table} WHERE app_id = :a"),
                {"a": made.app_id},
            )


CART = {
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "wait", "duration": {"hours": 2}, "next": "push"},
        {
            "id": "push",
            "type": "send",
            "channel": "push",
            "content": {"body": "10% off on {{ sku }} if you buy within 24 hours"},
            "next": "bought",
        },
        {
            "id": "bought",
            "type": "wait_for_event",
            "event": "$purchase",
            "where": [{"prop": "cart_id", "op": "eq", "from_trigger": "cart_id"}],
            "timeout": {"hours": 24},
            "on_event": "done",
            "on_timeout": "again",
        },
        {"id": "again", "type": "send", "channel": "push", "content": {"body": "Last call"}},
        {"id": "done", "type": "exit"},
    ],
    "goal": {"event": "$purchase", "within": {"days": 3}},
}
CART_TRIGGER = {"type": "event", "event": "add_to_cart", "dedup_key": "cart_id"}


async def test_cart_run_waits_sends_and_converts(world: World) -> None:
    journey_id = await world.journey(CART_TRIGGER, CART)
    user = f"u-{uuid.uuid4().hex[:6]}"
    add = world.event("add_to_cart", user_id=user, props={"cart_id": "c1", "sku": "X1"})
    await world.send_events(add)
    await world.send_events(add)  # redelivered: one run
    (run,) = await world.runs(journey_id)
    assert (run.status, run.node, run.wake_at) == ("waiting", "wait", START + timedelta(hours=2))
    # The same cart added again (another event) starts nothing: the dedup key.
    await world.send_events(world.event("add_to_cart", user_id=user, props={"cart_id": "c1"}))
    assert len(await world.runs(journey_id)) == 1

    assert await world.run(world.timers) == 0  # nothing due yet
    world.clock.advance(timedelta(hours=2))
    assert await world.run(world.timers) == 1
    (job,) = world.jobs_of(journey_id)
    assert job.job_id == f"{run.run_id}:push:1"
    assert job.context["sku"] == "X1" and job.user_key == user
    assert await world.run(world.timers) == 0  # woken once

    # Another cart's purchase is not this wait's event, but it is the goal: converted.
    bought = world.event("$purchase", user_id=user, props={"cart_id": "c1"})
    await world.send_events(bought)
    (run,) = await world.runs(journey_id)
    assert (run.status, run.exit_reason, run.wake_at) == ("converted", "goal", None)
    await world.send_events(bought)
    assert len(world.jobs_of(journey_id)) == 1


async def test_a_replayed_batch_sends_nothing_twice(world: World) -> None:
    journey_id = await world.journey(
        {"type": "event", "event": "signup"},
        {
            "start": "hello",
            "nodes": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "push",
                    "content": {"body": "hi"},
                    "next": "w",
                },
                {
                    "id": "w",
                    "type": "wait_for_event",
                    "event": "profile_done",
                    "timeout": {"days": 1},
                    "on_event": "thanks",
                    "on_timeout": "nudge",
                },
                {"id": "thanks", "type": "send", "channel": "push", "content": {"body": "thanks"}},
                {"id": "nudge", "type": "send", "channel": "push", "content": {"body": "nudge"}},
            ],
        },
    )
    user = f"u-{uuid.uuid4().hex[:6]}"
    batch = [world.event("signup", user_id=user), world.event("profile_done", user_id=user)]
    await world.send_events(*batch)
    await world.send_events(*batch)
    steps = sorted(j.step_id or "" for j in world.jobs_of(journey_id))
    assert steps == ["hello", "thanks"]
    assert all(run.status == "completed" for run in await world.runs(journey_id))


async def test_a_login_moves_anonymous_runs_to_the_user(world: World) -> None:
    journey_id = await world.journey(CART_TRIGGER, CART)
    device, user = f"dev-{uuid.uuid4().hex[:6]}", f"u-{uuid.uuid4().hex[:6]}"
    await world.send_events(world.event("add_to_cart", device_id=device, props={"cart_id": "c7"}))
    (run,) = await world.runs(journey_id)
    assert run.user_key == f"d:{device}"
    await world.send_events(world.event("$identify", device_id=device, user_id=user))
    (run,) = await world.runs(journey_id)
    assert run.user_key == user
    # The device's later anonymous events are the user's: its purchase converts the run.
    await world.send_events(world.event("$purchase", device_id=device, props={"cart_id": "c7"}))
    (run,) = await world.runs(journey_id)
    assert run.status == "converted"


async def test_erasure_deletes_runs_and_timers(world: World) -> None:
    journey_id = await world.journey(CART_TRIGGER, CART)
    user = f"u-{uuid.uuid4().hex[:6]}"
    await world.send_events(world.event("add_to_cart", user_id=user, props={"cart_id": "e"}))
    assert len(await world.runs(journey_id)) == 1
    erase = ConfigChanged(
        app_id=world.app_id,
        change_id=uuid.uuid4().hex,
        entity="user",
        entity_id=user,
        action="deleted",
        ts=world.clock.now(),
    )
    await world.config(Batch([world.record("config-changes", erase)]))
    await world.config(Batch([world.record("config-changes", erase)]))
    assert await world.runs(journey_id) == []
    world.clock.advance(timedelta(hours=3))
    await world.run(world.timers)
    assert world.jobs_of(journey_id) == []


async def _set_status(world: World, journey_id: str, status: str) -> None:
    async with world.sessions() as session, session.begin():
        await session.execute(
            text("UPDATE journeys SET status = :s WHERE app_id = :a AND id = :j"),
            {"s": status, "a": world.app_id, "j": journey_id},
        )
    change = ConfigChanged(
        app_id=world.app_id,
        change_id=uuid.uuid4().hex,
        entity="journey",
        entity_id=journey_id,
        action="updated",
        ts=world.clock.now(),
    )
    await world.config(Batch([world.record("config-changes", change)]))


async def test_pause_holds_timers_resume_releases_archive_ends(world: World) -> None:
    journey_id = await world.journey(CART_TRIGGER, CART)
    users = [f"u-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for i, user in enumerate(users):
        await world.send_events(world.event("add_to_cart", user_id=user, props={"cart_id": str(i)}))
    await _set_status(world, journey_id, "paused")
    # No one enters a paused journey.
    await world.send_events(world.event("add_to_cart", user_id="late", props={"cart_id": "z"}))
    world.clock.advance(timedelta(hours=3))
    await world.run(world.timers)
    assert world.jobs_of(journey_id) == []
    assert all(r.held for r in await world.runs(journey_id))
    await _set_status(world, journey_id, "active")
    await world.run(world.timers)
    assert sorted(j.user_key for j in world.jobs_of(journey_id)) == sorted(users)
    await _set_status(world, journey_id, "archived")
    runs = await world.runs(journey_id)
    assert {(r.status, r.exit_reason, r.wake_at) for r in runs} == {("exited", "archived", None)}


async def test_two_claimers_never_take_the_same_timer(world: World) -> None:
    journey_id = await world.journey(
        {"type": "segment_entered", "segment": "seg_x"},
        {
            "start": "w",
            "nodes": [
                {"id": "w", "type": "wait", "duration": {"minutes": 5}, "next": "s"},
                {"id": "s", "type": "send", "channel": "push", "content": {"body": "x"}},
            ],
            "entry": {"reentry": "always", "max_concurrent": 10},
        },
    )
    changes = [
        SegmentChanged(
            app_id=world.app_id,
            change_id=uuid.uuid4().hex,
            user_key=f"u{i}",
            segment_id="seg_x",
            change="entered",
            ts=world.clock.now(),
        )
        for i in range(300)
    ]
    await world.triggers(Batch([world.record("segment-changes", c) for c in changes]))
    world.clock.advance(timedelta(minutes=5))
    a = RunTimers(world.engine, world.producer, app_id=world.app_id)
    b = RunTimers(world.engine, world.producer, app_id=world.app_id)
    a.batch_size = b.batch_size = 40
    while True:
        handled = await asyncio.gather(world.run(a), world.run(b))
        if sum(handled) == 0:
            break
    jobs = world.jobs_of(journey_id)
    assert len(jobs) == 300 and len({j.job_id for j in jobs}) == 300


async def test_caps_skip_sends_and_versions_keep_their_users(world: World) -> None:
    definition = {
        "start": "w",
        "nodes": [
            {"id": "w", "type": "wait", "duration": {"hours": 1}, "next": "s"},
            {"id": "s", "type": "send", "channel": "push", "content": {"body": "v1"}},
        ],
        "entry": {"reentry": "always", "max_concurrent": 5},
        "limits": {"daily_cap": 2},
    }
    journey_id = await world.journey({"type": "event", "event": "go"}, definition)
    for i in range(2):
        await world.send_events(world.event("go", user_id=f"old{i}"))
    # Version 2 sends other content and has no wait; runs of version 1 stay on it.
    v2 = {**definition, "start": "s"}
    v2["nodes"] = [{"id": "s", "type": "send", "channel": "push", "content": {"body": "v2"}}]
    async with world.sessions() as session, session.begin():
        session.add(
            JourneyVersion(
                app_id=world.app_id,
                journey_id=journey_id,
                version=2,
                trigger={"type": "event", "event": "go"},
                definition=v2,
                created_at=START,
            )
        )
        await session.execute(
            text("UPDATE journeys SET version = 2 WHERE app_id = :a AND id = :j"),
            {"a": world.app_id, "j": journey_id},
        )
    await world.send_events(world.event("go", user_id="new"))
    world.clock.advance(timedelta(hours=1))
    await world.run(world.timers)
    bodies = sorted(
        (j.user_key, j.content.body if j.content else "") for j in world.jobs_of(journey_id)
    )
    # The daily cap of 2: the new user's v2 send and one v1 send go out, one is capped.
    assert len(bodies) == 2 and ("new", "v2") in bodies
    async with world.sessions() as session:
        stats = await store.node_stats(session, app_id=world.app_id, journey_id=journey_id)
    assert sum(c for *_, c in stats) == 1
    versions = {(r.user_key, r.version) for r in await world.runs(journey_id)}
    assert versions == {("old0", 1), ("old1", 1), ("new", 2)}


async def test_webhooks_retry_and_the_guard_refuses_private_targets(world: World) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> JSONResponse:
        calls.append((request.headers["idempotency-key"], await request.json()))
        return JSONResponse({}, status_code=503 if len(calls) == 1 else 200)

    async with local_http_server(app) as base:
        journey_id = await world.journey(
            {"type": "event", "event": "ordered"},
            {
                "start": "h",
                "nodes": [{"id": "h", "type": "webhook", "url": f"{base}/hook", "body": {"k": 1}}],
            },
        )
        user = f"u-{uuid.uuid4().hex[:6]}"
        await world.send_events(world.event("ordered", user_id=user, props={"order": "o1"}))
        async with httpx.AsyncClient() as client:
            guarded = Tasks(world.producer, client, allow_private=False, app_id=world.app_id)
            allowed = Tasks(world.producer, client, allow_private=True, app_id=world.app_id)
            # The guard refuses loopback: the call is dropped, never made.
            await world.run(guarded)
            assert calls == []
            await world.send_events(
                world.event("ordered", user_id=user + "b", props={"order": "o2"})
            )
            await world.run(allowed)
            assert len(calls) == 1  # 503: retried later
            assert await world.run(allowed) == 0
            world.clock.advance(timedelta(seconds=5))
            await world.run(allowed)
    (first, body1), (second, body2) = calls
    assert body1 == body2
    assert first == second and first.endswith(":h:1")
    assert (
        body1["k"] == 1
        and body1["journey_id"] == journey_id
        and body1["trigger"] == {"order": "o2"}
    )
    async with world.sessions() as session:
        left = await session.scalar(
            select(store.JourneyTask).where(store.JourneyTask.app_id == world.app_id)
        )
    assert left is None


async def _profile(world: World, user_key: str, **values: Any) -> None:
    async with world.sessions() as session, session.begin():
        session.add(
            Profile(
                app_id=world.app_id,
                user_key=user_key,
                user_id=user_key,
                attributes=values.pop("attributes", {}),
                updated_at=START,
                **values,
            )
        )


async def test_a_birthday_enters_at_ten_local_time(world: World) -> None:
    # 08:00 UTC on 1 March is 11:30 in Tehran (past 10:00) and 09:00 in Berlin.
    await _profile(world, "tehran", attributes={"birthday": "1990-03-01"}, timezone="Asia/Tehran")
    await _profile(world, "berlin", attributes={"birthday": "1985-03-01"}, timezone="Europe/Berlin")
    await _profile(world, "other", attributes={"birthday": "1985-07-01"}, timezone="Europe/Berlin")
    journey_id = await world.journey(
        {"type": "date", "attribute": "birthday", "at": "10:00"},
        {
            "start": "s",
            "nodes": [{"id": "s", "type": "send", "channel": "push", "content": {"body": "🎂"}}],
        },
    )
    schedules = Schedules(world.engine, world.producer, app_id=world.app_id)
    await world.run(schedules)
    assert world.jobs_of(journey_id) == []  # Tehran's 10:00 passed before activation
    world.clock.advance(timedelta(minutes=59))
    await world.run(schedules)
    assert world.jobs_of(journey_id) == []
    world.clock.advance(timedelta(minutes=1))  # 09:00 UTC: 10:00 in Berlin
    await world.run(schedules)
    assert [j.user_key for j in world.jobs_of(journey_id)] == ["berlin"]
    world.clock.advance(timedelta(minutes=15))
    await world.run(schedules)
    assert len(world.jobs_of(journey_id)) == 1


async def test_a_broadcast_enters_members_at_their_local_time(world: World) -> None:
    segment = f"seg_{secrets.token_hex(4)}"
    async with world.sessions() as session, session.begin():
        session.add(
            Segment(
                id=segment,
                app_id=world.app_id,
                name="all",
                rule={"reachable": "push"},
                status="active",
                created_at=START,
                updated_at=START,
            )
        )
        for user in ("a", "b", "c"):
            session.add(
                Membership(app_id=world.app_id, segment_id=segment, user_key=user, entered_at=START)
            )
    await _profile(world, "a", timezone="Asia/Tehran")
    await _profile(world, "b", timezone="Europe/Berlin")
    journey_id = await world.journey(
        {
            "type": "schedule",
            "segment": segment,
            "at": (START + timedelta(minutes=30)).isoformat(),
            "local_time": "10:00",
        },
        {
            "start": "s",
            "nodes": [{"id": "s", "type": "send", "channel": "push", "content": {"body": "sale"}}],
        },
    )
    schedules = Schedules(world.engine, world.producer, page=2, app_id=world.app_id)
    assert await world.run(schedules) == 0  # due at 08:30
    world.clock.advance(timedelta(minutes=30))
    while await world.run(schedules):
        pass
    assert len(await world.runs(journey_id)) == 3
    await world.run(world.timers)
    # 08:30 UTC: 12:00 in Tehran → tomorrow's 10:00; Berlin 09:30 → 10:00 today (09:00 UTC).
    assert world.jobs_of(journey_id) == []
    world.clock.set(datetime(2031, 3, 1, 9, 0, tzinfo=UTC))
    await world.run(world.timers)
    assert [j.user_key for j in world.jobs_of(journey_id)] == ["b"]
    assert world.jobs_of(journey_id)[0].broadcast_id == journey_id
    world.clock.set(datetime(2031, 3, 2, 6, 30, tzinfo=UTC))  # 10:00 in Tehran (and "c")
    await world.run(world.timers)
    assert sorted(j.user_key for j in world.jobs_of(journey_id)) == ["a", "b", "c"]
