"""The ``journey.events`` consumer: the user's events start runs (event, attribute and
geofence triggers), resolve waits-for-event and meet goals.

Events are keyed by device. The user an event belongs to is its ``user_id``; else the
user its device was last linked to — by journey's own ``journey_device_links``, written
from events naming both a device and a user in the order this consumer reads them, or
the segmenter's ``device_aliases`` — else the device's anonymous key ``d:<device>``.
An event handled before its login is folded therefore runs under the anonymous key; when
the login arrives (in the device's order, on the same partition), the device's open
anonymous runs move to the user, so a cart abandoned before login is still followed
after it. A device already linked to another user (a shared phone) moves nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.journeys.definition import GeofenceTrigger
from libs.runtime.clock import Clock
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch
from libs.schemas import Event
from libs.schemas.base import ANONYMOUS_PREFIX
from services.journey import store
from services.journey.apply import Engine, Move
from services.journey.consumer import active_journeys, enter
from services.journey.logic import EventSeen
from services.journey.metrics import RUNS, RUNS_REKEYED
from services.journey.triggers import Active, Entry, crossing, event_entries, location_of

TOPICS = ("events",)


class EventHandler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        clock: Clock,
        engine: Engine,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._clock = clock
        self._engine = engine

    async def __call__(self, batch: Batch) -> None:
        now = self._clock.now()
        by_app: dict[str, list[Event]] = defaultdict(list)
        for record in batch.records:
            assert isinstance(record.value, Event)
            by_app[record.value.app_id].append(record.value)
        async with self._sessions() as session, session.begin():
            moves: list[Move] = []
            for app_id, events in sorted(by_app.items()):
                moves.extend(await self._app(session, app_id, events, now))
            out = await self._engine.move(session, moves, now)
            RUNS.inc(sum(1 for m in moves if m.new))
            await self._producer.publish_all(out.records())

    async def _app(
        self, session: AsyncSession, app_id: str, events: list[Event], now: datetime
    ) -> list[Move]:
        fresh = await store.first_seen_events(
            session, app_id=app_id, event_ids=[e.event_id for e in events], now=now
        )
        # A redelivered event was applied already (and its effects published).
        events = [e for e in dict((e.event_id, e) for e in events).values() if e.event_id in fresh]
        if not events:
            return []
        resolved = await resolve(session, app_id, events)
        journeys = await active_journeys(session, self._engine, app_id)
        entries: list[tuple[str, Entry]] = []
        positions: list[int] = []
        for i, (event, user) in enumerate(resolved):
            for entry in event_entries(journeys, event):
                entries.append((user, entry))
                positions.append(i)
        for i, user, entry in await geofence_entries(session, app_id, journeys, resolved):
            entries.append((user, entry))
            positions.append(i)
        order = sorted(range(len(entries)), key=lambda k: positions[k])
        entries = [entries[k] for k in order]
        positions = [positions[k] for k in order]
        started = await enter(session, app_id, entries, now)
        users = sorted({u for _, u in resolved})
        seen: dict[str, list[tuple[int, EventSeen]]] = defaultdict(list)
        for i, (event, user) in enumerate(resolved):
            if event.source == "journey":
                continue  # the journey's own writes are no goal nor awaited event
            seen[user].append((i, EventSeen(event.name, event.event_id, event.ts, event.props)))
        moves = [
            Move(run, [s for _, s in seen[run.user_key]])
            for run in await store.open_runs_of(session, app_id=app_id, user_keys=users)
            if seen[run.user_key]
        ]
        for move, at in zip(started, positions, strict=True):
            if move is None:
                continue
            # The run sees the user's later events of this batch, not the one that began it.
            move.stimuli.extend(s for i, s in seen[move.run.user_key] if i > at)
            moves.append(move)
        return moves


async def resolve(
    session: AsyncSession, app_id: str, events: list[Event]
) -> list[tuple[Event, str]]:
    """Each event with its user key (see the module doc); records the batch's links and
    moves the newly linked devices' anonymous runs to their users."""
    devices = [e.device_id for e in events if e.device_id is not None]
    known = await store.users_of_devices(session, app_id=app_id, device_ids=devices)
    links: dict[str, tuple[str, datetime]] = {}
    resolved = []
    for event in events:
        device = event.device_id
        if event.user_id is not None:
            if device is not None and known.get(device) != event.user_id:
                before = known.get(device)
                known[device] = event.user_id
                links[device] = (event.user_id, event.ts)
                if before is None or before.startswith(ANONYMOUS_PREFIX):
                    RUNS_REKEYED.inc(
                        await store.rekey_runs(
                            session,
                            app_id=app_id,
                            source=ANONYMOUS_PREFIX + device,
                            target=event.user_id,
                        )
                    )
            resolved.append((event, event.user_id))
        else:
            assert device is not None
            resolved.append((event, known.get(device) or ANONYMOUS_PREFIX + device))
    await store.link_devices(session, app_id=app_id, links=links)
    return resolved


async def geofence_entries(
    session: AsyncSession,
    app_id: str,
    journeys: list[Active],
    resolved: list[tuple[Event, str]],
) -> list[tuple[int, str, Entry]]:
    """Entries of geofence journeys the batch's locations cross into (or out of); the
    users' inside/outside states are updated."""
    fences = [j for j in journeys if isinstance(j.journey.trigger, GeofenceTrigger)]
    located = [(i, e, u, loc) for i, (e, u) in enumerate(resolved) if (loc := location_of(e))]
    if not fences or not located:
        return []
    states = await store.geofence_states(
        session, app_id=app_id, pairs=[(j.id, u) for j in fences for _, _, u, _ in located]
    )
    found = []
    written: dict[tuple[str, str], tuple[bool, datetime, float, float]] = {}
    for i, event, user, (lat, lon) in located:
        for journey in fences:
            trigger = journey.journey.trigger
            assert isinstance(trigger, GeofenceTrigger)
            key = (journey.id, user)
            inside, crossed = crossing(trigger, states.get(key), lat, lon)
            states[key] = inside
            written[key] = (inside, event.ts, lat, lon)
            if crossed:
                context = {
                    "name": event.name,
                    "event_id": event.event_id,
                    "props": dict(event.props),
                }
                found.append((i, user, Entry(journey, f"geofence:{event.event_id}", context)))
    await store.set_geofence_states(session, app_id=app_id, states=written)
    return found
