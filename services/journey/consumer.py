"""The journey service's consumers: ``journey.triggers`` (segment-changes),
``journey.events`` (events: ``services.journey.events``) and ``journey.config``
(config-changes: erasures, pause / resume / archive, schedules).

Each handles a batch in one transaction: read, decide (``logic``/``triggers``), write,
publish, then commit (``libs.runtime.pipeline``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.journeys.definition import DateTrigger, ScheduleTrigger
from libs.journeys.validate import schedule_times
from libs.runtime.clock import Clock
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import ConfigChanged, SegmentChanged
from libs.schemas.config_changes import is_user_erasure
from services.journey import logic, store
from services.journey.apply import Engine, Move
from services.journey.logic import Enter, History
from services.journey.metrics import ENTRIES_REFUSED, RUNS, RUNS_CARRIED, RUNS_ERASED
from services.journey.triggers import Active, Entry, segment_entries

log = logging.getLogger(__name__)

TOPICS = ("segment-changes",)
CONFIG_TOPICS = ("config-changes",)


async def active_journeys(session: AsyncSession, engine: Engine, app_id: str) -> list[Active]:
    """The app's active journeys at their current versions (unparseable ones skipped)."""
    rows = await store.active_journeys(session, app_id=app_id)
    parsed = await engine.journeys(session, [(app_id, r.id, r.version) for r in rows])
    return [
        Active(r.id, r.version, j, r.kind)
        for r in rows
        if (j := parsed.get((app_id, r.id, r.version))) is not None
    ]


async def enter(
    session: AsyncSession,
    app_id: str,
    entries: Sequence[tuple[str, Entry]],
    now: datetime,
) -> list[Move | None]:
    """A move for each ``(user, entry)`` pair the entry rules admit (None where they
    refuse), in order: a second entry of the same user into the same journey in one
    batch sees the first."""
    if not entries:
        return []
    pairs = [(e.journey.id, user) for user, e in entries]
    await store.lock_entries(session, app_id=app_id, pairs=pairs)
    history = await store.histories(
        session,
        app_id=app_id,
        journey_ids=[j for j, _ in pairs],
        user_keys=[u for _, u in pairs],
    )
    moves: list[Move | None] = []
    for user, entry in entries:
        key = (entry.journey.id, user)
        known = history.get(key, History())
        refused = logic.may_enter(entry.journey.journey.definition, known, now)
        if refused is not None:
            ENTRIES_REFUSED.labels(refused).inc()
            moves.append(None)
            continue
        run = logic.new_run(
            app_id=app_id,
            journey_id=entry.journey.id,
            version=entry.journey.version,
            user_key=user,
            cause=entry.cause,
            now=now,
            trigger=entry.trigger,
        )
        history[key] = History(active=known.active + 1, last_entered_at=now)
        moves.append(Move(run, [Enter()], new=True, cause=entry.cause))
    return moves


class TriggerHandler:
    """segment-changes → entries of segment-triggered journeys."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        clock: Clock,
        engine: Engine,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._clock = clock
        self._engine = engine

    async def __call__(self, batch: Batch) -> None:
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            by_app: dict[str, list[SegmentChanged]] = {}
            for record in batch.records:
                change = record.value
                assert isinstance(change, SegmentChanged)
                by_app.setdefault(change.app_id, []).append(change)
            moves: list[Move] = []
            for app_id, changes in sorted(by_app.items()):
                journeys = await active_journeys(session, self._engine, app_id)
                entries: list[tuple[str, Entry]] = []
                for change in changes:
                    found = segment_entries(journeys, change)
                    if found and change.merged_from is not None:
                        # A login merged the device's anonymous profile, already a member:
                        # what it went through (a welcome) does not start again.
                        done = await store.journeys_run_for(
                            session, app_id=app_id, user_key=change.merged_from
                        )
                        RUNS_CARRIED.inc(sum(1 for e in found if e.journey.id in done))
                        found = [e for e in found if e.journey.id not in done]
                    entries.extend((change.user_key, e) for e in found)
                moves.extend(m for m in await enter(session, app_id, entries, now) if m)
            out = await self._engine.move(session, moves, now)
            RUNS.inc(sum(1 for m in moves if m.new))
            await self._producer.publish_all(out.records())


class ConfigHandler:
    """config-changes → erasures reach runs and timers; a journey's status change holds,
    releases or ends its runs and (re)plans its schedule."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def __call__(self, batch: Batch) -> None:
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            for record in batch.records:
                change = record.value
                assert isinstance(change, ConfigChanged)
                if is_user_erasure(change):
                    RUNS_ERASED.inc(
                        await store.erase_user(
                            session, app_id=change.app_id, user_key=change.entity_id
                        )
                    )
                elif change.entity in ("journey", "broadcast"):
                    await sync_journey(session, change.app_id, change.entity_id, now)


async def sync_journey(session: AsyncSession, app_id: str, journey_id: str, now: datetime) -> None:
    """Make the runs and the schedule of a journey agree with its status. Idempotent:
    it reads the journey's current row rather than trusting the change record."""
    row = await store.journey_row(session, app_id=app_id, journey_id=journey_id)
    if row is None:
        return
    if row.status in ("archived", "cancelled"):
        await store.end_runs(
            session, app_id=app_id, journey_id=journey_id, reason=row.status, now=now
        )
        await store.stop_schedule(session, app_id=app_id, journey_id=journey_id)
        return
    await store.hold_runs(
        session, app_id=app_id, journey_id=journey_id, held=row.status == "paused"
    )
    if row.status != "active":
        await store.stop_schedule(session, app_id=app_id, journey_id=journey_id)
        return
    trigger = row.trigger.get("type") if isinstance(row.trigger, dict) else None
    if trigger == "schedule":
        parsed = ScheduleTrigger.model_validate(row.trigger)
        start, _ = schedule_times(parsed)
        existing = await store.schedule_of(session, app_id=app_id, journey_id=journey_id)
        if existing is None or (existing.firings == 0 and existing.firing_at is None):
            await store.upsert_schedule(
                session,
                app_id=app_id,
                journey_id=journey_id,
                kind="broadcast",
                due_at=start,
                covered_until=None,
            )
        elif existing.due_at is None:
            await store.upsert_schedule(
                session,
                app_id=app_id,
                journey_id=journey_id,
                kind="broadcast",
                due_at=now,
                covered_until=None,
            )
    elif trigger == "date":
        DateTrigger.model_validate(row.trigger)
        existing = await store.schedule_of(session, app_id=app_id, journey_id=journey_id)
        if existing is None or existing.due_at is None:
            # Dates that passed while the journey was not active are not entered late.
            await store.upsert_schedule(
                session,
                app_id=app_id,
                journey_id=journey_id,
                kind="date",
                due_at=now,
                covered_until=now,
            )
