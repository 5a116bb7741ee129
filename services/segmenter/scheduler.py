"""Segments re-evaluated in bulk: time-dependent ones every tick, so that "last visit ≥ 3
hours ago" is entered (and "installed in the last 24 hours" left) without any new event;
new and changed rules once, so that users who send no event still enter or leave.

Every ``interval`` the scheduler takes each app that has segments and:

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

One replica works on an app at a time (a try-lock per app); others skip it until the
next tick. The delay between a clock condition becoming true (or a rule change being
committed) and the membership change is at most one interval plus the tick's own
duration. Between ticks the real-time consumer already evaluates every event against
the rules as stored (it reads the segments table per batch).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules.language import is_time_dependent
from libs.rules.loader import view_of
from libs.rules.sql import matching_users, without_jit
from libs.runtime.kafka import Producer
from libs.runtime.tables import Segment
from libs.schemas import SegmentChanged
from services.segmenter import logic, store
from services.segmenter.consumer import load_rules, record_changes
from services.segmenter.metrics import SEGMENT_CHANGES

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
MAX_USERS_PER_APP_TICK = 5_000
RULE_SETTLE = timedelta(seconds=30)


class SegmentScheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._interval_s = interval_s

    async def run(self) -> None:
        """Tick forever (cancelled on shutdown). A failed tick is logged and retried at
        the next one: the work is idempotent and a later tick redoes it."""
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self.tick(datetime.now(UTC))
            except Exception:
                log.exception("segment scheduler tick failed")
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self._interval_s - elapsed))

    async def tick(self, now: datetime) -> int:
        """One pass over every app; returns how many memberships changed."""
        async with self._sessions() as session:
            # Tenants are enumerated here, the one query not scoped by an app: every
            # query that follows is. Apps whose segments are all archived are visited
            # too: their memberships are to be deleted.
            app_ids = list(await session.scalars(select(Segment.app_id).distinct()))
        changed = 0
        for app_id in sorted(app_ids):
            changed += await self.tick_app(app_id, now)
        return changed

    async def tick_app(self, app_id: str, now: datetime) -> int:
        out: list[SegmentChanged] = []
        async with self._sessions() as session, session.begin():
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"segment-scheduler\x1f{app_id}"},
            )
            if not locked:
                return 0
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
        for change in out:
            SEGMENT_CHANGES.labels(change.change).inc()
        return len(out)
