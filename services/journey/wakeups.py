"""The journey's timed work (``libs.runtime.timed``): run timers, tasks, schedules.

- ``RunTimers`` (``journey.timers``): runs whose ``wake_at`` is due get a ``Wake``. A run
  of a paused journey is held instead (its timer is not claimed until resumed); one of an
  archived journey ends.
- ``Tasks`` (``journey.tasks``): sends the per-second limit deferred are published;
  webhook calls are made (``services.journey.webhooks``), retried with backoff.
- ``Schedules`` (``journey.schedules``): a broadcast's firing enters its segment's
  members page by page (throttled and local-time entries are runs whose first step is
  timed); a date trigger's sweep enters the users whose yearly date falls due.

Each claims with ``FOR UPDATE SKIP LOCKED``, so replicas share the rows; handlers publish
before the runner commits, under deterministic ids. Each is run by the kit's
``TimedRunner`` (``ServiceSpec.timed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.kafka import Producer
from libs.runtime.timed import TimedWork
from libs.schemas import SendJob
from services.journey import schedules, store, webhooks
from services.journey.apply import Engine, Move
from services.journey.logic import Run, Wake
from services.journey.metrics import TASKS_DONE

log = logging.getLogger(__name__)


class RunTimers(TimedWork[Run]):
    name = "journey.timers"
    batch_size = 1000
    poll_interval = timedelta(seconds=30)

    def __init__(
        self,
        engine: Engine,
        producer: Producer,
        *,
        batch_size: int = 1000,
        app_id: str | None = None,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self.batch_size = batch_size
        self._app_id = app_id  # None: every app's runs

    async def claim(self, session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Run]:
        return await store.claim_due_runs(session, now=now, limit=limit, app_id=self._app_id)

    def due_at(self, item: Run) -> datetime:
        assert item.wake_at is not None
        return item.wake_at

    async def handle(self, session: AsyncSession, items: Sequence[Run], *, now: datetime) -> None:
        statuses = await store.journey_statuses(
            session, keys=[(r.app_id, r.journey_id) for r in items]
        )
        moves = []
        stopped: dict[tuple[str, str], str] = {}
        for run in items:
            status = statuses.get((run.app_id, run.journey_id), "archived")
            if status == "active":
                moves.append(Move(run, [Wake()]))
            else:
                stopped[(run.app_id, run.journey_id)] = status
        # The config consumer normally got there first; this covers a change it has not
        # read yet. Once per journey, not per run.
        for (app_id, journey_id), status in sorted(stopped.items()):
            if status == "paused":
                await store.hold_runs(session, app_id=app_id, journey_id=journey_id, held=True)
            else:
                await store.end_runs(
                    session, app_id=app_id, journey_id=journey_id, reason=status, now=now
                )
        out = await self._engine.move(session, moves, now)
        await self._producer.publish_all(out.records())

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        return await session.scalar(
            select(func.min(store.JourneyRun.wake_at)).where(
                store.JourneyRun.wake_at > after, ~store.JourneyRun.held
            )
        )


class Tasks(TimedWork[store.JourneyTask]):
    name = "journey.tasks"
    batch_size = 50
    poll_interval = timedelta(seconds=30)

    def __init__(
        self,
        producer: Producer,
        http: httpx.AsyncClient,
        *,
        allow_private: bool,
        resolve: Callable[[str], Sequence[str]] | None = None,
        app_id: str | None = None,
    ) -> None:
        self._producer = producer
        self._http = http
        self._allow_private = allow_private
        self._resolve = resolve
        self._app_id = app_id  # None: every app's tasks

    async def claim(
        self, session: AsyncSession, *, now: datetime, limit: int
    ) -> Sequence[store.JourneyTask]:
        return await store.claim_due_tasks(session, now=now, limit=limit, app_id=self._app_id)

    def due_at(self, item: store.JourneyTask) -> datetime:
        return item.due_at

    async def handle(
        self, session: AsyncSession, items: Sequence[store.JourneyTask], *, now: datetime
    ) -> None:
        sends = [t for t in items if t.kind == "send"]
        await self._producer.publish_all([SendJob.model_validate(t.payload) for t in sends])
        for task in sends:
            await store.finish_task(session, task=task)
        TASKS_DONE.labels("send", "sent").inc(len(sends))
        calls = [t for t in items if t.kind == "webhook"]
        results = await webhooks.call_all(
            self._http,
            [(t.task_id, t.payload) for t in calls],
            allow_private=self._allow_private,
            resolve=self._resolve,
        )
        for task, result in zip(calls, results, strict=True):
            retries = int(task.payload.get("retries", 0))
            if result.ok or not result.retryable or task.attempts >= retries:
                await store.finish_task(session, task=task)
                TASKS_DONE.labels("webhook", result.outcome(task.attempts >= retries)).inc()
                if not result.ok:
                    log.warning(
                        "journey webhook failed",
                        extra={
                            "task": task.task_id,
                            "error": result.error,
                            "attempts": task.attempts + 1,
                        },
                    )
                continue
            task.attempts += 1
            task.last_error = (result.error or "")[:500]
            task.due_at = now + webhooks.backoff(task.attempts, result.retry_after_s)

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        return await session.scalar(
            select(func.min(store.JourneyTask.due_at)).where(store.JourneyTask.due_at > after)
        )


class Schedules(TimedWork[store.JourneySchedule]):
    name = "journey.schedules"
    # One schedule a transaction (a page of members): a claimed row counts as a full
    # batch, so the runner claims again at once while a firing has pages left.
    batch_size = 1
    poll_interval = timedelta(seconds=60)

    def __init__(
        self, engine: Engine, producer: Producer, *, page: int = 5000, app_id: str | None = None
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._page = page
        self._app_id = app_id  # None: every app's schedules

    async def claim(
        self, session: AsyncSession, *, now: datetime, limit: int
    ) -> Sequence[store.JourneySchedule]:
        return await store.claim_due_schedules(session, now=now, limit=limit, app_id=self._app_id)

    def due_at(self, item: store.JourneySchedule) -> datetime:
        assert item.due_at is not None
        return item.due_at

    async def handle(
        self, session: AsyncSession, items: Sequence[store.JourneySchedule], *, now: datetime
    ) -> None:
        for item in items:
            moves = await schedules.fire(session, self._engine, item, now, page=self._page)
            out = await self._engine.move(session, moves, now)
            await self._producer.publish_all(out.records())

    async def next_due(self, session: AsyncSession, *, after: datetime) -> datetime | None:
        return await session.scalar(
            select(func.min(store.JourneySchedule.due_at)).where(
                store.JourneySchedule.due_at > after
            )
        )
