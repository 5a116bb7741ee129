"""The timed-work runner against the real Postgres: replicas share due rows through
``FOR UPDATE SKIP LOCKED`` (each handled once, none lost), a real lost connection is
retried, a bug crashes the runner and, through ``compose``, the process; ``stop()``
drains; a ManualClock releases rows; the lag metric reads the oldest due row."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.clock import ManualClock
from libs.runtime.errors import is_transient
from libs.runtime.service import ServiceSpec, compose, timed_runner
from libs.runtime.settings import PlatformSettings
from libs.runtime.timed import TimedRunner, TimedWork, claim_due
from tests.conftest import eventually

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def table(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Table]:
    """A due-rows table of this test's own: ``handled`` counts how often a row was handled
    (by a committed batch), ``due_at`` is cleared when it is."""
    name = f"timed_test_{secrets.token_hex(4)}"
    rows = Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("due_at", DateTime(timezone=True)),
        Column("handled", Integer, nullable=False, server_default=text("0")),
        Column("handled_by", Integer),
    )
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                f"CREATE TABLE {name} (id int PRIMARY KEY, due_at timestamptz, "
                "handled int NOT NULL DEFAULT 0, handled_by int)"
            )
        )
        await session.execute(
            text(f"CREATE INDEX {name}_due ON {name} (due_at) WHERE due_at IS NOT NULL")
        )
    yield rows
    async with sessions() as session, session.begin():
        await session.execute(text(f"DROP TABLE {name}"))


async def fill(
    sessions: async_sessionmaker[AsyncSession], table: Table, due: list[datetime]
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(table.insert(), [{"id": i, "due_at": at} for i, at in enumerate(due)])


async def counts(sessions: async_sessionmaker[AsyncSession], table: Table) -> dict[int, int]:
    async with sessions() as session:
        rows = (await session.execute(select(table.c.id, table.c.handled))).all()
    return {row.id: row.handled for row in rows}


class Rows(TimedWork[Row[Any]]):
    """Handling a row counts it and clears its due time; ``fail`` raises from the next
    handle calls (a callable gets the session), ``gate`` holds each handle until set."""

    name = "test.rows"

    def __init__(
        self, table: Table, *, replica: int = 0, batch_size: int = 100, min_id: int = 0
    ) -> None:
        self.table = table
        self.min_id = min_id
        self.replica = replica
        self.batch_size = batch_size
        self.poll_interval = timedelta(seconds=1)
        self.fail: list[Any] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.pause_s = 0.0

    async def claim(
        self, session: AsyncSession, *, now: datetime, limit: int
    ) -> Sequence[Row[Any]]:
        stmt = claim_due(
            select(self.table.c.id, self.table.c.due_at).where(self.table.c.id >= self.min_id),
            self.table.c.due_at,
            now=now,
            limit=limit,
        )
        return (await session.execute(stmt)).all()

    def due_at(self, item: Row[Any]) -> datetime:
        return item.due_at  # type: ignore[no-any-return]

    async def handle(
        self, session: AsyncSession, items: Sequence[Row[Any]], *, now: datetime
    ) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            failure = self.fail.pop(0)
            if callable(failure):
                await failure(session)
            else:
                raise failure
        await session.execute(
            update(self.table)
            .where(self.table.c.id.in_([r.id for r in items]))
            .values(handled=self.table.c.handled + 1, due_at=None, handled_by=self.replica)
        )
        if self.pause_s:
            await asyncio.sleep(self.pause_s)  # hold the rows a while: replicas overlap

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        return await session.scalar(
            select(func.min(self.table.c.due_at)).where(self.table.c.due_at > after)
        )


def runner(
    work: Rows, sessions: async_sessionmaker[AsyncSession], clock: Any, **kwargs: Any
) -> TimedRunner[Row[Any]]:
    kwargs.setdefault("retry_initial_s", 0.01)
    return TimedRunner(work, sessions=sessions, clock=clock, **kwargs)


async def test_two_replicas_handle_every_row_exactly_once(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    n = 3_000
    await fill(sessions, table, [T0 - timedelta(seconds=i % 600) for i in range(n)])
    works = [Rows(table, replica=i, batch_size=100) for i in (1, 2)]
    for work in works:
        work.pause_s = 0.005
    runners = [runner(w, sessions, clock) for w in works]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        await eventually(lambda: _all_handled(sessions, table, n), within=60)
    finally:
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
    handled = await counts(sessions, table)
    assert len(handled) == n
    assert set(handled.values()) == {1}  # none twice, none lost
    assert sum(r.handled for r in runners) == n
    assert all(r.handled > 0 for r in runners)  # both took a share
    async with sessions() as session:
        rows = await session.execute(
            select(table.c.handled_by, func.count()).group_by(table.c.handled_by)
        )
        by = {replica: count for replica, count in rows.all()}
    assert by == {1: runners[0].handled, 2: runners[1].handled}


async def _all_handled(sessions: async_sessionmaker[AsyncSession], table: Table, n: int) -> bool:
    async with sessions() as session:
        done = await session.scalar(select(func.count()).where(table.c.due_at.is_(None)))
    return done == n


async def test_a_lost_connection_is_retried_then_the_batch_commits(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    await fill(sessions, table, [T0] * 5)
    work = Rows(table)
    seen: list[BaseException] = []

    async def lose_connection(session: AsyncSession) -> None:
        # The server ends this very session's backend (a failover, an operator).
        try:
            await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        except Exception as exc:
            seen.append(exc)
            raise

    work.fail = [lose_connection]
    before = REGISTRY.get_sample_value(
        "hodhod_timed_failures_total", {"work": "test.rows", "kind": "transient"}
    )
    assert await runner(work, sessions, clock).run_once() == 5
    assert len(seen) == 1 and is_transient(seen[0])
    assert set((await counts(sessions, table)).values()) == {1}
    after = REGISTRY.get_sample_value(
        "hodhod_timed_failures_total", {"work": "test.rows", "kind": "transient"}
    )
    assert after == (before or 0) + 1


async def test_a_bug_crashes_the_runner_and_its_batch_stays_due(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    await fill(sessions, table, [T0] * 3)
    work = Rows(table)

    async def bug(session: AsyncSession) -> None:
        await session.execute(update(table).values(handled=99))  # rolled back
        raise KeyError("a bug")

    work.fail = [bug]
    with pytest.raises(KeyError):
        await asyncio.wait_for(runner(work, sessions, clock).run(), 10)
    assert set((await counts(sessions, table)).values()) == {0}
    # Still due: the next runner (a restarted process) handles them.
    assert await runner(Rows(table), sessions, clock).run_once() == 3


async def test_stop_commits_the_batch_in_hand_and_nothing_after(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    await fill(sessions, table, [T0] * 10)
    work = Rows(table, batch_size=4)
    work.gate = asyncio.Event()
    r = runner(work, sessions, clock)
    task = asyncio.create_task(r.run())
    await asyncio.wait_for(work.started.wait(), 10)
    r.stop()
    await asyncio.sleep(0.2)
    assert not task.done()
    work.gate.set()
    await asyncio.wait_for(task, 10)
    handled = await counts(sessions, table)
    assert sorted(i for i, c in handled.items() if c == 1) == [0, 1, 2, 3]
    assert sum(handled.values()) == 4


async def test_advancing_the_clock_releases_due_rows(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    await fill(sessions, table, [T0 + timedelta(hours=1), T0 + timedelta(hours=2)])
    work = Rows(table)
    work.poll_interval = timedelta(days=1)
    r = runner(work, sessions, clock)
    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(r.ready.wait(), 10)
        await asyncio.sleep(0.3)
        assert await counts(sessions, table) == {0: 0, 1: 0}
        clock.advance(timedelta(hours=1))
        assert await eventually(lambda: _handled(sessions, table, {0: 1, 1: 0}), within=10)
        clock.advance(timedelta(hours=1))
        assert await eventually(lambda: _handled(sessions, table, {0: 1, 1: 1}), within=10)
    finally:
        r.stop()
        await asyncio.wait_for(task, 10)


async def _handled(
    sessions: async_sessionmaker[AsyncSession], table: Table, want: dict[int, int]
) -> bool:
    return await counts(sessions, table) == want


async def test_wake_claims_a_row_written_due_now(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    work = Rows(table)
    work.poll_interval = timedelta(days=1)
    r = runner(work, sessions, clock)
    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(r.ready.wait(), 10)
        await fill(sessions, table, [T0])  # a consumer commits a row due now …
        await asyncio.sleep(0.3)
        assert await counts(sessions, table) == {0: 0}  # … the runner sleeps on …
        r.wake()  # … until nudged
        assert await eventually(lambda: _handled(sessions, table, {0: 1}), within=10)
    finally:
        r.stop()
        await asyncio.wait_for(task, 10)


async def test_the_lag_metric_is_that_of_the_oldest_due_row(
    sessions: async_sessionmaker[AsyncSession], table: Table
) -> None:
    clock = ManualClock(T0)
    await fill(
        sessions,
        table,
        [T0 - timedelta(seconds=5), T0 - timedelta(seconds=120), T0 + timedelta(seconds=30)],
    )
    r = runner(Rows(table, batch_size=1), sessions, clock)
    assert await r.run_once() == 1
    assert REGISTRY.get_sample_value("hodhod_timed_lag_seconds", {"work": "test.rows"}) == 120.0
    assert await r.run_once() == 1
    assert REGISTRY.get_sample_value("hodhod_timed_lag_seconds", {"work": "test.rows"}) == 5.0
    assert await r.run_once() == 0
    assert REGISTRY.get_sample_value("hodhod_timed_lag_seconds", {"work": "test.rows"}) == 0.0


async def test_compose_runs_drains_and_reports_a_crash(
    settings: PlatformSettings, table: Table, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Through ``compose``: the runner is ready-checked, a crash goes to ``on_crash``, and
    shutdown stops (not cancels) a runner with a batch in hand, which commits."""
    clock = ManualClock(T0)
    await fill(sessions, table, [T0] * 3)
    draining = Rows(table, batch_size=3)
    draining.gate = asyncio.Event()
    crashing = Rows(table, min_id=100)
    crashing.name = "test.crashing"
    crashing.fail = [KeyError("a bug")]
    spec = ServiceSpec(
        name="timed-test",
        timed=lambda r: [timed_runner(draining, r), timed_runner(crashing, r)],
    )
    crashes: list[asyncio.Task[None]] = []
    app = compose([spec], settings, on_crash=crashes.append, clock=clock)
    async with app.router.lifespan_context(app):
        running = app.state.running
        assert [t.name for t in running.timed] == ["test.rows", "test.crashing"]
        assert app.state.resources.timed["test.rows"] is running.timed[0]
        assert "timed" in app.state.readiness
        await asyncio.wait_for(draining.started.wait(), 10)
        # A row only the crashing work claims.
        async with sessions() as session, session.begin():
            await session.execute(table.insert().values(id=100, due_at=T0))
        running.timed[1].wake()
        await eventually(lambda: _crashed(crashes), within=10)
        assert [t.get_name() for t in crashes] == ["timed:test.crashing"]
        assert isinstance(crashes[0].exception(), KeyError)
        shutdown = asyncio.get_running_loop().call_later(0.3, draining.gate.set)
    shutdown.cancel()
    handled = await counts(sessions, table)
    assert [handled[i] for i in (0, 1, 2)] == [1, 1, 1]  # drained: the batch in hand committed


async def _crashed(crashes: list[asyncio.Task[None]]) -> bool:
    return bool(crashes)
