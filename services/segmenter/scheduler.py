"""Segments re-evaluated in bulk: time-dependent ones every tick, so that "last visit ≥ 3
hours ago" is entered (and "installed in the last 24 hours" left) without any new event;
new and changed rules once, so that users who send no event still enter or leave.

Each app that has segments has a schedule row (``store.Schedule``): the scheduler is
timed work (``libs.runtime.timed``) that claims the due ones ``FOR UPDATE SKIP LOCKED``,
one app per transaction, ticks the app and makes it due again one ``interval`` after the
tick's ``now``. Apps with segments but no schedule are enrolled, due at once, at most once
per interval by each replica. A tick of an app:

1. deletes the memberships of its archived segments (no SegmentChanged: the segment is
   gone, not its users' behaviour);
2. picks the segments to re-evaluate: every time-dependent one, and every one whose
   stored rule's fingerprint differs from the one recorded in ``segmenter_rule_syncs``
   (a segment created, or its rule changed by admin's PATCH, since its last
   reconciliation);
3. compiles them to SQL (``libs.rules.sql.matching_users``) and compares the matching
   users with the stored memberships. Only the users whose answer differs are touched
   (at most ``MAX_USERS_PER_APP_TICK`` per tick, the rest at the next), each exactly like
   the real-time path: under the profile's advisory lock, the in-memory evaluator
   decides (so both paths share one authority), memberships are written and
   SegmentChanged records published before the commit;
4. records the fingerprint of each new or changed rule whose differing users were all
   handled and that was written at least ``RULE_SETTLE`` ago, so that it is not
   compared again until it changes (or, if time-dependent, at every tick as before).
   The settling time covers a consumer batch that loaded the previous rule just before
   the change and commits memberships decided by it after this tick compared: the next
   tick corrects those.

One replica works on an app at a time (it holds the app's schedule row); the others skip
it and take the next due app, so replicas share the apps. The delay between a clock
condition becoming true (or a rule change being committed) and the membership change is
at most one interval plus the tick's own duration (plus up to one interval for an app's
first segment, until it is enrolled). Between ticks the real-time consumer already
evaluates every event against the rules as stored (it reads the segments table per batch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules.language import is_time_dependent
from libs.rules.loader import view_of
from libs.rules.sql import matching_users, without_jit
from libs.runtime.kafka import Producer
from libs.runtime.timed import TimedWork
from libs.schemas import SegmentChanged
from services.segmenter import logic, store
from services.segmenter.consumer import load_rules, record_changes
from services.segmenter.metrics import SEGMENT_CHANGES

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
MAX_USERS_PER_APP_TICK = 5_000
RULE_SETTLE = timedelta(seconds=30)


class SegmentScheduler(TimedWork[store.Schedule]):
    """The bulk re-evaluation of apps' segments as timed work; ``tick_app`` ticks one app
    on demand (tests, tools)."""

    name = "segmenter.schedule"
    # One app per transaction: a tick touches up to MAX_USERS_PER_APP_TICK profiles.
    batch_size = 1

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._interval = timedelta(seconds=interval_s)
        self.poll_interval = self._interval
        self._enrolled_at: datetime | None = None

    async def claim(
        self, session: AsyncSession, *, now: datetime, limit: int
    ) -> Sequence[store.Schedule]:
        await self._enrol(now)
        return await store.claim_schedules(session, now=now, limit=limit)

    def due_at(self, item: store.Schedule) -> datetime:
        return item.due_at

    async def handle(
        self, session: AsyncSession, items: Sequence[store.Schedule], *, now: datetime
    ) -> None:
        for schedule in items:
            await self._tick(session, schedule, now)

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        return await store.next_schedule(session, after=after)

    async def tick_app(self, app_id: str, now: datetime) -> int:
        """Tick ``app_id`` at ``now`` in a transaction of its own, and make it due again an
        interval later; returns how many memberships changed. Does nothing (returns 0)
        while another transaction holds the app (a replica ticking it)."""
        async with self._sessions() as session, session.begin():
            schedule = await store.claim_schedule(session, app_id=app_id, now=now)
            if schedule is None:
                return 0
            return await self._tick(session, schedule, now)

    async def _enrol(self, now: datetime) -> None:
        """Schedule the apps that have segments and no schedule yet, in a short
        transaction of its own (a replica enrolling the same app waits only for it);
        at most once per interval."""
        if self._enrolled_at is not None and now - self._enrolled_at < self._interval:
            return
        async with self._sessions() as session, session.begin():
            await store.enrol_apps(session, now=now)
        self._enrolled_at = now

    async def _tick(self, session: AsyncSession, schedule: store.Schedule, now: datetime) -> int:
        out = await self._evaluate(session, schedule.app_id, now)
        schedule.due_at = now + self._interval
        schedule.ticked_at = now
        await session.flush()
        for change in out:  # counted as published (before the commit, like the consumer's)
            SEGMENT_CHANGES.labels(change.change).inc()
        return len(out)

    async def _evaluate(
        self, session: AsyncSession, app_id: str, now: datetime
    ) -> list[SegmentChanged]:
        """The tick itself (see the module docstring), in the caller's transaction; the
        records are published before it returns (the caller commits after)."""
        out: list[SegmentChanged] = []
        await without_jit(session)
        await store.drop_inactive(session, app_id=app_id)
        rules = await load_rules(session, app_id, now)
        synced = await store.synced_rules(session, app_id=app_id)
        changed_rules = {
            sid for sid, digest in rules.fingerprints.items() if synced.get(sid) != digest
        }
        bulk = {
            sid: rule
            for sid, rule in rules.segments.items()
            if sid in changed_rules or is_time_dependent(rule)
        }
        differing: dict[str, set[str]] = {}
        for segment_id, rule in bulk.items():
            matching = set(
                await session.scalars(
                    matching_users(rule, app_id=app_id, now=now, context=rules.context)
                )
            )
            members = await store.members(session, app_id=app_id, segment_id=segment_id)
            differing[segment_id] = matching ^ members
        candidates = sorted(set().union(*differing.values()))[:MAX_USERS_PER_APP_TICK]
        cause = f"tick:{now.isoformat()}"
        for user_key in candidates:
            state = await store.load_profile(session, app_id=app_id, user_key=user_key)
            if state is None:
                continue
            current = await store.memberships(session, app_id=app_id, user_key=user_key)
            view = await view_of(
                session,
                app_id=app_id,
                user_key=user_key,
                state=state,
                counters=rules.counters,
                recent=rules.recent,
                segments=current,
            )
            changes = logic.membership_changes(
                app_id=app_id,
                user_key=user_key,
                segments=bulk,
                current=current,
                state=view,
                now=now,
                cause=cause,
                context=rules.context,
            )
            out.extend(
                await record_changes(
                    session,
                    app_id=app_id,
                    user_key=user_key,
                    changes=changes,
                    at=now,
                    ts=now,
                    cause=None,
                )
            )
        handled = set(candidates)
        await store.mark_synced(
            session,
            app_id=app_id,
            fingerprints={
                sid: rules.fingerprints[sid]
                for sid in sorted(changed_rules)
                if differing[sid] <= handled and rules.updated_at[sid] <= now - RULE_SETTLE
            },
            at=now,
        )
        await session.flush()
        await self._producer.publish_all(out)
        return out
