"""The ``segmenter.profiles`` consumer: events and attributions in, SegmentChanged out.

Per user in the batch (in key order, so concurrent replicas lock in the same order):
lock the profile, fold the records not seen before (profile, daily counters and recent
events, all in the batch's transaction, so a replay changes nothing), re-evaluate the
app's segments and store membership changes. SegmentChanged records are published
before the Postgres commit; a retry recomputes the same change ids.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.schemas import Event, SegmentChanged, UserAttributed
from libs.schemas.rules import EventCond, Node, RevenueCond, RfmCond, RuleError, parse_rule, walk
from libs.segments.sql import rfm_thresholds
from services.segmenter import logic, store
from services.segmenter.metrics import SEGMENT_CHANGES

log = logging.getLogger(__name__)

TOPICS = ("events", "attributions")


def user_of(record: Record) -> tuple[str, str]:
    value = record.value
    if isinstance(value, Event | UserAttributed):
        return value.app_id, value.user_key
    raise TypeError(f"unexpected record on {record.topic}")


@dataclass(frozen=True)
class AppRules:
    """The app's active segments and what evaluating them needs loaded."""

    segments: dict[str, Node]
    # segment id → ``logic.rule_fingerprint`` of its stored rule, and when admin last
    # wrote the segment (the scheduler's check for new and changed rules)
    fingerprints: dict[str, str]
    updated_at: dict[str, datetime]
    # ``logic.dependency_order(segments)``, computed once per load, not per user
    order: list[str]
    context: logic.Context
    counters: bool
    recent: bool


class ProfileUpdater:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], producer: Producer) -> None:
        self._sessions = sessions
        self._producer = producer
        self._rfm = logic.RfmCache()

    async def __call__(self, batch: Batch) -> None:
        by_user: dict[tuple[str, str], list[Record]] = defaultdict(list)
        for record in batch.records:
            by_user[user_of(record)].append(record)
        out: list[SegmentChanged] = []
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            rules: dict[str, AppRules] = {}
            for app_id, user_key in sorted(by_user):
                if app_id not in rules:
                    rules[app_id] = await self._rules(session, app_id, now)
                out.extend(
                    await self._update_user(
                        session, app_id, user_key, by_user[(app_id, user_key)], rules[app_id], now
                    )
                )
            await session.flush()
            await self._producer.publish_all(out)
        for change in out:
            SEGMENT_CHANGES.labels(change.change).inc()

    async def _rules(self, session: AsyncSession, app_id: str, now: datetime) -> AppRules:
        return await load_rules(session, app_id, now, rfm_cache=self._rfm)

    async def _update_user(
        self,
        session: AsyncSession,
        app_id: str,
        user_key: str,
        records: list[Record],
        rules: AppRules,
        now: datetime,
    ) -> list[SegmentChanged]:
        events = [r.value for r in records if isinstance(r.value, Event)]
        fresh = await store.first_sightings(
            session, app_id=app_id, event_ids=[e.event_id for e in events]
        )
        before = await store.load_profile(session, app_id=app_id, user_key=user_key)
        state = before or logic.ProfileState()
        cause = None
        cause_time = now
        applied: list[Event] = []
        for record in records:
            value = record.value
            if isinstance(value, Event) and value.event_id in fresh:
                fresh.discard(value.event_id)  # a duplicate inside the batch counts once
                applied.append(value)
                state = logic.apply_event(state, value)
                cause, cause_time = value.event_id, record.time
                if value.device_id is not None:
                    await store.set_alias(
                        session, app_id=app_id, device_id=value.device_id, user_key=user_key
                    )
            elif isinstance(value, UserAttributed):
                state = logic.apply_attribution(state, value)
                cause, cause_time = value.attribution_id, record.time
        if applied:
            await store.add_events(
                session, app_id=app_id, user_key=user_key, events=applied, now=now
            )
        if state == before or cause is None:
            return []
        await store.save_profile(session, app_id=app_id, user_key=user_key, state=state)
        current = await store.memberships(session, app_id=app_id, user_key=user_key)
        view = await store.load_view(
            session,
            app_id=app_id,
            user_key=user_key,
            state=state,
            counters=rules.counters,
            recent=rules.recent,
            segments=current,
        )
        changes = logic.membership_changes(
            app_id=app_id,
            user_key=user_key,
            segments=rules.segments,
            current=current,
            state=view,
            now=now,
            cause=cause,
            context=rules.context,
            order=rules.order,
        )
        return await record_changes(
            session,
            app_id=app_id,
            user_key=user_key,
            changes=changes,
            at=now,
            ts=cause_time,
            cause=cause,
        )


async def record_changes(
    session: AsyncSession,
    *,
    app_id: str,
    user_key: str,
    changes: list[logic.Change],
    at: datetime,
    ts: datetime,
    cause: str | None,
) -> list[SegmentChanged]:
    """Write membership ``changes`` (entered at ``at``) and the records announcing them,
    stamped ``ts`` — the real-time path's and the scheduler's common last step."""
    out = []
    for change in changes:
        if change.change == "entered":
            await store.enter(
                session, app_id=app_id, segment_id=change.segment_id, user_key=user_key, at=at
            )
        else:
            await store.leave(
                session, app_id=app_id, segment_id=change.segment_id, user_key=user_key
            )
        out.append(
            SegmentChanged(
                app_id=app_id,
                change_id=change.change_id,
                user_key=user_key,
                segment_id=change.segment_id,
                change=change.change,
                ts=ts,
                cause_event_id=cause,
            )
        )
    return out


async def load_rules(
    session: AsyncSession,
    app_id: str,
    now: datetime,
    *,
    rfm_cache: logic.RfmCache | None = None,
) -> AppRules:
    """The app's active segments, parsed, and what evaluating them needs loaded.

    RFM thresholds (one scan of the app's profiles) are read only when a rule has an rfm
    condition, and taken from ``rfm_cache`` when it holds fresh ones (the real-time
    consumer's; the scheduler passes none and always computes them)."""
    parsed: dict[str, Node] = {}
    fingerprints: dict[str, str] = {}
    updated_at: dict[str, datetime] = {}
    for segment in await store.active_segments(session, app_id=app_id):
        try:
            parsed[segment.id] = parse_rule(segment.rule)
            fingerprints[segment.id] = logic.rule_fingerprint(segment.rule)
            updated_at[segment.id] = segment.updated_at
        except RuleError as exc:
            # Admin validates rules on write; a stored bad rule is skipped, loudly.
            log.error("segment rule invalid", extra={"segment": segment.id, "error": str(exc)})
    nodes = [n for rule in parsed.values() for n in walk(rule)]
    rfm = None
    if any(isinstance(n, RfmCond) for n in nodes):
        rfm = rfm_cache.get(app_id, now) if rfm_cache is not None else None
        if rfm is None:
            rfm = await rfm_thresholds(session, app_id=app_id, now=now)
            if rfm_cache is not None:
                rfm_cache.put(app_id, rfm, now)
    return AppRules(
        segments=parsed,
        fingerprints=fingerprints,
        updated_at=updated_at,
        order=logic.dependency_order(parsed),
        context=logic.Context(rfm=rfm),
        counters=any(
            isinstance(n, RevenueCond) or (isinstance(n, EventCond) and not n.exact) for n in nodes
        ),
        recent=any(isinstance(n, EventCond) and n.exact for n in nodes),
    )
