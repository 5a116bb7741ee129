"""The ``segmenter.profiles`` consumer: events, attributions and user erasures in,
SegmentChanged out.

Per batch, in one transaction:

1. route: record every event and attribution statement as seen (``sightings_and_aliases``:
   a replay folds nothing, so that it cannot bring back what a merge or an erasure
   removed), load the aliases of the batch's devices and decide, per app, the profile
   each record folds into and the device links the batch makes (``identity.route``);
2. lock every profile the batch touches — targets, anonymous profiles to merge, users
   to erase — at once, in sorted ``(app_id, user_key)`` order (the scheduler locks in
   the same order), so that replicas never deadlock;
3. merge: for each link of a device that had no user, fold the anonymous profile into
   the user's (``identity.merge_profiles``; counters and recent events moved), delete it
   and announce its exits;
4. fold each profile's records not seen before, re-evaluate the app's segments and
   store membership changes — set-wise: the profiles, counters, recent events and
   memberships of all the batch's users are read and written in a few statements
   (``= ANY(:keys)`` reads; the aliases, counters, recent events and profiles written
   in one statement, ``store.save_users``), the fold and the evaluation done per
   user in memory, in sorted key order, exactly as the records one batch at a time;
5. erase the users named by ``ConfigChanged(entity="user", action="deleted")`` records
   (profile, aliases, counters, recent events, memberships with their exits) — last,
   so that events of the same batch do not outlive the erasure.

SegmentChanged records are published before the Postgres commit; a retry recomputes the
same change ids (UUIDv5 of the cause: the linking event, the folded event, the erasure).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.rules.evaluation import RfmCache
from libs.rules.language import (
    Node,
    RfmCond,
    RuleError,
    parse_rule,
    reads_counters,
    reads_recent,
    walk,
)
from libs.rules.profile import ProfileState
from libs.rules.semantics import Context
from libs.rules.sql import rfm_thresholds
from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.schemas import ConfigChanged, Event, SegmentChanged, UserAttributed, encode
from libs.schemas.config_changes import is_user_erasure
from services.segmenter import identity, logic, store
from services.segmenter.metrics import ERASURES, MERGES, SEGMENT_CHANGES

log = logging.getLogger(__name__)

TOPICS = ("events", "attributions", "config-changes")


def seen_key(value: Event | UserAttributed) -> str:
    """The id under which a record is remembered as folded (``sightings_and_aliases``): an
    event's id; for an attribution, a digest of the whole statement — a restatement
    differs (even one made at the same instant: a login, then the verification it
    settles), a redelivered record does not."""
    if isinstance(value, Event):
        return value.event_id
    return f"attribution:{hashlib.sha256(encode(value)).hexdigest()[:40]}"


def sighting(value: Event | UserAttributed, *, fresh: bool) -> identity.Sighting:
    """What routing needs of an event or an attribution. An attribution of an anonymous
    install follows its device (it may arrive after the device logged in)."""
    if isinstance(value, Event):
        return identity.Sighting(
            value.device_id, value.user_id, value.ts, value.event_id, fresh=fresh
        )
    cause = value.attribution_id
    if identity.is_anonymous(value.user_key):
        device = value.user_key.removeprefix(identity.anonymous_key(""))
        return identity.Sighting(device, None, value.attributed_at, cause, fresh=fresh)
    return identity.Sighting(None, value.user_key, value.attributed_at, cause, fresh=fresh)


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
    context: Context
    counters: bool
    recent: bool


@dataclass
class AppBatch:
    """One app's share of a batch, routed."""

    by_user: dict[str, list[Record]]
    fresh: set[str]
    routing: identity.Routing
    erasures: list[ConfigChanged]


