"""Admin writes the configuration catalog (``libs.runtime.tables``) and reads profiles,
device aliases, memberships and (through the segment SQL compiler) counters for the
per-user view and segment previews and exports. Every query is scoped by ``app_id``;
repo functions never commit (the request's ``SessionDep`` does)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.rules.language import CHANNELS, Node, ReachableCond
from libs.rules.sql import compile_rule, context_for, without_jit
from libs.runtime.tables import (
    DeviceAlias,
    Journey,
    JourneyVersion,
    Membership,
    Profile,
    Segment,
    Template,
    Tracker,
)
from libs.runtime.tenancy import SdkSecret
from libs.schemas.base import ANONYMOUS_PREFIX

TOKEN_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
TOKEN_LENGTH = 10


def new_token() -> str:
    """10 characters from a 57-letter alphabet: 58 bits, short enough for a bio link."""
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


async def create_tracker(session: AsyncSession, *, app_id: str, values: dict[str, Any]) -> Tracker:
    now = datetime.now(UTC)
    tracker = Tracker(
        token=new_token(), app_id=app_id, status="active", created_at=now, updated_at=now, **values
    )
    session.add(tracker)
    await session.flush()
    return tracker


async def update_tracker(
    session: AsyncSession, *, tracker: Tracker, values: dict[str, Any]
) -> None:
    """Apply ``values`` to a tracker already loaded for its app (scoped by the caller)."""
    for name, value in values.items():
        setattr(tracker, name, value)
    tracker.updated_at = datetime.now(UTC)
    await session.flush()


async def list_trackers(session: AsyncSession, *, app_id: str) -> list[Tracker]:
    rows = await session.scalars(
        select(Tracker).where(Tracker.app_id == app_id).order_by(Tracker.created_at)
    )
    return list(rows)


async def get_tracker(session: AsyncSession, *, app_id: str, token: str) -> Tracker | None:
    return await session.scalar(
        select(Tracker).where(Tracker.app_id == app_id, Tracker.token == token)
    )


async def create_segment(
    session: AsyncSession, *, app_id: str, name: str, rule: dict[str, Any]
) -> Segment:
    now = datetime.now(UTC)
    segment = Segment(
        id=new_id("seg"),
        app_id=app_id,
        name=name,
        rule=rule,
        status="active",
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    await session.flush()
    return segment


async def get_segment(session: AsyncSession, *, app_id: str, segment_id: str) -> Segment | None:
    return await session.scalar(
        select(Segment).where(Segment.app_id == app_id, Segment.id == segment_id)
    )


async def list_segments(session: AsyncSession, *, app_id: str) -> list[Segment]:
    rows = await session.scalars(
        select(Segment).where(Segment.app_id == app_id).order_by(Segment.created_at)
    )
    return list(rows)


async def update_segment(
    session: AsyncSession, *, segment: Segment, values: dict[str, Any]
) -> None:
    """Apply ``values`` to a segment already loaded for its app (scoped by the caller)."""
    for name, value in values.items():
        setattr(segment, name, value)
    segment.updated_at = datetime.now(UTC)
    await session.flush()


async def active_rules(session: AsyncSession, *, app_id: str) -> dict[str, Any]:
    """Segment id → stored rule of the app's active segments (what a rule may reference:
    archived segments have no members)."""
    rows = await session.execute(
        select(Segment.id, Segment.rule).where(Segment.app_id == app_id, Segment.status == "active")
    )
    return {segment_id: rule for segment_id, rule in rows}


async def referrer_candidates(
    session: AsyncSession, *, app_id: str
) -> tuple[list[tuple[str, str, Any]], list[tuple[str, str, Any, Any]]]:
    """The app's active segments (id, name, rule) and its journeys that are not archived
    (id, name, trigger, definition): whatever may reference a segment."""
    segments = await session.execute(
        select(Segment.id, Segment.name, Segment.rule).where(
            Segment.app_id == app_id, Segment.status == "active"
        )
    )
    journeys = await session.execute(
        select(Journey.id, Journey.name, Journey.trigger, Journey.definition).where(
            Journey.app_id == app_id, Journey.status != "archived"
        )
    )
    return (
        [(i, n, r) for i, n, r in segments],
        [(i, n, t, d) for i, n, t, d in journeys],
    )


async def preview(
    session: AsyncSession, *, app_id: str, node: Node, now: datetime, sample: int
) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
    """Evaluate ``node`` now over the app's profiles (``libs.rules.sql``, the compiler
    the segmenter's scheduler runs): how many match, how many of those each channel
    reaches (the ``reachable`` condition's SQL), and up to ``sample`` of them, most
    recently seen first. One scan evaluates the rule once per profile: the counts are
    window aggregates over all the matching rows, computed before the sample's limit.
    Reads only."""
    await without_jit(session)
    context = await context_for(session, app_id=app_id, node=node, now=now)
    rule = compile_rule(node, app_id=app_id, now=now, context=context)
    reach = [compile_rule(ReachableCond(ch), app_id=app_id, now=now) for ch in CHANNELS]
    if not sample:
        counts = (
            await session.execute(
                select(func.count(), *(func.count().filter(r) for r in reach)).where(
                    Profile.app_id == app_id, rule
                )
            )
        ).one()
        return counts[0], dict(zip(CHANNELS, counts[1:], strict=True)), []
    totals = [func.count().over(), *(func.count().filter(r).over() for r in reach)]
    columns = (
        Profile.user_key,
        Profile.user_id,
        Profile.first_seen,
        Profile.last_seen,
        Profile.platform,
        Profile.attribution["tracker_token"].astext.label("tracker_token"),
        Profile.sessions,
        Profile.purchases,
        Profile.revenue,
    )
    rows = (
        await session.execute(
            select(*columns, *totals)
            .where(Profile.app_id == app_id, rule)
            .order_by(Profile.last_seen.desc().nulls_last(), Profile.user_key)
            .limit(sample)
        )
    ).all()
    if not rows:
        return 0, dict.fromkeys(CHANNELS, 0), []
    keys = [c.key for c in columns]
    matched, *by_channel = tuple(rows[0])[len(keys) :]
    users = [dict(zip(keys, row[: len(keys)], strict=True)) for row in rows]
    return matched, dict(zip(CHANNELS, by_channel, strict=True)), users


async def tracker_goal(
    session: AsyncSession, *, app_id: str, node: Node, now: datetime
) -> tuple[int, list[tuple[str, int, int]]]:
    """The users matching ``node`` now, and per install tracker (tracker token,
    attributed users, of them matching). A profile is one user, so each user counts
    once, under the tracker of the install its profile keeps (the first); attributions
    rejected as fraud credit no tracker. One scan evaluates the rule once per profile:
    profiles crediting no tracker form the group NULL, which counts toward the total
    only. Reads only."""
    await without_jit(session)
    context = await context_for(session, app_id=app_id, node=node, now=now)
    rule = compile_rule(node, app_id=app_id, now=now, context=context)
    token = Profile.attribution["tracker_token"].astext
    status = func.coalesce(Profile.attribution["status"].astext, "")
    tracker = case((status != "rejected", token), else_=None)
    rows = (
        await session.execute(
            select(tracker, func.count(), func.count().filter(rule))
            .where(Profile.app_id == app_id)
            .group_by(tracker)
        )
    ).all()
    total = sum(m for _, _, m in rows)
    return total, [(t, a, m) for t, a, m in rows if t is not None]


async def members_page(
    session: AsyncSession, *, app_id: str, segment_id: str, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` members of the segment with user keys after ``after`` (keyset
    pagination in user key order; the primary key serves it), with a few profile
    fields. Reads only."""
    stmt = (
        select(
            Membership.user_key,
            Profile.user_id,
            Membership.entered_at,
            Profile.first_seen,
            Profile.last_seen,
            Profile.platform,
            Profile.attribution["tracker_token"].astext.label("tracker_token"),
        )
        .select_from(Membership)
        .outerjoin(
            Profile,
            and_(Profile.app_id == Membership.app_id, Profile.user_key == Membership.user_key),
        )
        .where(Membership.app_id == app_id, Membership.segment_id == segment_id)
        .order_by(Membership.user_key)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Membership.user_key > after)
    return [dict(row._mapping) for row in await session.execute(stmt)]


async def user_segments(
    session: AsyncSession, *, app_id: str, user_key: str
) -> list[tuple[str, str, datetime]]:
    """(segment id, name, entered at) of the user's memberships of active segments, in
    the order entered."""
    rows = await session.execute(
        select(Membership.segment_id, Segment.name, Membership.entered_at)
        .join(
            Segment,
            and_(Segment.app_id == Membership.app_id, Segment.id == Membership.segment_id),
        )
        .where(
            Membership.app_id == app_id,
            Membership.user_key == user_key,
            Segment.status == "active",
        )
        .order_by(Membership.entered_at, Membership.segment_id)
    )
    return [(s, n, e) for s, n, e in rows]


async def create_journey(
    session: AsyncSession,
    *,
    app_id: str,
    name: str,
    trigger: dict[str, Any],
    definition: dict[str, Any],
    status: str = "active",
    kind: str = "journey",
    prefix: str = "jrn",
) -> Journey:
    """Insert a journey and its version 1."""
    now = datetime.now(UTC)
    journey = Journey(
        id=new_id(prefix),
        app_id=app_id,
        name=name,
        trigger=trigger,
        definition=definition,
        status=status,
        version=1,
        kind=kind,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    session.add(
        JourneyVersion(
            app_id=app_id,
            journey_id=journey.id,
            version=1,
            trigger=trigger,
            definition=definition,
            created_at=now,
        )
    )
    await session.flush()
    return journey


async def update_journey(
    session: AsyncSession,
    *,
    journey: Journey,
    name: str | None = None,
    trigger: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
) -> bool:
    """Change a journey; a new trigger or definition becomes a new version (runs already
    under way stay on theirs). Returns whether a version was added."""
    now = datetime.now(UTC)
    if name is not None:
        journey.name = name
    new_trigger = trigger if trigger is not None else journey.trigger
    new_definition = definition if definition is not None else journey.definition
    versioned = new_trigger != journey.trigger or new_definition != journey.definition
    if versioned:
        journey.version += 1
        journey.trigger, journey.definition = new_trigger, new_definition
        session.add(
            JourneyVersion(
                app_id=journey.app_id,
                journey_id=journey.id,
                version=journey.version,
                trigger=new_trigger,
                definition=new_definition,
                created_at=now,
            )
        )
    journey.updated_at = now
    await session.flush()
    return versioned


async def set_journey_status(session: AsyncSession, *, journey: Journey, status: str) -> None:
    journey.status = status
    journey.updated_at = datetime.now(UTC)
    await session.flush()


async def get_journey(
    session: AsyncSession, *, app_id: str, journey_id: str, kind: str | None = None
) -> Journey | None:
    stmt = select(Journey).where(Journey.app_id == app_id, Journey.id == journey_id)
    if kind is not None:
        stmt = stmt.where(Journey.kind == kind)
    return await session.scalar(stmt)


async def list_journeys(
    session: AsyncSession, *, app_id: str, kind: str, status: str | None = None
) -> list[Journey]:
    stmt = select(Journey).where(Journey.app_id == app_id, Journey.kind == kind)
    if status is not None:
        stmt = stmt.where(Journey.status == status)
    return list(await session.scalars(stmt.order_by(Journey.created_at.desc(), Journey.id)))


async def missing_references(
    session: AsyncSession, *, app_id: str, segments: set[str], templates: set[str]
) -> tuple[set[str], set[str]]:
    """The referenced segments and templates that do not exist (or are archived)."""
    found_segments: set[str] = set()
    found_templates: set[str] = set()
    if segments:
        found_segments = set(
            await session.scalars(
                select(Segment.id).where(
                    Segment.app_id == app_id, Segment.id.in_(segments), Segment.status == "active"
                )
            )
        )
    if templates:
        found_templates = set(
            await session.scalars(
                select(Template.id).where(
                    Template.app_id == app_id,
                    Template.id.in_(templates),
                    Template.status == "active",
                )
            )
        )
    return segments - found_segments, templates - found_templates


async def get_profile(session: AsyncSession, *, app_id: str, user_key: str) -> Profile | None:
    return await session.scalar(
        select(Profile).where(Profile.app_id == app_id, Profile.user_key == user_key)
    )


async def user_key_of_device(session: AsyncSession, *, app_id: str, device_id: str) -> str:
    """The profile key a device's records fold into: its alias (written by the
    segmenter), else the device's anonymous key."""
    key = await session.scalar(
        select(DeviceAlias.user_key).where(
            DeviceAlias.app_id == app_id, DeviceAlias.device_id == device_id
        )
    )
    return key if key is not None else ANONYMOUS_PREFIX + device_id


async def devices_of(session: AsyncSession, *, app_id: str, user_key: str) -> list[str]:
    """The devices whose alias names ``user_key``, sorted."""
    rows = await session.scalars(
        select(DeviceAlias.device_id)
        .where(DeviceAlias.app_id == app_id, DeviceAlias.user_key == user_key)
        .order_by(DeviceAlias.device_id)
    )
    return list(rows)


async def segment_ids_of(session: AsyncSession, *, app_id: str, user_key: str) -> list[str]:
    """The ids of the active segments the user is a member of (segmenter writes the
    memberships; the scheduler deletes those of archived segments at its next tick)."""
    return sorted(s for s, _, _ in await user_segments(session, app_id=app_id, user_key=user_key))


SECRET_BYTES = 32


async def sdk_secrets(session: AsyncSession, *, app_id: str) -> list[SdkSecret]:
    """The app's SDK secrets, newest first, revoked ones included."""
    rows = await session.scalars(
        select(SdkSecret).where(SdkSecret.app_id == app_id).order_by(SdkSecret.created_at.desc())
    )
    return list(rows)


async def create_sdk_secret(session: AsyncSession, *, app_id: str) -> tuple[SdkSecret, str]:
    """A new active secret (256 random bits, URL-safe text) and its value — the only time
    the value leaves the database. Does not commit."""
    value = secrets.token_urlsafe(SECRET_BYTES)
    row = SdkSecret(
        id=new_id("sec"), app_id=app_id, secret=value, created_at=datetime.now(UTC), revoked_at=None
    )
    session.add(row)
    await session.flush()
    return row, value


async def revoke_sdk_secret(session: AsyncSession, *, secret: SdkSecret) -> None:
    secret.revoked_at = datetime.now(UTC)
    await session.flush()
