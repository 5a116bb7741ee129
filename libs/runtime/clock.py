"""The process's clock: what "now" is, and how to wait for a moment.

Code that schedules (journey timers, deferred sends, the segment scheduler) asks the
clock instead of ``datetime.now`` so that tests can move time instead of sleeping
through it. Production and ``hodhod up`` use ``SystemClock``; tests that run a clocked
platform pass a ``ManualClock`` and ``advance`` it.

Both clocks are safe to share between tasks of one event loop. Neither is safe across
threads.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        """Return at ``when`` or as soon as ``wake`` is set, whichever comes first.

        Never raises but for cancellation; does not clear ``wake``.
        """
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        delay = (when - datetime.now(UTC)).total_seconds()
        if delay <= 0:
            return
        if wake is None:
            await asyncio.sleep(delay)
            return
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except TimeoutError:
            pass


class ManualClock:
    """A clock that moves only when told to: ``advance`` / ``set``.

    Sleepers whose moment has come are woken by the move. A moment in the past returns
    at once. Time never goes back: ``set`` to an earlier time raises ``ValueError``.
    """

    def __init__(self, start: datetime | None = None) -> None:
        now = start or datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError("the start time must be timezone-aware")
        self._now = now.astimezone(UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Event]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        if when <= self._now:
            return
        due = asyncio.Event()
        heapq.heappush(self._sleepers, (when, next(self._order), due))
        waiters = [asyncio.ensure_future(due.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            due.set()  # a woken sleeper's entry is released at the next move

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward by ``delta`` (≥ 0) and wake whoever is due; returns now."""
        if delta < timedelta(0):
            raise ValueError("a clock does not go back")
        return self.set(self._now + delta)

    def set(self, when: datetime) -> datetime:
        """Move time forward to ``when`` and wake whoever is due; returns now."""
        when = when.astimezone(UTC)
        if when < self._now:
            raise ValueError("a clock does not go back")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            heapq.heappop(self._sleepers)[2].set()
        return self._now
