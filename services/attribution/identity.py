"""Statements about recorded installs after the fact: a status change (verification,
expiry), and a device's installs joining the user who logged in on it.

Each returns the ``UserAttributed`` records to publish (same attribution id: the newest
statement of an attribution replaces the older one downstream). Nothing commits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.postgres import lock
from libs.schemas import UserAttributed
from services.attribution import outcomes, store


async def restate(
    session: AsyncSession,
    row: store.Install,
    status: str,
    at: datetime,
    user_id: str | None = None,
) -> UserAttributed:
    """Set a recorded install's status and say so, with everything the first statement
    said (tracker hierarchy, click time, fraud reasons)."""
    row.status = status
    tracker = (
        await store.tracker(session, app_id=row.app_id, token=row.tracker_token)
        if row.tracker_token
        else None
    )
    click = (
        await store.find_click(session, app_id=row.app_id, click_id=row.click_id)
        if row.click_id
        else None
    )
    return UserAttributed(
        app_id=row.app_id,
        attribution_id=row.attribution_id,
        user_key=row.user_key,
        device_id=row.device_id,
        user_id=user_id,
        install_event_id=row.install_event_id,
        install_ts=row.install_ts,
        attributed_at=at,
        method=row.method,
        kind=row.kind,
        status=status,
        tracker_token=row.tracker_token,
        click_id=row.click_id,
        click_ts=click.ts if click is not None else None,
        network=tracker.network if tracker else None,
        campaign=tracker.campaign if tracker else None,
        adgroup=tracker.adgroup if tracker else None,
        creative=tracker.creative if tracker else None,
        channel=tracker.channel if tracker else None,
        fraud_reasons=list(row.fraud_reasons or []) if status == "rejected" else [],
    )


async def lock_user(session: AsyncSession, *, app_id: str, user_id: str) -> None:
    """Hold the user's installs until the transaction ends. Two devices of one user may be
    joined by two replicas at once (events are keyed by device); a caller joining several
    users locks them all first, in sorted order. Re-entrant within a transaction."""
    await lock(session, app_id, "attribution-user", user_id)


def _record(row: store.Install) -> outcomes.InstallRecord:
    return outcomes.InstallRecord(
        install_event_id=row.install_event_id,
        install_ts=row.install_ts,
        kind=row.kind,
        tracker_token=row.tracker_token,
        adid=row.adid,
    )


async def join_user(
    session: AsyncSession,
    *,
    app_id: str,
    device_id: str,
    user_id: str,
    linked_at: datetime,
    at: datetime,
) -> list[UserAttributed]:
    """The device belongs to ``user_id`` (an ``$identify``, or a verification naming the
    device): remember the link for installs still to come, move the device's anonymous
    installs to the user, and re-classify the user's installs with ``outcomes.reclassify``
    — a second device of an attributed user becomes ``new_device`` under the user's
    original tracker, never a second new user. Rejected installs are moved but neither
    count as the original nor are re-classified. Installs the device reported under
    another user stay with that user (a shared phone is never merged). Idempotent: a
    replay finds nothing anonymous and nothing to re-classify, and returns [].

    ``linked_at`` is when the user logged in (event time: the newest link of a device
    wins); ``at`` the triggering record's Kafka time, stamped on the statements.
    """
    await store.link_device(
        session, app_id=app_id, device_id=device_id, user_id=user_id, at=linked_at
    )
    anonymous = await store.anonymous_installs(session, app_id=app_id, device_id=device_id)
    if not anonymous:
        return []
    await lock_user(session, app_id=app_id, user_id=user_id)
    changed = {row.install_event_id: row for row in anonymous}
    for row in anonymous:
        row.user_key = user_id
    await session.flush()
    installs = await store.user_installs(session, app_id=app_id, user_key=user_id)
    counted = [row for row in installs if row.status != "rejected"]
    if counted:
        original = _record(counted[0])
        for row in counted[1:]:
            outcome = outcomes.reclassify(_record(row), original)
            if (outcome.kind, outcome.tracker_token) != (row.kind, row.tracker_token):
                row.kind, row.tracker_token = outcome.kind, outcome.tracker_token
                changed[row.install_event_id] = row
    await session.flush()
    return [
        await restate(session, row, row.status, at, user_id)
        for row in sorted(changed.values(), key=lambda r: (r.install_ts, r.install_event_id))
    ]
