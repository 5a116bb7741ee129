"""Time-dependent segments re-evaluated in bulk, so that "last visit ≥ 3 hours ago" is
entered (and "installed in the last 24 hours" left) without any new event.

Every ``interval`` the scheduler takes each app with active segments, compiles the
app's time-dependent segments to SQL (``libs.segments.sql.matching_users``) and compares the
matching users with the stored memberships. Only the users whose answer differs are
touched, each exactly like the real-time path: under the profile's advisory lock, the
in-memory evaluator decides (so both paths share one authority), memberships are
written and SegmentChanged records published before the commit. One replica works on an
app at a time (a try-lock per app); others skip it until the next tick. The delay
between a clock condition becoming true and the entry is at most one interval plus the
tick's own duration.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.tables import Segment
from libs.schemas import SegmentChanged
from libs.schemas.rules import is_time_dependent
from libs.segments.sql import matching_users
from services.segmenter import logic, store
from services.segmenter.consumer import load_rules, record_changes
from services.segmenter.metrics import SEGMENT_CHANGES

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
MAX_USERS_PER_APP_TICK = 5_000


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
            # query that follows is.
            app_ids = list(
                await session.scalars(
                    select(Segment.app_id).where(Segment.status == "active").distinct()
                )
            )
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
            rules = await load_rules(session, app_id, now)
            timed = {sid: rule for sid, rule in rules.segments.items() if is_time_dependent(rule)}
            candidates: set[str] = set()
            for segment_id, rule in timed.items():
                matching = set(
                    await session.scalars(
                        matching_users(rule, app_id=app_id, now=now, context=rules.context)
                    )
                )
                members = await store.members(session, app_id=app_id, segment_id=segment_id)
                candidates |= matching ^ members
            cause = f"tick:{now.isoformat()}"
            for user_key in sorted(candidates)[:MAX_USERS_PER_APP_TICK]:
                state = await store.load_profile(session, app_id=app_id, user_key=user_key)
                if state is None:
                    continue
                current = await store.memberships(session, app_id=app_id, user_key=user_key)
                view = await store.load_view(
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
                    segments=timed,
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
            await session.flush()
            await self._producer.publish_all(out)
        for change in out:
            SEGMENT_CHANGES.labels(change.change).inc()
        return len(out)
