"""The tracker service reads the ``trackers`` table (written by admin); it owns none."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.tables import Tracker

CACHE_TTL_S = 10.0


class TrackerCache:
    """Active trackers by token, cached for ``CACHE_TTL_S`` (a click must not wait on
    Postgres every time). An archived tracker stops redirecting within the TTL."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._entries: dict[str, tuple[float, Tracker | None]] = {}

    async def get(self, token: str) -> Tracker | None:
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._sessions() as session:
            tracker = await active_tracker(session, token=token)
        if len(self._entries) > 50_000:
            self._entries.clear()
        self._entries[token] = (now + CACHE_TTL_S, tracker)
        return tracker


async def active_tracker(session: AsyncSession, *, token: str) -> Tracker | None:
    """The tracker of ``token`` unless archived. The token is the tenant's public handle,
    so the row found carries the ``app_id`` every later step is scoped by."""
    row = await session.scalar(select(Tracker).where(Tracker.token == token))
    if row is None or row.status != "active":
        return None
    session.expunge(row)
    return row
