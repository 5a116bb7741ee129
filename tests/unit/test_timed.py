"""The timed-work runner's control flow (``libs.runtime.timed``) over an in-memory work
item and transaction, with a ManualClock: batches, sleeping and waking, retries, crashes,
stopping, metrics. The integration tests run it against Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from libs.runtime.clock import ManualClock
from libs.runtime.errors import TransientError
from libs.runtime.timed import TimedRunner, TimedWork

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Store:
    """Due rows by id, with row locks held by open transactions, and a journal."""

    def __init__(self) -> None:
        self.rows: dict[int, datetime] = {}
        self.locked: set[int] = set()
        self.journal: list[tuple[str, Any]] = []


class Tx:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.locks: set[int] = set()
        self.deletes: set[int] = set()

    async def __aenter__(self) -> Tx:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            for row in self.deletes:
                del self.store.rows[row]
            self.store.journal.append(("commit", sorted(self.deletes)))
        else:
            self.store.journal.append(("rollback", sorted(self.locks)))
        self.store.locked -= self.locks


class Session:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.tx: Tx | None = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def begin(self) -> Tx:
        self.tx = Tx(self.store)
        return self.tx


class Sessions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self) -> Session:
        return Session(self.store)


class Work(TimedWork[int]):
    """Rows due by id; handling one deletes it. ``failures`` are raised by the next
    handle calls, one each; ``gate`` (when set) holds each handle until it is set."""

    name = "unit.rows"

    def __init__(self, store: Store, *, batch_size: int = 10, knows_next: bool = True) -> None:
        self.store = store
        self.batch_size = batch_size
        self.poll_interval = timedelta(minutes=5)
        self.knows_next = knows_next
        self.failures: list[BaseException] = []
        self.gate: asyncio.Event | None = None
        self.handle_calls = 0

    async def claim(self, session: Any, *, now: datetime, limit: int) -> Sequence[int]:
        due = sorted(
            (at, row)
            for row, at in self.store.rows.items()
            if at <= now and row not in self.store.locked
        )
        rows = [row for _, row in due[:limit]]
        session.tx.locks.update(rows)
        self.store.locked.update(rows)
        return rows

    def due_at(self, item: int) -> datetime:
        return self.store.rows[item]

    async def handle(self, session: Any, items: Sequence[int], *, now: datetime) -> None:
        self.handle_calls += 1
        self.store.journal.append(("handle", list(items)))
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        session.tx.deletes.update(items)

    async def next_due(self, session: Any, *, after: datetime) -> datetime | None:
        if not self.knows_next:
            return None
        later = [at for at in self.store.rows.values() if at > after]
        return min(later, default=None)


def make(
    *, batch_size: int = 10, knows_next: bool = True, **kwargs: Any
) -> tuple[Store, Work, ManualClock, TimedRunner[int]]:
    store = Store()
    work = Work(store, batch_size=batch_size, knows_next=knows_next)
    clock = ManualClock(T0)
    kwargs.setdefault("retry_initial_s", 0.001)
    runner = TimedRunner(work, sessions=Sessions(store), clock=clock, **kwargs)  # type: ignore[arg-type]
    return store, work, clock, runner


async def settle() -> None:
    """Let every task run until it blocks (everything here is in memory)."""
    for _ in range(100):
        await asyncio.sleep(0)


def handled(store: Store) -> list[int]:
    return [row for kind, rows in store.journal if kind == "commit" for row in rows]


def sample(name: str, work: str = "unit.rows", **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"work": work, **labels})
    return value or 0.0


async def test_a_full_batch_is_followed_by_another_at_once_and_each_commits_after_its_handler() -> (
    None
):
    store, _work, _clock, runner = make(batch_size=10)
    store.rows = {i: T0 - timedelta(seconds=i) for i in range(25)}
    task = asyncio.create_task(runner.run())
    await settle()
    # Oldest first; three batches (10, 10, 5) with no clock movement.
    assert store.journal == [
        ("handle", list(range(24, 14, -1))),
        ("commit", list(range(15, 25))),
        ("handle", list(range(14, 4, -1))),
        ("commit", list(range(5, 15))),
        ("handle", [4, 3, 2, 1, 0]),
        ("commit", list(range(5))),
    ]
    assert store.rows == {}
    assert runner.handled == 25
    assert runner.ready.is_set()
    runner.stop()
    await asyncio.wait_for(task, 1)


async def test_an_empty_claim_sleeps_until_the_next_due_row() -> None:
    store, _work, clock, runner = make()
    store.rows = {1: T0 + timedelta(seconds=30), 2: T0 + timedelta(hours=1)}
    task = asyncio.create_task(runner.run())
    await settle()
    assert handled(store) == []
    clock.advance(timedelta(seconds=29))
    await settle()
    assert handled(store) == []
    clock.advance(timedelta(seconds=1))  # row 1 is due: the runner wakes for it
    await settle()
    assert handled(store) == [1]
    # Row 2 is past the poll interval (5 min): the runner wakes at the interval, finds
    # nothing, and sleeps on until row 2.
    clock.advance(timedelta(minutes=5))
    await settle()
    assert handled(store) == [1]
    clock.set(T0 + timedelta(hours=1))
    await settle()
    assert handled(store) == [1, 2]
    runner.stop()
    await asyncio.wait_for(task, 1)


async def test_without_a_next_due_time_the_runner_polls() -> None:
    store, _work, clock, runner = make(knows_next=False)
    task = asyncio.create_task(runner.run())
    await settle()
    store.rows = {7: T0}  # written by someone who did not wake the runner
    clock.advance(timedelta(minutes=4, seconds=59))
    await settle()
    assert handled(store) == []
    clock.advance(timedelta(seconds=1))
    await settle()
    assert handled(store) == [7]
    runner.stop()
    await asyncio.wait_for(task, 1)


async def test_wake_claims_at_once() -> None:
    store, _work, _clock, runner = make()
    task = asyncio.create_task(runner.run())
    await settle()
    store.rows = {3: T0}
    runner.wake()
    await settle()
    assert handled(store) == [3]
    runner.stop()
    await asyncio.wait_for(task, 1)


async def test_a_wake_during_a_round_is_not_lost() -> None:
    store, work, _clock, runner = make()
    store.rows = {1: T0}
    work.gate = asyncio.Event()
    task = asyncio.create_task(runner.run())
    await settle()
    assert store.journal == [("handle", [1])]
    store.rows[2] = T0  # a consumer commits an earlier due row meanwhile, and wakes
    runner.wake()
    work.gate.set()
    await settle()
    assert handled(store) == [1, 2]
    runner.stop()
    await asyncio.wait_for(task, 1)


async def test_a_transient_failure_rolls_back_and_the_batch_is_retried() -> None:
    store, work, _clock, runner = make()
    store.rows = {1: T0, 2: T0}
    work.failures = [TransientError("db down"), ConnectionResetError()]
    before = sample("hodhod_timed_failures_total", kind="transient")
    assert await runner.run_once() == 2
    assert store.journal == [
        ("handle", [1, 2]),
        ("rollback", [1, 2]),
        ("handle", [1, 2]),
        ("rollback", [1, 2]),
        ("handle", [1, 2]),
        ("commit", [1, 2]),
    ]
    assert sample("hodhod_timed_failures_total", kind="transient") == before + 2


async def test_past_the_retry_budget_the_runner_raises() -> None:
    store, work, _clock, runner = make(retry_budget_s=0.05, retry_initial_s=0.01)
    store.rows = {1: T0}
    work.failures = [TransientError("down")] * 1000
    with pytest.raises(TransientError):
        await asyncio.wait_for(runner.run(), 5)
    assert handled(store) == []
    assert store.rows == {1: T0}  # still due, for whoever claims next
    assert 2 <= work.handle_calls < 1000


async def test_a_non_transient_failure_raises_at_once_without_commit() -> None:
    store, work, _clock, runner = make()
    store.rows = {1: T0, 2: T0}
    work.failures = [KeyError("bug")]
    before = sample("hodhod_timed_failures_total", kind="fatal")
    with pytest.raises(KeyError):
        await asyncio.wait_for(runner.run(), 1)
    assert store.journal == [("handle", [1, 2]), ("rollback", [1, 2])]
    assert work.handle_calls == 1
    assert sample("hodhod_timed_failures_total", kind="fatal") == before + 1


async def test_stop_finishes_and_commits_the_batch_in_hand_and_nothing_after() -> None:
    store, work, _clock, runner = make(batch_size=2)
    store.rows = {i: T0 for i in range(6)}
    work.gate = asyncio.Event()
    task = asyncio.create_task(runner.run())
    await settle()
    assert store.journal == [("handle", [0, 1])]
    runner.stop()
    await settle()
    assert not task.done()  # the batch in hand is not abandoned
    work.gate.set()
    await asyncio.wait_for(task, 1)
    assert store.journal == [("handle", [0, 1]), ("commit", [0, 1])]
    assert sorted(store.rows) == [2, 3, 4, 5]


async def test_stop_while_asleep_returns_at_once() -> None:
    store, _work, _clock, runner = make()
    task = asyncio.create_task(runner.run())
    await settle()
    assert store.journal == [("commit", [])]  # one empty claim, then asleep
    runner.stop()
    await asyncio.wait_for(task, 1)
    assert store.journal == [("commit", [])]


async def test_stop_during_a_retry_returns_without_commit_or_crash() -> None:
    store, work, _clock, runner = make(retry_initial_s=30.0)
    store.rows = {1: T0}
    work.failures = [TransientError("down")]
    task = asyncio.create_task(runner.run())
    await settle()
    assert store.journal == [("handle", [1]), ("rollback", [1])]
    runner.stop()
    await asyncio.wait_for(task, 1)  # returns, does not raise
    assert handled(store) == []
    assert store.rows == {1: T0}


async def test_the_lag_is_that_of_the_oldest_claimed_row() -> None:
    store, _work, _clock, runner = make(batch_size=2)
    store.rows = {1: T0 - timedelta(seconds=10), 2: T0 - timedelta(seconds=90), 3: T0}
    claimed = sample("hodhod_timed_claimed_total")
    await runner.run_once()
    assert sample("hodhod_timed_lag_seconds") == 90.0
    assert sample("hodhod_timed_claimed_total") == claimed + 2
    await runner.run_once()
    assert sample("hodhod_timed_lag_seconds") == 0.0  # row 3 was due just now
    await runner.run_once()
    assert sample("hodhod_timed_lag_seconds") == 0.0  # nothing due
    assert sample("hodhod_timed_claimed_total") == claimed + 3
    assert sample("hodhod_timed_batch_seconds_count") >= 2


async def test_a_next_due_time_in_the_past_does_not_spin() -> None:
    """A work whose ``next_due`` names a moment already past (its rows held by another
    replica) is polled at the interval, not claimed in a loop."""
    store, work, clock, runner = make()

    async def stale(session: Any, *, after: datetime) -> datetime | None:
        return after - timedelta(seconds=1)

    work.next_due = stale  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    await settle()
    calls = work.handle_calls
    store.rows = {1: T0}
    await settle()
    assert handled(store) == [] and work.handle_calls == calls
    clock.advance(work.poll_interval)
    await settle()
    assert handled(store) == [1]
    runner.stop()
    await asyncio.wait_for(task, 1)


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=0)
