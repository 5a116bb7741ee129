"""The process clock: a manual clock moves only when told and wakes due sleepers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from libs.runtime.clock import ManualClock, SystemClock

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


async def test_a_sleeper_wakes_when_the_clock_reaches_its_moment() -> None:
    clock = ManualClock(T0)
    sleeper = asyncio.create_task(clock.sleep_until(T0 + timedelta(hours=2)))
    await asyncio.sleep(0)
    clock.advance(timedelta(hours=1))
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(timedelta(hours=1))
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == T0 + timedelta(hours=2)


async def test_a_move_wakes_exactly_the_sleepers_whose_moment_has_passed() -> None:
    clock = ManualClock(T0)
    woke: list[int] = []

    async def sleep(hours: int) -> None:
        await clock.sleep_until(T0 + timedelta(hours=hours))
        woke.append(hours)

    tasks = [asyncio.create_task(sleep(h)) for h in (3, 1, 2)]
    await asyncio.sleep(0)
    clock.advance(timedelta(hours=2))
    await asyncio.wait_for(asyncio.gather(tasks[1], tasks[2]), 1)
    await asyncio.sleep(0)
    assert sorted(woke) == [1, 2]
    assert not tasks[0].done()
    clock.advance(timedelta(hours=1))
    await asyncio.gather(*tasks)
    assert sorted(woke) == [1, 2, 3]


async def test_a_wake_event_ends_the_sleep_early_and_a_past_moment_returns_at_once() -> None:
    clock = ManualClock(T0)
    wake = asyncio.Event()
    sleeper = asyncio.create_task(clock.sleep_until(T0 + timedelta(days=1), wake))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(sleeper, 1)
    assert clock.now() == T0
    await asyncio.wait_for(clock.sleep_until(T0 - timedelta(seconds=1)), 1)


def test_a_manual_clock_never_goes_back_and_needs_an_aware_start() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError):
        clock.set(T0 - timedelta(seconds=1))
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))


async def test_the_system_clock_is_utc_and_a_wake_ends_its_sleep() -> None:
    clock = SystemClock()
    assert clock.now().tzinfo is UTC
    wake = asyncio.Event()
    wake.set()
    await asyncio.wait_for(clock.sleep_until(clock.now() + timedelta(hours=1), wake), 1)
    await asyncio.wait_for(clock.sleep_until(clock.now() + timedelta(milliseconds=10)), 1)
