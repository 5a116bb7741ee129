"""Statements about recorded installs after the fact: a status change (verification,
expiry), and a device's installs joining the user who logged in on it.

Each returns the ``UserAttributed`` records to publish (same attribution id: the newest
statement of an attribution replaces the older one downstream). Nothing commits.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.postgres import lock
from libs.schemas import UserAttributed
from services.attribution import logic, outcomes, store


async def restate(
    session: AsyncSession,
    row: store.Install,
    status: str,
    at: datetime,
    user_id: str | None = None,
) -> UserAttributed:
    """Set a recorded install's status and say so, with everything the first statement
    said (tracker hierarchy, click time, fraud reasons). The statement is stamped
    ``max(at, the row's last stamp)``: readers keep the latest statement of an
    attribution by its stamp, and the record that triggers a restatement can be older
    than the one that made the current statement (a verification sent before the
    install was uploaded)."""
    row.status = status
    row.attributed_at = max(at, row.attributed_at)
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
        attributed_at=row.attributed_at,
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


def user_lock(app_id: str, user_id: str) -> tuple[str, str, str]:
    """The advisory-lock key holding the user's installs (``lock_user``)."""
    return (app_id, "attribution-user", user_id)


async def lock_user(session: AsyncSession, *, app_id: str, user_id: str) -> None:
    """Hold the user's installs until the transaction ends. Two devices of one user may be
    joined by two replicas at once (events are keyed by device); a caller joining several
    users locks them all first, in sorted order. Re-entrant within a transaction."""
    await lock(session, *user_lock(app_id, user_id))


async def _record(session: AsyncSession, row: store.Install) -> outcomes.InstallRecord:
    click = (
        await store.find_click(session, app_id=row.app_id, click_id=row.click_id)
        if row.click_id
        else None
    )
    return outcomes.InstallRecord(
        install_event_id=row.install_event_id,
        install_ts=row.install_ts,
        kind=row.kind,
        tracker_token=row.tracker_token,
        adid=row.adid,
        method=row.method,
        hardware=row.hardware,
        # A click row gone from the index (expired) is known by its install's time.
        click=(
            logic.ClickFacts(
                click_id=row.click_id,
                tracker_token=click.tracker_token if click else row.tracker_token,
                ts=click.ts if click else row.install_ts,
            )
            if row.click_id and (click or row.tracker_token)
            else None
        ),
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
    records = [await _record(session, row) for row in counted]
    for i, row in enumerate(counted[1:], start=1):
        outcome = outcomes.reclassify(records[i], records[:i])
        if (outcome.kind, outcome.tracker_token) != (row.kind, row.tracker_token):
            row.kind, row.tracker_token = outcome.kind, outcome.tracker_token
            records[i] = replace(records[i], kind=outcome.kind, tracker_token=outcome.tracker_token)
            changed[row.install_event_id] = row
    await session.flush()
    return [
        await restate(session, row, row.status, at, user_id)
        for row in sorted(changed.values(), key=lambda r: (r.install_ts, r.install_event_id))
    ]
