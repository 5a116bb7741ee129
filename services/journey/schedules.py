"""A journey's own clock: broadcast firings and date-trigger sweeps (driven by the
``journey.schedules`` timed work, one schedule row per transaction).

**Broadcasts** (schedule trigger). A firing enters the segment's members a page at a
time (the row keeps the cursor, so a firing of a million members is many short
transactions, and a crash resumes where the last committed page ended). Each member's
run starts at the firing time, or — with ``local_time`` — at the first such time of
their day at or after it; runs that start later are stored with that wake time and
walked by the run timers. A member is entered once per firing (the firing time is the
cause); the trigger's ``per_second`` throttles the broadcast's sends like the journey's
own rate limit. After the last page, the next firing is planned (``every``/``until``).

**Date triggers.** The sweep enters users whose yearly date at the trigger's local time
fell in ``(covered_until, now]``, once a year each (the year is the cause), and is next
due at the next quarter hour aligned with the trigger's minutes — every zone's offset
is a multiple of 15 minutes, so that is the next moment any user's local clock can show
the trigger's time. Dates that passed while the journey was not active are not entered.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.journeys.definition import DateTrigger, ScheduleTrigger
from libs.journeys.validate import schedule_times
from services.journey import logic, store, timing
from services.journey.apply import Engine, Move
from services.journey.logic import Enter, Wake
from services.journey.metrics import RUNS

QUARTER = timedelta(minutes=15)


async def fire(
    session: AsyncSession,
    engine: Engine,
    item: store.JourneySchedule,
    now: datetime,
    *,
    page: int,
) -> list[Move]:
    """The moves of one page of ``item``'s firing or sweep; updates the row."""
    row = await store.journey_row(session, app_id=item.app_id, journey_id=item.journey_id)
    if row is None or row.status != "active":
        item.due_at = None
        return []
    parsed = await engine.journeys(session, [(row.app_id, row.id, row.version)])
    journey = parsed.get((row.app_id, row.id, row.version))
    if journey is None:
        item.due_at = None
        return []
    trigger = journey.trigger
    if isinstance(trigger, ScheduleTrigger):
        return await _broadcast_page(session, item, row.version, trigger, now, page)
    if isinstance(trigger, DateTrigger):
        return await _date_page(session, item, row.version, trigger, now, page)
    item.due_at = None
    return []


async def _broadcast_page(
    session: AsyncSession,
    item: store.JourneySchedule,
    version: int,
    trigger: ScheduleTrigger,
    now: datetime,
    page: int,
) -> list[Move]:
    firing = item.firing_at or item.due_at or now
    members = await store.members_page(
        session, app_id=item.app_id, segment_id=trigger.segment, after=item.cursor, limit=page
    )
    cause = f"broadcast:{firing.isoformat()}"
    moves = []
    for user_key, tz in members:
        start = firing
        if trigger.local_time is not None:
            start = timing.local_time_on_or_after(firing, tz, trigger.local_time)
        run = logic.new_run(
            app_id=item.app_id,
            journey_id=item.journey_id,
            version=version,
            user_key=user_key,
            cause=cause,
            now=now,
            wake_at=start,
        )
        moves.append(Move(run, [Wake()] if start <= now else [], new=True, cause=cause))
    RUNS.inc(len(moves))
    if len(members) == page:
        item.firing_at, item.cursor = firing, members[-1][0]
        item.entered += len(members)
        item.due_at = now
        return moves
    item.firing_at, item.cursor, item.entered = None, None, 0
    item.firings += 1
    item.due_at = next_firing(trigger, firing)
    return moves


def next_firing(trigger: ScheduleTrigger, fired: datetime) -> datetime | None:
    """The firing after ``fired``, or None when the schedule is done."""
    if trigger.every is None:
        return None
    _, until = schedule_times(trigger)
    following = fired + trigger.every.delta
    return None if until is not None and following > until else following


def next_sweep(trigger: DateTrigger, now: datetime) -> datetime:
    """The first quarter-hour instant after ``now`` aligned with the trigger's minutes."""
    minute = int(trigger.at.split(":")[1]) % 15
    base = now.replace(second=0, microsecond=0)
    candidate = base.replace(minute=(base.minute // 15) * 15) + timedelta(minutes=minute)
    while candidate <= now:
        candidate += QUARTER
    return candidate


async def _date_page(
    session: AsyncSession,
    item: store.JourneySchedule,
    version: int,
    trigger: DateTrigger,
    now: datetime,
    page: int,
) -> list[Move]:
    after = item.covered_until or now
    # One window for all the pages of a sweep: its end is fixed at the first page.
    end = item.firing_at or now
    # Candidates by month and day, wide enough for every zone and the offset; the exact
    # local moment is decided per user below.
    days = {
        (day - timedelta(days=trigger.offset_days)).strftime("%m-%d")
        for n in range(-2, (end - after).days + 3)
        if (day := (after + timedelta(days=n)).date())
    }
    if "02-28" in days:
        days.add("02-29")  # celebrated on the 28th in common years
    rows = await store.date_candidates(
        session,
        app_id=item.app_id,
        attribute=trigger.attribute,
        month_days=sorted(days),
        after=item.cursor,
        limit=page,
    )
    moves = []
    for user_key, tz, value in rows:
        first_year = timing.profile_date(value) if trigger.attribute == "first_seen" else None
        for year, _moment in timing.date_moments_between(
            value, tz, trigger.at, trigger.offset_days, after, end, from_year_after=first_year
        ):
            cause = f"date:{year}"
            run = logic.new_run(
                app_id=item.app_id,
                journey_id=item.journey_id,
                version=version,
                user_key=user_key,
                cause=cause,
                now=now,
            )
            moves.append(Move(run, [Enter()], new=True, cause=cause))
    RUNS.inc(len(moves))
    if len(rows) == page:
        item.cursor, item.firing_at = rows[-1][0], end
        item.due_at = now
        return moves
    item.cursor, item.firing_at = None, None
    item.covered_until = end
    item.due_at = next_sweep(trigger, end)
    return moves