class ProfileUpdater:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], producer: Producer) -> None:
        self._sessions = sessions
        self._producer = producer
        self._rfm = RfmCache()

    async def __call__(self, batch: Batch) -> None:
        per_app: dict[str, list[Record]] = defaultdict(list)
        for record in batch.records:
            value = record.value
            if isinstance(value, Event | UserAttributed) or (
                isinstance(value, ConfigChanged) and is_user_erasure(value)
            ):
                per_app[value.app_id].append(record)
        out: list[SegmentChanged] = []
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            apps = {
                app_id: await self._route(session, app_id, per_app[app_id])
                for app_id in sorted(per_app)
            }
            for app_id, routed in apps.items():
                keys = set(routed.by_user)
                keys |= {link.anonymous_key for link in routed.routing.links if link.merges}
                keys |= {erasure.entity_id for erasure in routed.erasures}
                await store.lock_profiles(session, app_id=app_id, user_keys=sorted(keys))
            for app_id, routed in apps.items():
                rules = await self._rules(session, app_id, now)
                merged: set[str] = set()
                carried: dict[str, dict[str, str]] = {}  # user → segment → anonymous key
                merging = [link for link in routed.routing.links if link.merges]
                # A device links from no user at most once per batch: one read finds the
                # anonymous profiles to merge (most first logins have none).
                anonymous = await store.load_profiles(
                    session, app_id=app_id, user_keys=[link.anonymous_key for link in merging]
                )
                for link in merging:
                    if link.anonymous_key in anonymous:
                        exits = await self._merge(
                            session, app_id, link, anonymous[link.anonymous_key], now
                        )
                        out.extend(exits)
                        merged.add(link.user_key)
                        into = carried.setdefault(link.user_key, {})
                        for left in exits:
                            into.setdefault(left.segment_id, link.anonymous_key)
                updates = await self._update_users(session, app_id, routed, rules, now, merged)
                out.extend(identity.mark_carried(updates, carried))
                for erasure in routed.erasures:
                    out.extend(await erase(session, erasure, now))
            await session.flush()
            await self._producer.publish_all(out)
        for change in out:
            SEGMENT_CHANGES.labels(change.change).inc()

    async def _rules(self, session: AsyncSession, app_id: str, now: datetime) -> AppRules:
        return await load_rules(session, app_id, now, rfm_cache=self._rfm)

    async def _route(self, session: AsyncSession, app_id: str, records: list[Record]) -> AppBatch:
        """Mark the app's events seen and decide where each record folds."""
        folded: list[tuple[Record, Event | UserAttributed]] = []
        erasures: list[ConfigChanged] = []
        for record in records:
            value = record.value
            if isinstance(value, Event | UserAttributed):
                folded.append((record, value))
            elif isinstance(value, ConfigChanged) and is_user_erasure(value):
                erasures.append(value)
        devices = {sighting(v, fresh=False).device_id for _, v in folded}
        fresh, stored = await store.sightings_and_aliases(
            session,
            app_id=app_id,
            event_ids=[seen_key(v) for _, v in folded],
            device_ids=[d for d in devices if d is not None],
        )
        unrouted = set(fresh)  # a record repeated inside the batch is new once
        sightings = []
        for _, value in folded:
            key = seen_key(value)
            sightings.append(sighting(value, fresh=key in unrouted))
            unrouted.discard(key)
        routing = identity.route(sightings, stored)
        by_user: dict[str, list[Record]] = defaultdict(list)
        for (record, _), target in zip(folded, routing.targets, strict=True):
            by_user[target].append(record)
        return AppBatch(dict(by_user), fresh, routing, erasures)

    async def _merge(
        self,
        session: AsyncSession,
        app_id: str,
        link: identity.Link,
        anonymous: ProfileState,
        now: datetime,
    ) -> list[SegmentChanged]:
        """Fold the device's ``anonymous`` profile, as stored, into its user's (both
        locked by the caller) and delete it, with its memberships (announced as exits).
        Called only when the anonymous profile exists (a replayed login finds it gone:
        merged once)."""
        source = link.anonymous_key
        user = await store.load_profile(session, app_id=app_id, user_key=link.user_key, locked=True)
        merged = identity.merge_profiles(user or ProfileState(), anonymous)
        await store.save_profile(session, app_id=app_id, user_key=link.user_key, state=merged)
        await store.move_history(session, app_id=app_id, source=source, target=link.user_key)
        exits = await leave_all(session, app_id=app_id, user_key=source, at=now, cause=link.cause)
        await store.delete_profile(session, app_id=app_id, user_key=source)
        MERGES.inc()
        return exits

    async def _update_users(
        self,
        session: AsyncSession,
        app_id: str,
        routed: AppBatch,
        rules: AppRules,
        now: datetime,
        merged: set[str],
    ) -> list[SegmentChanged]:
        """Fold each profile's records not seen before (``routed.fresh`` seen keys,
        consumed) and re-evaluate the segments of those whose profile changed
        (``merged``: it changed before the fold) — set-wise: the profiles, counters,
        recent events and memberships of all the batch's users are read and written in
        a few statements, each user's fold and evaluation done in memory. Call with
        every profile of the batch locked."""
        skipped = await linked_meanwhile(session, app_id, routed.by_user)
        keys = [k for k in sorted(routed.by_user) if k not in skipped]
        stored = await store.load_profiles(session, app_id=app_id, user_keys=keys)
        applied: dict[str, list[Event]] = {}
        changed: dict[str, ProfileState] = {}
        causes: dict[str, tuple[str, datetime]] = {}
        for user_key in keys:
            before = stored.get(user_key)
            state, activity, cause = fold_records(
                before or ProfileState(), routed.by_user[user_key], routed.fresh
            )
            if activity:
                applied[user_key] = activity
            if cause is not None and (state != before or user_key in merged):
                changed[user_key] = state
                causes[user_key] = cause
        # The aliases are stored with the fold's writes: no read before them needs them
        # (``linked_meanwhile`` asks only about devices this batch did not link).
        await store.save_users(
            session,
            app_id=app_id,
            aliases=routed.routing.aliases,
            events=applied,
            states=changed,
            now=now,
        )
        current, views = await store.views_of(
            session, app_id=app_id, states=changed, counters=rules.counters, recent=rules.recent
        )
        decided: list[tuple[str, logic.Change, datetime, str | None]] = []
        for user_key in sorted(changed):
            cause_id, cause_time = causes[user_key]
            decided.extend(
                (user_key, change, cause_time, cause_id)
                for change in logic.membership_changes(
                    app_id=app_id,
                    user_key=user_key,
                    segments=rules.segments,
                    current=current[user_key],
                    state=views[user_key],
                    now=now,
                    cause=cause_id,
                    context=rules.context,
                    order=rules.order,
                )
            )
        return await record_many(session, app_id=app_id, changes=decided, at=now)


