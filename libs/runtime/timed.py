"""Timed work: rows that fall due at a moment, claimed and handled in batches.

A ``TimedWork`` names a kind of due row — a verification window running out, an app's
segment re-evaluation, a journey's timer, a deferred send — and says how to claim it and
what to do with it. A ``TimedRunner`` runs one kind until ``stop()``:

1. in one transaction: claim up to ``batch_size`` rows due at the clock's ``now``
   (``SELECT … WHERE due_at <= now ORDER BY due_at LIMIT n FOR UPDATE SKIP LOCKED``:
   ``claim_due`` builds it), hand them to the handler, which makes them no longer due
   (deletes them, moves their ``due_at``, changes their state) together with its
   effects, and commit. Rows another replica holds are skipped, not waited for, so any
   number of replicas share the rows and each row is handled by one of them at a time;
   a replica that dies mid-batch rolls back and its rows are due again at once.
2. a full batch loops at once; otherwise the runner sleeps until the next due row
   (``TimedWork.next_due``), at most ``poll_interval``, or until ``wake()`` — which a
   consumer calls after it committed a row due earlier than the runner may be sleeping.

Errors are classified as in the consumer runner (``libs.runtime.errors``): a transient
failure rolls the batch back and the round is retried (claimed anew) with capped
exponential backoff until the retry budget is spent, then ``run`` raises; anything else
raises at once (crash loudly: ``compose`` stops the process). A batch is never committed
in part and nothing is logged-and-skipped.

Time is the process clock's (``libs.runtime.clock``): what is due, and when to wake, are
read from it, so a test with a ``ManualClock`` releases rows by advancing it. Retry
backoff is real time (it waits for a store to come back, not for a moment to come).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime import metrics
from libs.runtime.clock import Clock
from libs.runtime.errors import is_transient

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
SelectT = TypeVar("SelectT", bound=Select[Any])


class TimedWork(ABC, Generic[ItemT]):
    """One kind of due row. Subclasses set ``name`` (a bounded metric label, like
    ``attribution.verification``) and may change ``batch_size`` and ``poll_interval``.

    ``claim`` and ``handle`` run in the runner's transaction, which commits after
    ``handle`` returned; they never commit. Both may be called again for the same rows
    after a failure (the transaction rolled back), so ``handle``'s effects outside
    Postgres must be idempotent (records published under deterministic ids).
    """

    name: str
    batch_size: int = 500
    poll_interval: timedelta = timedelta(seconds=60)

    @abstractmethod
    async def claim(self, session: AsyncSession, *, now: datetime, limit: int) -> Sequence[ItemT]:
        """Lock and return at most ``limit`` rows due at ``now``, oldest due first,
        skipping rows other transactions hold (``claim_due``)."""

    @abstractmethod
    def due_at(self, item: ItemT) -> datetime:
        """When ``item`` fell due (for the lag metric)."""

    @abstractmethod
    async def handle(self, session: AsyncSession, items: Sequence[ItemT], *, now: datetime) -> None:
        """Do the work of ``items`` and make them no longer due at ``now``."""

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        """The earliest due time strictly after ``after``, if the work can tell cheaply
        (an index on it); None sleeps ``poll_interval``. Read after ``handle``, in its
        transaction, so it sees the due times the handler just set."""
        return None


def claim_due(
    stmt: SelectT,
    due_at: ColumnElement[datetime],
    *,
    now: datetime,
    limit: int,
    of: Any = None,
) -> SelectT:
    """``stmt`` narrowed to the rows due at ``now`` (``due_at <= now``), oldest first, at
    most ``limit``, locked ``FOR UPDATE SKIP LOCKED`` (``of``: the table(s) to lock when
    ``stmt`` joins). An index on ``due_at`` (partial, on the rows that can fall due)
    keeps this a short index scan however many rows wait."""
    return (
        stmt.where(due_at <= now)
        .order_by(due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=of)
    )


class TimedRunner(Generic[ItemT]):
    """Runs one ``TimedWork`` until ``stop()``; see the module docstring for the contract.

    ``run`` blocks. It returns after ``stop()`` once the batch in hand is committed (or,
    if that batch was failing transiently, given up uncommitted), and raises on a
    non-transient failure or an exhausted retry budget. ``ready`` is set once the first
    round has completed (the store answered). Safe to run as many runners (replicas) of
    one work as wanted, in one process or many.
    """

    def __init__(
        self,
        work: TimedWork[ItemT],
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        retry_budget_s: float = 600.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 30.0,
    ) -> None:
        if work.batch_size < 1:
            raise ValueError(f"{work.name}: batch_size must be at least 1")
        self.work = work
        self._sessions = sessions
        self._clock = clock
        self._retry_budget_s = retry_budget_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.handled = 0  # items committed by this runner, for tests and benchmarks

    @property
    def name(self) -> str:
        return self.work.name

    def stop(self) -> None:
        """Ask ``run`` to finish and commit the batch in hand and return. Non-blocking."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Claim again now rather than at the next due time the runner knew of: call it
        after committing a row that is due earlier. Non-blocking; a wake during a round
        makes the runner claim once more right after it."""
        self._wake.set()

    async def run(self) -> None:
        log.info("timed work started", extra={"work": self.name})
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                wake_at = await self._round()
                self.ready.set()
                if wake_at is None or self._stopping.is_set():
                    continue  # a full batch: claim again at once
                await self._clock.sleep_until(wake_at, self._wake)
        finally:
            log.info("timed work stopped", extra={"work": self.name})

    async def run_once(self) -> int:
        """One round (claim, handle, commit), retried like ``run``'s; returns how many
        items it handled. For tests and tools that drive the work by hand."""
        before = self.handled
        await self._round()
        return self.handled - before

    async def _round(self) -> datetime | None:
        """One batch, retried while it fails transiently. Returns when to claim next, or
        None to claim again at once (the batch was full, or a stop cut a retry short)."""
        delay = self._retry_initial_s
        deadline = time.monotonic() + self._retry_budget_s
        while True:
            try:
                return await self._attempt()
            except Exception as exc:
                if not is_transient(exc):
                    metrics.TIMED_FAILURES.labels(self.name, "fatal").inc()
                    log.exception("timed work failed", extra={"work": self.name})
                    raise
                metrics.TIMED_FAILURES.labels(self.name, "transient").inc()
                if self._stopping.is_set():
                    # Nothing of the batch was committed: its rows are due for whoever
                    # claims next. Stopping is not a crash.
                    log.warning(
                        "stopping during a transient failure; the batch stays due",
                        extra={"work": self.name, "error": repr(exc)[:500]},
                    )
                    return None
                if time.monotonic() + delay > deadline:
                    log.error("giving up on a transient failure", extra={"work": self.name})
                    raise
                log.warning(
                    "transient failure, retrying the batch",
                    extra={"work": self.name, "error": repr(exc)[:500], "delay_s": delay},
                )
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass
                if self._stopping.is_set():
                    log.warning(
                        "stopping during a retry; the batch stays due", extra={"work": self.name}
                    )
                    return None
                delay = min(delay * 2, self._retry_max_s)

    async def _attempt(self) -> datetime | None:
        work = self.work
        now = self._clock.now()
        started = time.perf_counter()
        next_due: datetime | None = None
        async with self._sessions() as session, session.begin():
            items = await work.claim(session, now=now, limit=work.batch_size)
            lag = (now - min(work.due_at(i) for i in items)).total_seconds() if items else 0.0
            metrics.TIMED_LAG.labels(self.name).set(max(lag, 0.0))
            if items:
                await work.handle(session, items, now=now)
            full = len(items) >= work.batch_size
            if not full:
                next_due = await work.next_due(session, after=now)
        if items:
            self.handled += len(items)
            metrics.TIMED_CLAIMED.labels(self.name).inc(len(items))
            metrics.TIMED_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        if full:
            return None
        poll_at = now + work.poll_interval
        if next_due is None or next_due <= now:
            return poll_at
        return min(next_due, poll_at)
