"""Replicas of the segmenter consumer merging into one user at once: two devices of a
user log in on different partitions while other records of the same users arrive, in
opposite key orders. Every batch locks its profiles in one global order, so none
deadlocks, and the user ends with every device's counters exactly once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.pipeline import Batch, Record
from libs.runtime.tables import DailyCounter, Profile
from libs.schemas import Event
from services.segmenter.consumer import ProfileUpdater

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
ROUNDS = 20


class Discard:
    async def publish_all(self, records: Sequence[Any]) -> None:
        return None


def batch(events: Sequence[Event]) -> Batch:
    return Batch([Record("events", 0, i, b"k", e, 0) for i, e in enumerate(events)])


async def test_concurrent_merges_into_one_user_neither_deadlock_nor_double_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app = f"merge_{secrets.token_hex(4)}"
    counter = iter(range(10**6))

    def event(name: str, device: str | None, user: str | None, minutes: int) -> Event:
        ts = NOW - timedelta(minutes=minutes)
        return Event(
            app_id=app,
            event_id=f"e{next(counter)}",
            name=name,
            device_id=device,
            user_id=user,
            ts=ts,
            received_at=ts,
        )

    replicas = [ProfileUpdater(sessions, Discard()) for _ in range(2)]  # type: ignore[arg-type]
    for n in range(ROUNDS):
        user, other = f"u{n}", f"a{n}"  # "a…" sorts before "d:…", "u…" after
        devices = [f"p{n}-1", f"p{n}-2"]
        # Each device: three anonymous sessions.
        await asyncio.gather(
            *(
                replica(batch([event("$open", d, None, 60 + i) for i in range(3)]))
                for replica, d in zip(replicas, devices, strict=True)
            )
        )
        # Each device logs in on one replica while the other replica folds records of
        # the same users: a merge locks the anonymous profile and the user, the other
        # batch locks "a…" then "u…".
        for first, second in ((0, 1), (1, 0)):
            await asyncio.gather(
                replicas[first](
                    batch(
                        [event("$identify", devices[first], user, 10), event("x", None, other, 5)]
                    )
                ),
                replicas[second](
                    batch([event("$open", None, other, 3), event("$purchase", None, user, 2)])
                ),
            )
        async with sessions() as session:
            profiles = {
                p.user_key: p
                for p in await session.scalars(select(Profile).where(Profile.app_id == app))
            }
            opens = await session.scalar(
                select(func.sum(DailyCounter.count)).where(
                    DailyCounter.app_id == app,
                    DailyCounter.user_key == user,
                    DailyCounter.name == "$open",
                )
            )
        assert not any(k.startswith("d:") for k in profiles), sorted(profiles)
        merged = profiles[user]
        assert (merged.sessions, merged.purchases, merged.events) == (6, 2, 10)
        assert opens == 6
        assert (profiles[other].sessions, profiles[other].events) == (2, 4)