def fold_records(
    state: ProfileState, records: list[Record], fresh: set[str]
) -> tuple[ProfileState, list[Event], tuple[str, datetime] | None]:
    """Fold the records whose seen key is in ``fresh`` into ``state`` (consuming the
    keys: a duplicate inside the batch counts once). Returns the new state, the
    activity events to count, and the last folded record's cause id and time (None
    when nothing was folded). No I/O."""
    cause = None
    applied: list[Event] = []
    for record in records:
        value = record.value
        if not isinstance(value, Event | UserAttributed) or seen_key(value) not in fresh:
            continue
        fresh.discard(seen_key(value))
        if isinstance(value, Event):
            if logic.is_activity(value):
                applied.append(value)
            state = logic.apply_event(state, value)
            cause = (value.event_id, record.time)
        else:
            state = logic.apply_attribution(state, value)
            cause = (value.attribution_id, record.time)
    return state, applied, cause


async def linked_meanwhile(
    session: AsyncSession, app_id: str, by_user: dict[str, list[Record]]
) -> set[str]:
    """The keys of ``by_user`` whose records are only attributions of an anonymous
    device that another replica linked to a user after this batch was routed (the
    attributions topic is partitioned apart from the device's events). Such a statement
    is redundant: the attribution service restates a device's installs under the user
    who logged in on it. Dropping it keeps the merged anonymous profile from coming back.
    Call with the profiles locked."""
    prefix = identity.anonymous_key("")
    candidates = {
        user_key.removeprefix(prefix): user_key
        for user_key, records in by_user.items()
        if identity.is_anonymous(user_key)
        # the device's own events: this replica alone links it
        and all(isinstance(r.value, UserAttributed) for r in records)
    }
    stored = await store.aliases(session, app_id=app_id, device_ids=candidates)
    return {
        candidates[device]
        for device, alias in stored.items()
        if not identity.is_anonymous(alias.user_key)
    }


async def leave_all(
    session: AsyncSession, *, app_id: str, user_key: str, at: datetime, cause: str
) -> list[SegmentChanged]:
    """Take ``user_key`` out of every segment it is in, announcing each exit (ids from
    ``cause``, so a retried batch announces the same ones)."""
    current = await store.memberships(session, app_id=app_id, user_key=user_key)
    changes = [
        logic.Change(s, "exited", logic.change_id(app_id, user_key, s, "exited", cause))
        for s in sorted(current)
    ]
    return await record_changes(
        session, app_id=app_id, user_key=user_key, changes=changes, at=at, ts=at, cause=cause
    )


async def erase(
    session: AsyncSession, erasure: ConfigChanged, now: datetime
) -> list[SegmentChanged]:
    """Carry out an erasure once (``claim_erasure``): the user's memberships (exits
    announced, caused by the erasure id), the aliases of its devices, daily counters,
    recent events and profile. The user's profile lock is held by the caller."""
    app_id, user_key = erasure.app_id, erasure.entity_id
    if not await store.claim_erasure(session, app_id=app_id, erasure_id=erasure.change_id, at=now):
        return []
    exits = await leave_all(
        session, app_id=app_id, user_key=user_key, at=now, cause=erasure.change_id
    )
    await store.delete_aliases(session, app_id=app_id, user_key=user_key)
    await store.delete_profile(session, app_id=app_id, user_key=user_key)
    ERASURES.inc()
    return exits


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
    return await record_many(
        session, app_id=app_id, changes=[(user_key, c, ts, cause) for c in changes], at=at
    )


async def record_many(
    session: AsyncSession,
    *,
    app_id: str,
    changes: list[tuple[str, logic.Change, datetime, str | None]],
    at: datetime,
) -> list[SegmentChanged]:
    """``record_changes`` for several users at once: ``(user_key, change, ts, cause)``
    each; the memberships written in at most two statements. Returns the records in the
    order of ``changes``."""
    await store.write_memberships(
        session,
        app_id=app_id,
        entered=[(u, c.segment_id) for u, c, _, _ in changes if c.change == "entered"],
        left=[(u, c.segment_id) for u, c, _, _ in changes if c.change != "entered"],
        at=at,
    )
    return [
        SegmentChanged(
            app_id=app_id,
            change_id=change.change_id,
            user_key=user_key,
            segment_id=change.segment_id,
            change=change.change,
            ts=ts,
            cause_event_id=cause,
        )
        for user_key, change, ts, cause in changes
    ]


async def load_rules(
    session: AsyncSession,
    app_id: str,
    now: datetime,
    *,
    rfm_cache: RfmCache | None = None,
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
    rfm = None
    if any(isinstance(n, RfmCond) for rule in parsed.values() for n in walk(rule)):
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
        context=Context(rfm=rfm),
        counters=any(reads_counters(rule) for rule in parsed.values()),
        recent=any(reads_recent(rule) for rule in parsed.values()),
    )
